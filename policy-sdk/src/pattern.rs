//! `server:tool` grant patterns, as the built-in allowlist reads them; use the same matcher in your
//! own settings (for example "which tools this rule applies to") so operators write one syntax.

/// True when `pattern` (`server:tool`, `*` globs on either side) covers `server`'s `tool`.
/// A pattern without `:` covers nothing.
pub fn grant_matches(pattern: &str, server: &str, tool: &str) -> bool {
    match pattern.split_once(':') {
        Some((s, t)) => {
            glob(s.as_bytes(), server.as_bytes()) && glob(t.as_bytes(), tool.as_bytes())
        }
        None => false,
    }
}

/// True when some pattern in `patterns` covers `server`'s `tool`.
pub fn any_matches<S: AsRef<str>>(patterns: &[S], server: &str, tool: &str) -> bool {
    patterns
        .iter()
        .any(|p| grant_matches(p.as_ref(), server, tool))
}

/// Checks a pattern's shape: `server:tool`, each side non-empty, of `[A-Za-z0-9_.-]` and `*`.
pub fn validate(pattern: &str) -> Result<(), String> {
    let ok_side = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'*' | b'/'))
    };
    match pattern.split_once(':') {
        Some((s, t)) if ok_side(s) && ok_side(t) => Ok(()),
        _ => Err(format!(
            "invalid pattern {pattern:?}: expected server:tool, with * globs"
        )),
    }
}

/// `*` matches any run of bytes (including none); every other byte matches itself. Backtracks only
/// to the last star, so the time is O(pattern × text) at worst and hostile patterns cannot blow up.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_shapes() {
        for ok in ["db:*", "*:search", "ci:deploy", "*:*", "a.b:c-d_e"] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
        for bad in ["", "db", "db:", ":x", "db:que ry", "db:q;"] {
            assert!(validate(bad).is_err(), "{bad}");
        }
    }
}

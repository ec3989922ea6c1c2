//! Where a byte offset of a JSON text is, as a path (`content[0].text`), for the reason of a
//! finding. Only run once something was found, so it walks the text again from the start.

use crate::text::next_char;

enum Frame {
    /// In an object: the current member's key (rendered), and whether a key is expected next.
    Object {
        key: String,
        want_key: bool,
    },
    Array {
        index: usize,
    },
}

fn path(stack: &[Frame]) -> String {
    let mut out = String::new();
    for frame in stack {
        match frame {
            Frame::Object { key, want_key } if !*want_key => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Frame::Object { .. } => {}
            Frame::Array { index } => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

/// A key as it may appear in a reason: an identifier of at most 32 characters in which the guard
/// finds nothing (so a reason never carries a smuggled instruction); else `<key>`.
fn render_key(raw: &[u8], checks: crate::Checks) -> String {
    let mut key = String::new();
    let mut i = 0;
    while i < raw.len() {
        let (cp, next) = next_char(raw, i, true);
        key.push(char::from_u32(cp).unwrap_or(char::REPLACEMENT_CHARACTER));
        i = next;
    }
    let plain = !key.is_empty()
        && key.len() <= 32
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'$'))
        && crate::scan::scan_text(&key, checks).is_none();
    if plain { key } else { "<key>".into() }
}

/// The end of the string whose opening quote is at `i` (the index of its closing quote, or the
/// text's length). Many bytes at a time where neither a quote nor a backslash is among them: a
/// finding deep in a long string (a 64 KiB page) is located by walking the whole string.
fn string_end(buf: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < buf.len() {
        i = skip_plain(buf, i);
        match buf.get(i) {
            Some(b'\\') => i += 2,
            Some(b'"') => return i,
            Some(_) => i += 1,
            None => break,
        }
    }
    buf.len()
}

/// From `i`, past whole blocks holding neither `"` nor `\\` (SWAR: eight bytes at a time).
#[cfg(not(target_arch = "wasm32"))]
fn skip_plain(buf: &[u8], mut i: usize) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has = |x: u64, b: u8| {
        let t = x ^ (b as u64 * LO);
        t.wrapping_sub(LO) & !t & HIGH != 0
    };
    while let Some(chunk) = buf.get(i..i + 8) {
        let x = u64::from_le_bytes(chunk.try_into().unwrap());
        if has(x, b'"') || has(x, b'\\') {
            break;
        }
        i += 8;
    }
    i
}

/// The same with WebAssembly SIMD, thirty-two bytes a step (two compares per sixteen).
#[cfg(target_arch = "wasm32")]
#[target_feature(enable = "simd128")]
fn skip_plain(buf: &[u8], mut i: usize) -> usize {
    use core::arch::wasm32::*;
    let (quote, backslash) = (u8x16_splat(b'"'), u8x16_splat(b'\\'));
    let special = |v: v128| v128_any_true(v128_or(u8x16_eq(v, quote), u8x16_eq(v, backslash)));
    let load = |c: &[u8]| {
        u64x2(
            u64::from_le_bytes(c[..8].try_into().unwrap()),
            u64::from_le_bytes(c[8..16].try_into().unwrap()),
        )
    };
    while let Some(chunk) = buf.get(i..i + 32) {
        if special(load(&chunk[..16])) || special(load(&chunk[16..])) {
            break;
        }
        i += 32;
    }
    while let Some(chunk) = buf.get(i..i + 16) {
        if special(load(chunk)) {
            break;
        }
        i += 16;
    }
    i
}

/// The path of the value (or key) holding byte `at` of the JSON text `buf`: `content[0].text`,
/// `a key of structuredContent.items[2]`; `None` for the top-level value itself.
pub(crate) fn locate(buf: &[u8], at: usize, checks: crate::Checks) -> Option<String> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < buf.len() && i <= at {
        match buf[i] {
            b'{' => {
                stack.push(Frame::Object {
                    key: String::new(),
                    want_key: true,
                });
                i += 1;
            }
            b'[' => {
                stack.push(Frame::Array { index: 0 });
                i += 1;
            }
            b'}' | b']' => {
                stack.pop();
                i += 1;
            }
            b',' => {
                match stack.last_mut() {
                    Some(Frame::Object { want_key, .. }) => *want_key = true,
                    Some(Frame::Array { index }) => *index += 1,
                    None => {}
                }
                i += 1;
            }
            b':' => {
                if let Some(Frame::Object { want_key, .. }) = stack.last_mut() {
                    *want_key = false;
                }
                i += 1;
            }
            b'"' => {
                let end = string_end(buf, i);
                let is_key = matches!(stack.last(), Some(Frame::Object { want_key: true, .. }));
                if at <= end {
                    let p = path(&stack);
                    return Some(match (is_key, p.is_empty()) {
                        (true, true) => "a key of the top-level object".into(),
                        (true, false) => format!("a key of {p}"),
                        (false, true) => return None,
                        (false, false) => p,
                    });
                }
                if is_key && let Some(Frame::Object { key, .. }) = stack.last_mut() {
                    *key = render_key(&buf[i + 1..end], checks);
                }
                i = end + 1;
            }
            _ => i += 1,
        }
    }
    let p = path(&stack);
    (!p.is_empty()).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Checks;

    fn at(json: &str, needle: &str) -> Option<String> {
        locate(
            json.as_bytes(),
            json.find(needle).unwrap(),
            Checks::default(),
        )
    }

    #[test]
    fn paths() {
        let j = r#"{"content":[{"type":"text","text":"a"},{"type":"text","text":"b \"q\" X"}],"structuredContent":{"items":[{"body":"Y"}],"K":1}}"#;
        assert_eq!(at(j, "X").as_deref(), Some("content[1].text"));
        assert_eq!(
            at(j, "Y").as_deref(),
            Some("structuredContent.items[0].body")
        );
        assert_eq!(at(j, "K").as_deref(), Some("a key of structuredContent"));
        assert_eq!(at(j, "1}").as_deref(), Some("structuredContent.K"));
        let k = r#"{"a":{"ignore_all_previous_instructions":"Z"}}"#;
        assert_eq!(at(k, "Z").as_deref(), Some("a.<key>"));
        assert_eq!(at(r#""top X""#, "X"), None);
        // Escaped quotes and backslashes anywhere relative to the eight-byte steps.
        for k in 0..72 {
            let pad = "a".repeat(k);
            let j = format!(r#"{{"a":"{pad}\"{pad}\\","b":["{pad}\\\"","X"]}}"#);
            assert_eq!(at(&j, "X").as_deref(), Some("b[1]"), "{j}");
        }
    }
}

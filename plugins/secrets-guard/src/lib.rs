//! secrets-guard: denies a `tools/call` whose arguments carry a credential (AWS access keys,
//! private-key blocks, GitHub, Slack and OpenAI-style tokens, JWTs). The reason names the kind of
//! secret and where it is in the arguments, never the secret itself, so the model can drop it and
//! retry. Settings: `tools`, the `server:tool` patterns it applies to (default: every tool).
use policy_sdk::{Decision, Phases, Policy, Settings, ToolCall, pattern};
use serde::Deserialize;
use serde_json::Value;

/// Operator settings (`secrets-guard.toml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardSettings {
    /// `server:tool` patterns the guard applies to.
    pub tools: Vec<String>,
}

impl Default for GuardSettings {
    fn default() -> Self {
        GuardSettings {
            tools: vec!["*:*".into()],
        }
    }
}

impl Settings for GuardSettings {
    fn validate(&self) -> Result<(), String> {
        self.tools.iter().try_for_each(|p| pattern::validate(p))
    }
}

/// The rule.
pub struct SecretsGuard;

impl Policy for SecretsGuard {
    type Settings = GuardSettings;
    const PHASES: Phases = Phases::CALL;
    const CALL_TRIGGERS: Option<&'static [&'static str]> = Some(TRIGGERS);

    fn call(call: &ToolCall, settings: &GuardSettings) -> Decision {
        if !pattern::any_matches(&settings.tools, &call.server, &call.tool) {
            return Decision::abstain();
        }
        let raw = call.arguments.as_deref().unwrap_or_default();
        // Fast path: without escapes, the JSON text holds every key and string byte for byte, so
        // one pass over it proves it clean. Only a hit (or escapes) pays for parsing, to find where.
        if scan(raw.as_bytes(), true).is_none() {
            return Decision::abstain();
        }
        let args: Value = match call.arguments_as() {
            Some(Ok(v)) => v,
            // Not JSON: scan the text as it is.
            _ => Value::String(raw.to_owned()),
        };
        match find_in_value(&args, &mut String::from("arguments")) {
            Some((kind, path)) => Decision::deny(
                "secret-in-arguments",
                format!("{path} carries {kind}; remove the credential and call again"),
            ),
            None => Decision::abstain(),
        }
    }
}

/// The first secret in `v` (object keys and string values, depth-first), with its JSON path.
fn find_in_value(v: &Value, path: &mut String) -> Option<(&'static str, String)> {
    match v {
        Value::String(s) => find_secret(s).map(|k| (k, path.clone())),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            let found = find_in_value(item, path);
            path.truncate(len);
            found
        }),
        Value::Object(map) => map.iter().find_map(|(k, item)| {
            if let Some(kind) = find_secret(k) {
                return Some((kind, format!("a key of {path}")));
            }
            let len = path.len();
            path.push('.');
            path.push_str(k);
            let found = find_in_value(item, path);
            path.truncate(len);
            found
        }),
        _ => None,
    }
}

/// Every credential this guard finds starts with one of these, byte for byte, in the arguments'
/// JSON text: the shapes' prefixes (the Slack webhook by its host alone, since `\/` may spell its
/// slashes), the first two bytes of the AWS secret's words, the private-key and JWT starts, and
/// `\u`, which may spell any of them. The host does not run the guard on a call whose arguments
/// hold none (see `CALL_TRIGGERS`); the `triggers_cover_*` tests check the list against the scan.
const TRIGGERS: &[&str] = &[
    "AKIA",
    "ASIA",
    "ABIA",
    "ACCA",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "xoxr-",
    "xoxs-",
    "xoxe-",
    "hooks.slack.com",
    "sk-",
    "aw",
    "aW",
    "Aw",
    "AW",
    "a_",
    "a-",
    "A_",
    "A-",
    "-----BEGIN",
    "eyJ",
    "\\u",
];

fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}
fn is_upper_digit(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}
fn is_b64url(b: u8) -> bool {
    is_token(b)
}

/// A token shape: one of `prefixes`, then a run of `charset` whose length is in `min..=max`,
/// not glued to token characters on the left.
struct Shape {
    kind: &'static str,
    prefixes: &'static [&'static str],
    charset: fn(u8) -> bool,
    min: usize,
    max: usize,
}

const SHAPES: &[Shape] = &[
    Shape {
        kind: "an AWS access key id",
        prefixes: &["AKIA", "ASIA", "ABIA", "ACCA"],
        charset: is_upper_digit,
        min: 16,
        max: 16,
    },
    Shape {
        kind: "a GitHub token",
        prefixes: &["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
        charset: is_alnum,
        min: 36,
        max: 255,
    },
    Shape {
        kind: "a GitHub token",
        prefixes: &["github_pat_"],
        charset: is_token,
        min: 22,
        max: 255,
    },
    Shape {
        kind: "a Slack token",
        prefixes: &["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-", "xoxe-"],
        charset: is_token,
        min: 10,
        max: 255,
    },
    Shape {
        kind: "a Slack webhook URL",
        prefixes: &["hooks.slack.com/services/"],
        charset: |b| is_alnum(b) || b == b'/',
        min: 20,
        max: 255,
    },
    Shape {
        kind: "an OpenAI-style API key",
        prefixes: &["sk-"],
        charset: is_token,
        min: 20,
        max: 255,
    },
];

/// True when the two bytes at a position can begin a credential: every shape's prefixes, the AWS
/// secret's words (`a`, then `w`, or `_` / `-` between the words), the private-key block and the
/// JWT start with one of these pairs. Ordinary text ("select", "name", "has") is passed over with
/// this one test per byte instead of a look at every shape.
fn may_start(b: u8, next: u8) -> bool {
    match b {
        b'A' => matches!(next, b'K' | b'S' | b'B' | b'C' | b'W' | b'w' | b'_' | b'-'),
        b'a' => matches!(next, b'W' | b'w' | b'_' | b'-'),
        b'g' => matches!(next, b'h' | b'i'),
        b'x' | b'h' => next == b'o',
        b's' => next == b'k',
        b'-' => next == b'-',
        b'e' => next == b'y',
        _ => false,
    }
}

/// Per byte value: 1 when it can begin a credential (the first bytes [`may_start`] accepts), 2 for
/// `\` (a JSON escape), 0 for every other byte, which the scan passes over with one table load.
const INTEREST: [u8; 256] = {
    let mut table = [0u8; 256];
    let starts = b"Aagxhs-e";
    let mut i = 0;
    while i < starts.len() {
        table[starts[i] as usize] = 1;
        i += 1;
    }
    table[b'\\' as usize] = 2;
    table
};

/// What [`scan`] found.
#[derive(Debug, PartialEq, Eq)]
enum Hit {
    /// A credential of this kind.
    Secret(&'static str),
    /// A backslash, when escapes were asked for.
    Escape,
}

/// The kind of the first credential found in `text` (see [`scan`]).
pub fn find_secret(text: &str) -> Option<&'static str> {
    match scan(text.as_bytes(), false) {
        Some(Hit::Secret(kind)) => Some(kind),
        _ => None,
    }
}

/// One pass over `bytes`: each byte is looked up in [`INTEREST`]; only a possible start has its
/// pair tested ([`may_start`]) and then the shapes that byte can start. With `escapes`, the first
/// backslash ends the scan too (the caller then parses the JSON to read the strings unescaped).
fn scan(bytes: &[u8], escapes: bool) -> Option<Hit> {
    for (at, &b) in bytes.iter().enumerate() {
        match INTEREST[b as usize] {
            0 => continue,
            2 if escapes => return Some(Hit::Escape),
            2 => continue,
            _ => {}
        }
        if !may_start(b, bytes.get(at + 1).copied().unwrap_or(0)) {
            continue;
        }
        let found = match b {
            b'A' | b'a' | b'g' | b'x' | b'h' | b's' => SHAPES
                .iter()
                // Every prefix of a shape starts with the same byte: test only the shapes it can start.
                .filter(|shape| shape.prefixes[0].as_bytes()[0] == b)
                .find(|shape| shape.prefixes.iter().any(|p| shape_at(bytes, at, p, shape)))
                .map(|shape| shape.kind)
                .or_else(|| {
                    matches!(b, b'a' | b'A')
                        .then(|| aws_secret_at(bytes, at))
                        .filter(|&hit| hit)
                        .map(|_| "an AWS secret access key")
                }),
            b'-' if bytes[at..].starts_with(b"-----BEGIN ") && private_key_at(&bytes[at..]) => {
                Some("a private key block")
            }
            b'e' if jwt_at(bytes, at) => Some("a JSON Web Token"),
            _ => None,
        };
        if let Some(kind) = found {
            return Some(Hit::Secret(kind));
        }
    }
    None
}

/// `prefix` at `at`, not glued to a token character on the left, followed by a run of the shape's
/// charset of an allowed length.
fn shape_at(bytes: &[u8], at: usize, prefix: &str, shape: &Shape) -> bool {
    if !bytes[at..].starts_with(prefix.as_bytes()) || (at > 0 && is_token(bytes[at - 1])) {
        return false;
    }
    let run = bytes[at + prefix.len()..]
        .iter()
        .take_while(|&&b| (shape.charset)(b))
        .count();
    (shape.min..=shape.max).contains(&run)
}

/// `-----BEGIN <up to 40 chars> PRIVATE KEY[ BLOCK]-----` starting at `text`.
fn private_key_at(text: &[u8]) -> bool {
    let header = &text[11..];
    let end = header
        .windows(5)
        .position(|w| w == b"-----")
        .unwrap_or(header.len())
        .min(64);
    let line = &header[..end];
    line.ends_with(b"PRIVATE KEY") || line.ends_with(b"PRIVATE KEY BLOCK")
}

/// `aws_secret_access_key` (any case; `_`, `-` or nothing between words) at `at`, then `=` or `:`
/// (quotes and spaces allowed around) and 40 base64 characters.
fn aws_secret_at(bytes: &[u8], at: usize) -> bool {
    const WORDS: &[u8] = b"awssecretaccesskey";
    let mut i = at;
    for &w in WORDS {
        while i < bytes.len() && matches!(bytes[i], b'_' | b'-') && i > at {
            i += 1;
        }
        if i >= bytes.len() || bytes[i].to_ascii_lowercase() != w {
            return false;
        }
        i += 1;
    }
    let skip = |mut i: usize| {
        while i < bytes.len() && matches!(bytes[i], b'"' | b'\'' | b' ' | b'\t') {
            i += 1;
        }
        i
    };
    i = skip(i);
    if i >= bytes.len() || !matches!(bytes[i], b'=' | b':') {
        return false;
    }
    i = skip(i + 1);
    bytes[i..]
        .iter()
        .take_while(|&&b| b.is_ascii_alphanumeric() || b == b'/' || b == b'+')
        .count()
        >= 40
}

/// Three base64url segments separated by dots at `at`, the first two starting with `eyJ` (`{"`).
fn jwt_at(bytes: &[u8], at: usize) -> bool {
    if !bytes[at..].starts_with(b"eyJ") || (at > 0 && is_b64url(bytes[at - 1])) {
        return false;
    }
    let seg = |start: usize| {
        bytes
            .get(start..)
            .map_or(0, |s| s.iter().take_while(|&&b| is_b64url(b)).count())
    };
    let h = seg(at);
    let p_start = at + h + 1;
    if h < 10
        || bytes.get(at + h) != Some(&b'.')
        || !bytes.get(p_start..).is_some_and(|s| s.starts_with(b"eyJ"))
    {
        return false;
    }
    let p = seg(p_start);
    p >= 10 && bytes.get(p_start + p) == Some(&b'.') && seg(p_start + p + 1) >= 16
}

policy_sdk::export_policy!(SecretsGuard);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Fixtures are assembled at run time so that no scanner flags this file as a leak.
    fn fixtures() -> Vec<(&'static str, String)> {
        vec![
            (
                "an AWS access key id",
                format!("AKIA{}", "IOSFODNN7EXAMPLE"),
            ),
            (
                "an AWS secret access key",
                format!(
                    "aws_secret_access_key = {}",
                    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
                ),
            ),
            (
                "a private key block",
                format!("-----BEGIN {} PRIVATE KEY-----\nMIIEow...", "RSA"),
            ),
            (
                "a private key block",
                format!("-----BEGIN {} PRIVATE KEY-----\nb3Blbn...", "OPENSSH"),
            ),
            ("a GitHub token", format!("ghp_{}", "a".repeat(36))),
            (
                "a GitHub token",
                format!("github_pat_{}", "11ABCDEFG0123456789_abcdefghijklmnop"),
            ),
            (
                "a Slack token",
                format!("xoxb-{}", "123456789012-1234567890123-abcdefghij"),
            ),
            (
                "a Slack webhook URL",
                format!(
                    "https://hooks.slack.com/services/{}",
                    "T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
                ),
            ),
            (
                "an OpenAI-style API key",
                format!("sk-{}", "proj-abcdefghijklmnopqrstuvwxyz012345"),
            ),
            (
                "a JSON Web Token",
                format!(
                    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.{}",
                    "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
                ),
            ),
        ]
    }

    fn call(args: Value) -> ToolCall {
        ToolCall::new("db", "query")
            .with_member("alice")
            .with_arguments(args)
    }

    #[test]
    fn catches_each_kind_and_names_it_not_the_secret() {
        let s = GuardSettings::default();
        for (kind, secret) in fixtures() {
            let d = SecretsGuard::call(
                &call(json!({"sql": "select 1", "note": {"text": format!("use {secret} here")}})),
                &s,
            );
            match d {
                Decision::Deny { code, reason } => {
                    assert_eq!(code, "secret-in-arguments");
                    assert!(reason.contains(kind), "{reason} should name {kind}");
                    assert!(reason.contains("arguments.note.text"), "{reason}");
                    assert!(
                        !reason.contains(&secret),
                        "reason leaks the secret: {reason}"
                    );
                }
                other => panic!("{kind} not caught: {other:?}"),
            }
        }
    }

    #[test]
    fn every_credential_start_passes_the_pair_test() {
        let starts = SHAPES
            .iter()
            .flat_map(|s| s.prefixes.iter().copied())
            .chain(["aws", "AWS", "a_ws", "A-WS", "-----BEGIN ", "eyJ"]);
        for start in starts {
            let b = start.as_bytes();
            assert!(may_start(b[0], b[1]), "{start}");
            assert_eq!(INTEREST[b[0] as usize], 1, "{start}");
        }
        // A byte the table passes over can start nothing.
        for b in 0..=255u8 {
            if INTEREST[b as usize] == 0 {
                assert!((0..=255u8).all(|n| !may_start(b, n)), "{}", b as char);
            }
        }
        assert!(!may_start(b's', b'e') && !may_start(b'a', b'm'));
    }

    #[test]
    fn passes_clean_arguments() {
        let s = GuardSettings::default();
        for clean in [
            json!({"sql": "select * from users where id = 1"}),
            json!({"task": "sk-short", "branch": "task-runner-abcdefghijklmnopqrstuvwxyz", "sha": "ghp_short"}),
            json!({"text": "AKIA is a prefix; AKIAlowercase1234567 is not a key", "n": 42, "list": [1, true, null]}),
            json!({"doc": "-----BEGIN PUBLIC KEY-----\nMIIB...", "jwt-ish": "eyJhbGciOi.notatoken"}),
            json!({}),
        ] {
            assert_eq!(
                SecretsGuard::call(&call(clean.clone()), &s),
                Decision::abstain(),
                "{clean}"
            );
        }
    }

    #[test]
    fn finds_secrets_in_keys_arrays_and_non_json() {
        let s = GuardSettings::default();
        let key = format!("ghp_{}", "b".repeat(36));
        assert!(SecretsGuard::call(&call(json!({ key.clone(): 1 })), &s).is_deny());
        assert!(SecretsGuard::call(&call(json!({"a": [1, {"b": [key.clone()]}]})), &s).is_deny());
        let mut raw = call(json!({}));
        raw.arguments = Some(format!("not json {key}"));
        assert!(SecretsGuard::call(&raw, &s).is_deny());
    }

    #[test]
    fn json_escapes_do_not_hide_a_secret() {
        let s = GuardSettings::default();
        let escaped = [
            format!(
                r#"{{"u":"https:\/\/hooks.slack.com\/services\/{}"}}"#,
                r"T00000000\/B00000000\/XXXXXXXXXXXXXXXXXXXXXXXX"
            ),
            format!(r#"{{"k":"\u0041KIA{}"}}"#, "IOSFODNN7EXAMPLE"),
        ];
        for raw in escaped {
            let mut call = call(json!({}));
            call.arguments = Some(raw.clone());
            assert!(SecretsGuard::call(&call, &s).is_deny(), "{raw}");
        }
    }

    fn triggered(text: &str) -> bool {
        TRIGGERS.iter().any(|t| text.contains(t))
    }

    /// The list against the scan's own starts: every shape's prefixes, every pair the AWS secret's
    /// words may begin with, the private-key and JWT starts. A shape or pair added without its
    /// trigger fails here.
    #[test]
    fn triggers_cover_every_start_the_scan_acts_on() {
        for shape in SHAPES {
            for prefix in shape.prefixes {
                assert!(triggered(prefix), "no trigger covers {prefix}");
            }
        }
        for b in [b'a', b'A'] {
            for n in 0..=255u8 {
                if may_start(b, n) && !matches!(n, b'K' | b'S' | b'B' | b'C') {
                    let pair = String::from_utf8(vec![b, n]).unwrap();
                    assert!(TRIGGERS.contains(&pair.as_str()), "no trigger {pair:?}");
                }
            }
        }
        assert!(triggered("-----BEGIN ") && triggered("eyJ") && triggered("\\u0041"));
        // Only a backslash can make the decoded text differ from the raw, and of the escapes only
        // `\u` can spell a letter, digit or any byte of a trigger; `\/` is why the Slack webhook
        // is triggered by its host alone.
        for t in TRIGGERS {
            assert!(!t.contains(['/', '"', '\\']) || *t == "\\u", "{t}");
        }
    }

    /// The host skips the guard on arguments holding no trigger, so whatever it denies must hold
    /// one: every fixture, in keys, values, arrays and under JSON escapes.
    #[test]
    fn triggers_cover_every_finding() {
        let s = GuardSettings::default();
        let mut texts = vec![
            format!(r#"{{"k":"\u0041KIA{}"}}"#, "IOSFODNN7EXAMPLE"),
            format!(
                r#"{{"u":"https:\/\/hooks.slack.com\/services\/{}"}}"#,
                r"T00000000\/B00000000\/XXXXXXXXXXXXXXXXXXXXXXXX"
            ),
        ];
        for (_, secret) in fixtures() {
            texts.push(json!({"note": format!("use {secret} here")}).to_string());
            texts.push(json!({ secret.clone(): [1, {"b": "x"}] }).to_string());
            texts.push(json!({"a": [{"b": [secret.clone()]}]}).to_string());
            texts.push(format!("not json {secret}"));
        }
        for text in texts {
            let mut call = call(json!({}));
            call.arguments = Some(text.clone());
            assert!(SecretsGuard::call(&call, &s).is_deny(), "{text}");
            assert!(triggered(&text), "no trigger in {text}");
        }
        // The benchmark's query and ordinary SQL hold none: the guard is not asked about them.
        assert!(!triggered(
            &json!({"sql": "select id, name, email from users where created_at > now() - interval '7 days' order by id limit 50"}).to_string()
        ));
    }

    #[test]
    fn applies_only_to_configured_tools() {
        let s = policy_sdk::parse_settings::<GuardSettings>(r#"{"tools":["ci:*"]}"#).unwrap();
        let secret = format!("AKIA{}", "IOSFODNN7EXAMPLE");
        assert_eq!(
            SecretsGuard::call(&call(json!({"k": secret.clone()})), &s),
            Decision::abstain()
        );
        let ci = ToolCall::new("ci", "deploy").with_arguments(json!({"k": secret}));
        assert!(SecretsGuard::call(&ci, &s).is_deny());
        assert!(policy_sdk::parse_settings::<GuardSettings>(r#"{"tools":["nocolon"]}"#).is_err());
    }

    #[test]
    fn listing_is_not_its_business() {
        assert_eq!(
            SecretsGuard::list(&ToolCall::new("db", "query"), &GuardSettings::default()),
            Decision::abstain()
        );
    }
}

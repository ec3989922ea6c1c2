//! The identity store: workspaces, upstream servers, members, tokens and grants, in SQLite (the
//! embedded default, one WAL file) or PostgreSQL (selected by a `postgres://` URL).
//!
//! Every query is written once: [`with_db!`] expands it for both pools, and both schemas keep times
//! as Unix milliseconds and ids as 64-bit integers so the same SQL and the same Rust types work on
//! either. Tokens are stored as `sha256:<hex>` with a short visible prefix; the token itself exists
//! only in the value returned by [`Store::token_issue`].

use serde::Serialize;
use sha2::{Digest as _, Sha256};
use sqlx::Row as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;

pub mod flows;
pub mod idp;
pub mod import;
pub mod limits;
pub mod roles;
pub mod scim;
pub mod transport;
pub use idp::{IdpConfig, RoleMapping};
pub use roles::Role;
use std::time::Duration;
pub use transport::{EnvSpec, Fence, SourceView, StdioSpec, TlsFiles, Transport, TransportView};

/// Errors of store operations. Bad input is a plain variant with a message naming the value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name that must be unique is taken.
    #[error("{0} {1:?} already exists")]
    Duplicate(&'static str, String),
    /// A referenced object does not exist.
    #[error("unknown {0} {1:?}")]
    NotFound(&'static str, String),
    /// Malformed input: a name, URL, header, pattern or duration.
    #[error("{0}")]
    Invalid(String),
    /// The database URL cannot be used.
    #[error("database url: {0}")]
    Url(String),
    /// Applying the schema migrations failed.
    #[error("migrations: {0}")]
    Migrate(String),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl Error {
    /// Stable machine code for the admin API and the CLI.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Duplicate(..) => "duplicate",
            Error::NotFound(..) => "not_found",
            Error::Invalid(_) => "invalid",
            Error::Url(_) | Error::Migrate(_) | Error::Database(_) => "internal",
        }
    }
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// A connection pool of either backend.
#[derive(Clone, Debug)]
pub enum Db {
    /// The embedded default.
    Sqlite(SqlitePool),
    /// For several gateway processes sharing one store.
    Postgres(PgPool),
}

/// Runs the same code against whichever pool `$db` holds, binding it to `$p`.
macro_rules! with_db {
    ($db:expr, $p:ident => $body:expr) => {
        match $db {
            Db::Sqlite($p) => $body,
            Db::Postgres($p) => $body,
        }
    };
}
pub(crate) use with_db;

/// A workspace: the unit of tenancy. Tokens, members and servers belong to exactly one.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Workspace {
    /// Unique name.
    pub name: String,
    /// Denials are enforced (true) or only recorded as would-deny (false, the default).
    pub enforce: bool,
    /// Creation time, Unix ms.
    pub created_ms: i64,
}

/// A header the gateway sends to an upstream server.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HeaderSpec {
    /// Header name.
    pub name: String,
    /// A literal value (not a secret: it is stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The environment variable that holds the value (for secrets: only the name is stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// A file whose contents are the value (read when sending; only the path is stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<std::path::PathBuf>,
}

impl HeaderSpec {
    /// Where the value comes from (`literal`, `env:VAR`, `file:PATH`): what listings show.
    pub fn source(&self) -> String {
        transport::source_label(
            self.value.as_deref(),
            self.env.as_deref(),
            self.file.as_deref(),
        )
    }

    /// A valid name and exactly one valid source. Messages name the header, never its value.
    fn validate(&self) -> Result<()> {
        let name = &self.name;
        http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Error::Invalid(format!("invalid header name {name:?}")))?;
        match (&self.value, &self.env, &self.file) {
            (Some(v), None, None) => http::HeaderValue::from_str(v)
                .map(drop)
                .map_err(|_| Error::Invalid(format!("invalid value for header {name:?}"))),
            (None, Some(env), None) if transport::valid_env_name(env) => Ok(()),
            (None, Some(env), None) => Err(Error::Invalid(format!(
                "header {name:?}: invalid environment variable name {env:?}"
            ))),
            (None, None, Some(file)) if file.is_absolute() => Ok(()),
            (None, None, Some(file)) => Err(Error::Invalid(format!(
                "header {name:?}: file must be an absolute path, not {}",
                file.display()
            ))),
            _ => Err(Error::Invalid(format!(
                "header {name:?}: give exactly one of value, env, file"
            ))),
        }
    }
}

/// A server to add, as the admin API takes it (`POST /v1/workspaces/{ws}/servers`) and the CLI
/// builds it: either an HTTP(S) server (`url`, optional `headers` and `tls`) or a stdio one
/// (`stdio`, no `url`, no `headers`).
#[derive(Clone, Debug, Default, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NewServer {
    /// Server name, unique in its workspace.
    pub name: String,
    /// Streamable HTTP endpoint (`http://` or `https://`); none for a stdio server.
    #[serde(default)]
    pub url: Option<String>,
    /// Headers injected into every upstream request (HTTP only).
    #[serde(default)]
    pub headers: Vec<HeaderSpec>,
    /// Before its names on `/mcp`; default `NAME_`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// PEM files for an `https://` server.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// The process to spawn for a stdio server.
    #[serde(default)]
    pub stdio: Option<StdioSpec>,
}

impl NewServer {
    /// Parses a JSON body. An error names the field at fault (`stdio.fence.memory_mb`) and never
    /// echoes a value.
    pub fn from_json(body: &[u8]) -> Result<NewServer> {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| Error::Invalid(format!("invalid JSON: {}", json_error(&e))))?;
        serde_json::from_value(value.clone()).map_err(|e| match locate(&value) {
            Some((path, e)) => Error::Invalid(format!("{path}: {}", json_error(&e))),
            None => Error::Invalid(json_error(&e)),
        })
    }

    /// Checks every field and works out what is stored: the URL (`stdio://{workspace}/{name}`
    /// for a stdio server) and the transport (`None` for plain HTTP, as rows from before
    /// transports were stored).
    fn check(&self, workspace: &str) -> Result<(String, Option<Transport>)> {
        validate_server_name(&self.name)?;
        if let Some(p) = &self.prefix {
            validate_prefix(p)?;
        }
        match (&self.stdio, &self.url) {
            (Some(_), Some(_)) => Err(Error::Invalid(
                "url: a stdio server has none (it is spawned, not dialled)".into(),
            )),
            (Some(stdio), None) => {
                if !self.headers.is_empty() {
                    return Err(Error::Invalid(
                        "headers: a stdio server has none (give it environment variables)".into(),
                    ));
                }
                if self.tls.is_some() {
                    return Err(Error::Invalid("tls: only for an https:// url".into()));
                }
                let transport = Transport::Stdio(stdio.clone());
                transport.validate()?;
                Ok((
                    format!("stdio://{workspace}/{}", self.name),
                    Some(transport),
                ))
            }
            (None, None) => Err(Error::Invalid(
                "url: required (or stdio, for a server spawned as a process)".into(),
            )),
            (None, Some(url)) => {
                validate_url(url)?;
                for h in &self.headers {
                    h.validate()?;
                }
                let tls = self.tls.clone().unwrap_or_default();
                if tls.is_empty() {
                    return Ok((url.clone(), None));
                }
                let https = url
                    .get(..8)
                    .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
                if !https {
                    return Err(Error::Invalid("tls: only for an https:// url".into()));
                }
                let transport = Transport::Http { tls };
                transport.validate()?;
                Ok((url.clone(), Some(transport)))
            }
        }
    }
}

/// The innermost field of a server body that does not parse, with its own error: what
/// `NewServer::from_json` names. serde reports a type error without saying where it is.
fn locate(body: &serde_json::Value) -> Option<(String, serde_json::Error)> {
    use serde_json::Value;
    fn probe<T: serde::de::DeserializeOwned>(v: &Value) -> Option<serde_json::Error> {
        serde_json::from_value::<T>(v.clone()).err()
    }
    fn each<T: serde::de::DeserializeOwned>(v: &Value) -> Option<(String, serde_json::Error)> {
        let items = v.as_array()?;
        items
            .iter()
            .enumerate()
            .find_map(|(i, item)| probe::<T>(item).map(|e| (format!("[{i}]"), e)))
    }
    fn here(e: Option<serde_json::Error>) -> Option<(String, serde_json::Error)> {
        e.map(|e| (String::new(), e))
    }
    fn stdio(v: &Value) -> Option<(String, serde_json::Error)> {
        let fields = v.as_object()?;
        fields.iter().find_map(|(k, v)| {
            let found = match k.as_str() {
                "command" => here(probe::<String>(v)),
                "args" => here(probe::<Vec<String>>(v)),
                "env" => each::<EnvSpec>(v).or_else(|| here(probe::<Vec<EnvSpec>>(v))),
                "cwd" => here(probe::<Option<std::path::PathBuf>>(v)),
                // Every fence field has a default, so each can be tried alone.
                "fence" => v
                    .as_object()
                    .and_then(|f| {
                        f.iter().find_map(|(fk, fv)| {
                            probe::<Fence>(&serde_json::json!({ fk: fv }))
                                .map(|e| (format!(".{fk}"), e))
                        })
                    })
                    .or_else(|| here(probe::<Fence>(v))),
                _ => None,
            };
            found.map(|(sub, e)| (format!(".{k}{sub}"), e))
        })
    }
    let fields = body.as_object()?;
    fields.iter().find_map(|(k, v)| {
        let found = match k.as_str() {
            "name" => here(probe::<String>(v)),
            "url" | "prefix" => here(probe::<Option<String>>(v)),
            "headers" => each::<HeaderSpec>(v).or_else(|| here(probe::<Vec<HeaderSpec>>(v))),
            "tls" => here(probe::<Option<TlsFiles>>(v)),
            "stdio" => stdio(v).or_else(|| here(probe::<Option<StdioSpec>>(v))),
            _ => None,
        };
        found.map(|(sub, e)| (format!("{k}{sub}"), e))
    })
}

/// A JSON error without the value it is about: serde says `invalid type: string "…"`, and the
/// string may be a secret. Keeps the kind of value, what was expected, field names (unknown,
/// missing, duplicate) and the position.
pub fn json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let (message, position) = match text.rsplit_once(" at line ") {
        Some((m, p)) if e.line() > 0 => (m, format!(" at line {p}")),
        _ => (text.as_str(), String::new()),
    };
    if e.classify() != serde_json::error::Category::Data {
        // Syntax and end-of-input errors name a position, never a value.
        return text;
    }
    let redacted = if let Some(rest) = message
        .strip_prefix("invalid type: ")
        .map(|r| ("invalid type", r))
        .or_else(|| {
            message
                .strip_prefix("invalid value: ")
                .map(|r| ("invalid value", r))
        }) {
        let (what, rest) = rest;
        const KINDS: [&str; 16] = [
            "string",
            "integer",
            "floating point",
            "boolean",
            "character",
            "null",
            "map",
            "sequence",
            "byte array",
            "unit variant",
            "newtype variant",
            "tuple variant",
            "struct variant",
            "newtype struct",
            "unit",
            "Option value",
        ];
        let kind = KINDS
            .iter()
            .find(|k| rest.starts_with(*k))
            .copied()
            .unwrap_or("value");
        match rest.rsplit_once(", expected ") {
            Some((_, expected)) => format!("{what}: {kind}, expected {expected}"),
            None => format!("{what}: {kind}"),
        }
    } else if [
        "unknown field ",
        "missing field ",
        "duplicate field ",
        "invalid length ",
    ]
    .iter()
    .any(|p| message.starts_with(p))
    {
        message.to_owned()
    } else if let Some(rest) = message.strip_prefix("unknown variant ") {
        match rest.split_once(", expected ") {
            Some((_, expected)) => format!("unknown variant, expected {expected}"),
            None => "unknown variant".to_owned(),
        }
    } else {
        "invalid value".to_owned()
    };
    format!("{redacted}{position}")
}

/// An upstream MCP server of a workspace, as listed: where each header's value comes from,
/// never the value.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Server {
    /// Workspace name.
    pub workspace: String,
    /// Server name, unique in its workspace.
    pub name: String,
    /// Streamable HTTP endpoint (`stdio://{workspace}/{name}` for a stdio server).
    pub url: String,
    /// Headers injected into every upstream request: names and sources.
    pub headers: Vec<SourceView>,
    /// What goes before its tool and prompt names on `/mcp` (`NAME_` unless set; `''` exposes
    /// names unchanged).
    pub prefix: String,
    /// How it is reached: `http` (with TLS file paths when set) or `stdio` (command, arguments,
    /// working directory, environment names and sources, fence).
    pub transport: TransportView,
}

impl Server {
    fn listed(
        workspace: &str,
        name: String,
        url: String,
        headers: &[HeaderSpec],
        prefix: Option<&str>,
        transport: TransportView,
    ) -> Server {
        Server {
            workspace: workspace.to_owned(),
            prefix: effective_prefix(&name, prefix),
            name,
            url,
            headers: headers
                .iter()
                .map(|h| SourceView {
                    name: h.name.clone(),
                    source: h.source(),
                })
                .collect(),
            transport,
        }
    }
}

/// The prefix a server's names get on `/mcp`: the one stored, else its name and `_`.
pub fn effective_prefix(name: &str, stored: Option<&str>) -> String {
    stored.map_or_else(|| format!("{name}_"), str::to_owned)
}

/// A prefix is 0–32 of `[A-Za-z0-9_-]`, so exposed names stay valid tool names.
fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.len() > 32
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(Error::Invalid(format!(
            "invalid prefix {prefix:?}: up to 32 of A-Z a-z 0-9 _ -"
        )));
    }
    Ok(())
}

/// (id, name, created ms, disabled ms)
type MemberRow = (i64, String, i64, Option<i64>);

/// A member of a workspace.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Member {
    /// Member name, unique in its workspace.
    pub name: String,
    /// Creation time, Unix ms.
    pub created_ms: i64,
    /// When the member was disabled (every credential refused), Unix ms; `None` when enabled.
    pub disabled_ms: Option<i64>,
    /// The roles assigned to them, sorted.
    pub roles: Vec<String>,
}

/// A token as listed: never the token itself.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TokenInfo {
    /// Token id (`tok_…`), for revocation.
    pub id: String,
    /// Workspace name.
    pub workspace: String,
    /// Member name; `None` for the workspace token.
    pub member: Option<String>,
    /// The first characters of the token, for recognising it.
    pub prefix: String,
    /// Issue time, Unix ms.
    pub created_ms: i64,
    /// Expiry, Unix ms.
    pub expires_ms: Option<i64>,
    /// Last successful authentication, Unix ms (recorded every few seconds).
    pub last_used_ms: Option<i64>,
}

/// A newly issued token: the only place the secret exists.
#[derive(Clone, Serialize)]
pub struct IssuedToken {
    /// What is stored and listed.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The bearer token. Shown once; only its hash is stored.
    pub token: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("info", &self.info)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// A grant: member and `server:tool` pattern.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Grant {
    /// Member name.
    pub member: String,
    /// `server:tool` pattern with `*` globs.
    pub pattern: String,
}

/// A token row: (id, workspace id, member id or `None` for the workspace token, hash, expiry ms).
pub type TokenRow = (String, i64, Option<i64>, String, Option<i64>);

/// Every row the in-memory snapshot is built from.
#[derive(Debug, Default)]
pub struct Rows {
    /// (id, name, enforce)
    pub workspaces: Vec<(i64, String, bool)>,
    /// Every server.
    pub servers: Vec<ServerRow>,
    /// (id, workspace id, name, disabled ms)
    pub members: Vec<(i64, i64, String, Option<i64>)>,
    /// (member id, pattern)
    pub grants: Vec<(i64, String)>,
    /// (id, workspace id, name)
    pub roles: Vec<(i64, i64, String)>,
    /// (role id, pattern)
    pub role_grants: Vec<(i64, String)>,
    /// (member id, role id)
    pub member_roles: Vec<(i64, i64)>,
    /// (workspace id, identity-provider settings JSON)
    pub idps: Vec<(i64, String)>,
    /// Every token.
    pub tokens: Vec<TokenRow>,
    /// Every rate limit.
    pub rate_limits: Vec<LimitRow>,
}

/// A rate limit as the snapshot reads it: (id, workspace id, subject, pattern, calls, period
/// ms, burst).
pub type LimitRow = (i64, i64, String, String, i64, i64, i64);

/// A server as the snapshot reads it: (workspace id, name, url, headers JSON, prefix, transport
/// JSON).
pub type ServerRow = (i64, String, String, String, Option<String>, Option<String>);

/// What the identity journal holds after a reader's position.
#[derive(Debug, Default)]
pub struct Journal {
    /// Rows up to this `seq` have been deleted: a reader whose position is before it missed some.
    pub pruned_through: i64,
    /// (seq, kind, ref): kind `workspace`, `member`, `role` or `token`; ref the workspace,
    /// member or role id, or the token's id.
    pub changes: Vec<(i64, String, String)>,
}

/// Who holds which role: assigned directly, or through a SCIM group mapped to it.
/// Every rate limit, as [`LimitRow`]s.
const LIMITS: &str = "SELECT id, workspace_id, subject, pattern, rate, period_ms, burst FROM rate_limits ORDER BY id";
/// One workspace's rate limits.
const LIMITS_OF_WORKSPACE: &str = "SELECT id, workspace_id, subject, pattern, rate, period_ms, burst FROM rate_limits WHERE workspace_id = $1 ORDER BY id";
const MEMBER_ROLES: &str = "SELECT member_id, role_id FROM member_roles UNION SELECT gm.member_id, g.role_id FROM scim_group_members gm JOIN scim_groups g ON g.id = gm.group_id WHERE g.role_id IS NOT NULL";
/// The same for one member.
const MEMBER_ROLES_OF_MEMBER: &str = "SELECT member_id, role_id FROM member_roles WHERE member_id = $1 UNION SELECT gm.member_id, g.role_id FROM scim_group_members gm JOIN scim_groups g ON g.id = gm.group_id WHERE g.role_id IS NOT NULL AND gm.member_id = $1";
/// The same for one role.
const MEMBER_ROLES_OF_ROLE: &str = "SELECT member_id, role_id FROM member_roles WHERE role_id = $1 UNION SELECT gm.member_id, g.role_id FROM scim_group_members gm JOIN scim_groups g ON g.id = gm.group_id WHERE g.role_id IS NOT NULL AND g.role_id = $1";

/// Prefix of every token.
pub const TOKEN_PREFIX: &str = "mcpgw_";

/// The identity store.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `sha256:<hex>` of a token, as stored.
pub fn token_hash(token: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())))
}

/// `bytes` bytes from the OS CSPRNG, hex-encoded.
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| Error::Invalid(format!("no randomness: {e}")))?;
    Ok(hex::encode(buf))
}

fn duplicate_or(e: sqlx::Error, what: &'static str, name: &str) -> Error {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            Error::Duplicate(what, name.to_owned())
        }
        _ => Error::Database(e),
    }
}

/// Workspace and member names: 1-64 of `[A-Za-z0-9._@+-]`, starting with a letter or digit.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b'+'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid {what} name {name:?}: use 1-64 of [A-Za-z0-9._@+-]"
        )))
    }
}

/// Server names: 1-32 of `[a-z0-9-]`, starting with a letter or digit (they prefix tool names on
/// the aggregated endpoint, where `_` is the separator).
pub fn validate_server_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid server name {name:?}: use 1-32 of [a-z0-9-]"
        )))
    }
}

/// An upstream URL: absolute `http` or `https` with a host.
pub fn validate_url(url: &str) -> Result<()> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| Error::Invalid(format!("invalid url {url:?}: {e}")))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(h)) if !h.is_empty() => Ok(()),
        _ => Err(Error::Invalid(format!(
            "invalid url {url:?}: expected http(s)://host[:port]/path"
        ))),
    }
}

/// Splits `Name: rest` and checks the name.
fn split_header(spec: &str) -> Result<(&str, &str)> {
    // The spec is not echoed: without its colon, it may be a bare secret.
    let (name, rest) = spec
        .split_once(':')
        .map(|(n, v)| (n.trim(), v.trim()))
        .ok_or_else(|| Error::Invalid("invalid header: expected 'Name: value'".into()))?;
    http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| Error::Invalid(format!("invalid header name {name:?}")))?;
    Ok((name, rest))
}

/// Parses `Name: value` into a header spec; `env` makes the value an environment variable name.
pub fn parse_header(spec: &str, env: bool) -> Result<HeaderSpec> {
    let (name, value) = split_header(spec)?;
    let (value, env) = if env {
        (None, Some(value.to_owned()))
    } else {
        (Some(value.to_owned()), None)
    };
    let h = HeaderSpec {
        name: name.to_owned(),
        value,
        env,
        file: None,
    };
    h.validate()?;
    Ok(h)
}

/// Parses `Name: /absolute/path` into a header spec whose value is the file's contents, read
/// when sending (only the path is stored).
pub fn parse_header_file(spec: &str) -> Result<HeaderSpec> {
    let (name, path) = split_header(spec)?;
    let h = HeaderSpec {
        name: name.to_owned(),
        value: None,
        env: None,
        file: Some(path.into()),
    };
    h.validate()?;
    Ok(h)
}

/// Parses a lifetime such as `90s`, `15m`, `12h`, `30d`, `4w`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let bad = || {
        Error::Invalid(format!(
            "invalid duration {text:?}: expected a number and s, m, h, d or w (30d)"
        ))
    };
    // The unit is the last character: split where it starts (it may be multi-byte).
    let cut = text.char_indices().last().map_or(0, |(i, _)| i);
    let (num, unit) = text.split_at(cut);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    if n == 0 || n > 3650 * 86_400 / secs {
        return Err(bad());
    }
    Ok(Duration::from_secs(n * secs))
}

impl Store {
    /// Connects and applies migrations. `postgres://` or `postgresql://` selects PostgreSQL;
    /// `sqlite://PATH` (or a bare path) selects SQLite in WAL mode, creating the file.
    pub async fn connect(url: &str) -> Result<Store> {
        let db = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url).map_err(|e| Error::Url(e.to_string()))?;
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(opts)
                .await?;
            sqlx::migrate!("./migrations/postgres")
                .run(&pool)
                .await
                .map_err(|e| Error::Migrate(e.to_string()))?;
            Db::Postgres(pool)
        } else {
            let path = url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
                .unwrap_or(url);
            if let Some(parent) = std::path::Path::new(path)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
            {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::Url(format!("{}: {e}", parent.display())))?;
            }
            let opts = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(opts)
                .await?;
            sqlx::migrate!("./migrations/sqlite")
                .run(&pool)
                .await
                .map_err(|e| Error::Migrate(e.to_string()))?;
            Db::Sqlite(pool)
        };
        Ok(Store { db })
    }

    /// Keeps SQLite's query planner informed: when the audit trail has no statistics yet, or
    /// has grown or shrunk twofold since they were gathered, `ANALYZE` gathers them again (all
    /// rows: sampled statistics tie the workspace and tool indexes and pick the wrong one).
    /// Without them SQLite picks among the audit trail's indexes blindly (a member's newest
    /// records went through the workspace index: 36 ms instead of 1 ms at a million records).
    /// About 0.6 s per million records, on a pool connection (WAL: the writer goes on). Run by
    /// the identity watcher 30 s after start and every 10 minutes; on PostgreSQL autovacuum's
    /// analyze does this, and this does nothing. Returns whether it analyzed.
    pub async fn optimize(&self) -> Result<bool> {
        let Db::Sqlite(pool) = &self.db else {
            return Ok(false);
        };
        let (min, max): (Option<i64>, Option<i64>) =
            sqlx::query_as("SELECT MIN(id), MAX(id) FROM audit_records")
                .fetch_one(pool)
                .await?;
        let rows = match (min, max) {
            (Some(a), Some(b)) => b - a + 1,
            _ => 0,
        };
        // sqlite_stat1 exists only after a first ANALYZE.
        let stat: Option<String> =
            sqlx::query_scalar("SELECT stat FROM sqlite_stat1 WHERE tbl = 'audit_records' LIMIT 1")
                .fetch_optional(pool)
                .await
                .unwrap_or(None);
        let analyzed: Option<i64> = stat
            .as_deref()
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok());
        let stale = analyzed.is_none_or(|a| rows >= 2 * a.max(1) || 2 * rows <= a);
        if rows < 10_000 || !stale {
            return Ok(false);
        }
        let started = std::time::Instant::now();
        sqlx::query("ANALYZE").execute(pool).await?;
        tracing::info!(
            rows,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "database statistics gathered"
        );
        Ok(true)
    }

    /// The pool, for the change watcher.
    pub fn db(&self) -> &Db {
        &self.db
    }

    async fn workspace_id(&self, name: &str) -> Result<i64> {
        let id: Option<i64> = with_db!(&self.db, p => sqlx::query_scalar("SELECT id FROM workspaces WHERE name = $1")
            .bind(name).fetch_optional(p).await?);
        id.ok_or_else(|| Error::NotFound("workspace", name.to_owned()))
    }

    async fn member_id(&self, ws: i64, name: &str) -> Result<i64> {
        let id: Option<i64> = with_db!(&self.db, p => sqlx::query_scalar("SELECT id FROM members WHERE workspace_id = $1 AND name = $2")
            .bind(ws).bind(name).fetch_optional(p).await?);
        id.ok_or_else(|| Error::NotFound("member", name.to_owned()))
    }

    /// Creates a workspace; enforcement starts off.
    pub async fn workspace_create(&self, name: &str) -> Result<Workspace> {
        validate_name("workspace", name)?;
        let now = now_ms();
        with_db!(&self.db, p => sqlx::query("INSERT INTO workspaces (name, enforce, created_ms) VALUES ($1, $2, $3)")
            .bind(name).bind(false).bind(now).execute(p).await.map(|r| r.rows_affected()))
            .map_err(|e| duplicate_or(e, "workspace", name))?;
        Ok(Workspace {
            name: name.to_owned(),
            enforce: false,
            created_ms: now,
        })
    }

    /// Deletes a workspace with its servers, members, tokens and grants.
    pub async fn workspace_delete(&self, name: &str) -> Result<()> {
        let done = with_db!(&self.db, p => sqlx::query("DELETE FROM workspaces WHERE name = $1").bind(name).execute(p).await?.rows_affected());
        if done == 0 {
            Err(Error::NotFound("workspace", name.to_owned()))
        } else {
            Ok(())
        }
    }

    /// All workspaces by name.
    pub async fn workspace_list(&self) -> Result<Vec<Workspace>> {
        with_db!(&self.db, p => {
            let rows = sqlx::query("SELECT name, enforce, created_ms FROM workspaces ORDER BY name").fetch_all(p).await?;
            rows.iter()
                .map(|r| Ok(Workspace { name: r.try_get("name")?, enforce: r.try_get("enforce")?, created_ms: r.try_get("created_ms")? }))
                .collect()
        })
    }

    /// Turns enforcement on (denials refuse calls) or off (denials are recorded as would-deny).
    pub async fn enforce_set(&self, workspace: &str, on: bool) -> Result<()> {
        let done = with_db!(&self.db, p => sqlx::query("UPDATE workspaces SET enforce = $1 WHERE name = $2")
            .bind(on).bind(workspace).execute(p).await?.rows_affected());
        if done == 0 {
            Err(Error::NotFound("workspace", workspace.to_owned()))
        } else {
            Ok(())
        }
    }

    /// Adds a plain HTTP upstream server to a workspace (see [`Store::server_add_spec`]).
    pub async fn server_add(
        &self,
        workspace: &str,
        name: &str,
        url: &str,
        headers: Vec<HeaderSpec>,
        prefix: Option<&str>,
    ) -> Result<Server> {
        self.server_add_spec(
            workspace,
            NewServer {
                name: name.to_owned(),
                url: Some(url.to_owned()),
                headers,
                prefix: prefix.map(str::to_owned),
                ..NewServer::default()
            },
        )
        .await
    }

    /// Adds an upstream server to a workspace: HTTP(S) or stdio, every field checked first.
    pub async fn server_add_spec(&self, workspace: &str, spec: NewServer) -> Result<Server> {
        self.server_write(workspace, spec, false).await
    }

    /// Replaces an upstream server's settings (URL or stdio process, headers, prefix, TLS) under
    /// the same name, checked as an addition is; the server must exist.
    pub async fn server_replace(&self, workspace: &str, spec: NewServer) -> Result<Server> {
        self.server_write(workspace, spec, true).await
    }

    async fn server_write(
        &self,
        workspace: &str,
        spec: NewServer,
        replace: bool,
    ) -> Result<Server> {
        let (url, transport) = spec.check(workspace)?;
        let NewServer {
            name,
            headers,
            prefix,
            ..
        } = spec;
        let ws = self.workspace_id(workspace).await?;
        // Two servers under one prefix would expose colliding names: refused, naming both.
        let effective = effective_prefix(&name, prefix.as_deref());
        for other in self.server_list(workspace).await? {
            if other.prefix == effective && other.name != name {
                return Err(Error::Invalid(format!(
                    "prefix {effective:?} of server {name} is already server {}'s: their names would collide on /mcp",
                    other.name
                )));
            }
        }
        let unwritable = |e: serde_json::Error| Error::Invalid(format!("unwritable server: {e}"));
        let headers_json = serde_json::to_string(&headers).map_err(unwritable)?;
        let transport_json = transport
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(unwritable)?;
        if replace {
            let done = with_db!(&self.db, p => sqlx::query("UPDATE servers SET url = $3, headers = $4, prefix = $5, transport = $6 WHERE workspace_id = $1 AND name = $2")
                .bind(ws).bind(&name).bind(&url).bind(&headers_json).bind(&prefix).bind(&transport_json)
                .execute(p).await?.rows_affected());
            if done == 0 {
                return Err(Error::NotFound("server", name));
            }
        } else {
            with_db!(&self.db, p => sqlx::query("INSERT INTO servers (workspace_id, name, url, headers, created_ms, prefix, transport) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                .bind(ws).bind(&name).bind(&url).bind(&headers_json).bind(now_ms()).bind(&prefix).bind(&transport_json)
                .execute(p).await.map(|r| r.rows_affected()))
                .map_err(|e| duplicate_or(e, "server", &name))?;
        }
        let view = transport.unwrap_or_default().redacted();
        Ok(Server::listed(
            workspace,
            name,
            url,
            &headers,
            prefix.as_deref(),
            view,
        ))
    }

    /// Removes an upstream server.
    pub async fn server_remove(&self, workspace: &str, name: &str) -> Result<()> {
        let ws = self.workspace_id(workspace).await?;
        let done = with_db!(&self.db, p => sqlx::query("DELETE FROM servers WHERE workspace_id = $1 AND name = $2")
            .bind(ws).bind(name).execute(p).await?.rows_affected());
        if done == 0 {
            Err(Error::NotFound("server", name.to_owned()))
        } else {
            Ok(())
        }
    }

    /// The servers of a workspace by name.
    pub async fn server_list(&self, workspace: &str) -> Result<Vec<Server>> {
        let ws = self.workspace_id(workspace).await?;
        type Row = (String, String, String, Option<String>, Option<String>);
        let rows: Vec<Row> = with_db!(&self.db, p => sqlx::query_as("SELECT name, url, headers, prefix, transport FROM servers WHERE workspace_id = $1 ORDER BY name")
            .bind(ws).fetch_all(p).await?);
        rows.into_iter()
            .map(|(name, url, headers, prefix, transport)| {
                // serde's message could quote a stored value: only the position is reported.
                let headers: Vec<HeaderSpec> = serde_json::from_str(&headers).map_err(|e| {
                    Error::Invalid(format!(
                        "stored headers of server {name} are unreadable (column {})",
                        e.column()
                    ))
                })?;
                let view = match transport.as_deref().map(serde_json::from_str::<Transport>) {
                    None => Transport::default().redacted(),
                    Some(Ok(t)) => t.redacted(),
                    Some(Err(e)) => {
                        tracing::error!(server = %name, column = e.column(), "stored transport unreadable");
                        TransportView::Unreadable
                    }
                };
                Ok(Server::listed(
                    workspace,
                    name,
                    url,
                    &headers,
                    prefix.as_deref(),
                    view,
                ))
            })
            .collect()
    }

    /// Adds a member.
    pub async fn member_add(&self, workspace: &str, name: &str) -> Result<Member> {
        validate_name("member", name)?;
        let ws = self.workspace_id(workspace).await?;
        let now = now_ms();
        with_db!(&self.db, p => sqlx::query("INSERT INTO members (workspace_id, name, created_ms) VALUES ($1, $2, $3)")
            .bind(ws).bind(name).bind(now).execute(p).await.map(|r| r.rows_affected()))
            .map_err(|e| duplicate_or(e, "member", name))?;
        Ok(Member {
            name: name.to_owned(),
            created_ms: now,
            disabled_ms: None,
            roles: Vec::new(),
        })
    }

    /// Removes a member, revoking all their tokens and grants.
    pub async fn member_remove(&self, workspace: &str, name: &str) -> Result<()> {
        let ws = self.workspace_id(workspace).await?;
        let done = with_db!(&self.db, p => sqlx::query("DELETE FROM members WHERE workspace_id = $1 AND name = $2")
            .bind(ws).bind(name).execute(p).await?.rows_affected());
        if done == 0 {
            Err(Error::NotFound("member", name.to_owned()))
        } else {
            Ok(())
        }
    }

    /// The members of a workspace by name.
    pub async fn member_list(&self, workspace: &str) -> Result<Vec<Member>> {
        let ws = self.workspace_id(workspace).await?;
        let (rows, roles): (Vec<MemberRow>, Vec<(i64, String)>) = with_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            let rows = sqlx::query_as("SELECT id, name, created_ms, disabled_ms FROM members WHERE workspace_id = $1 ORDER BY name")
                .bind(ws).fetch_all(&mut *tx).await?;
            let roles = sqlx::query_as("SELECT mr.member_id, r.name FROM member_roles mr JOIN roles r ON r.id = mr.role_id WHERE r.workspace_id = $1 ORDER BY r.name")
                .bind(ws).fetch_all(&mut *tx).await?;
            tx.commit().await?;
            (rows, roles)
        });
        let mut by_member: std::collections::HashMap<i64, Vec<String>> = Default::default();
        for (member, role) in roles {
            by_member.entry(member).or_default().push(role);
        }
        Ok(rows
            .into_iter()
            .map(|(id, name, created_ms, disabled_ms)| Member {
                name,
                created_ms,
                disabled_ms,
                roles: by_member.remove(&id).unwrap_or_default(),
            })
            .collect())
    }

    /// Issues a token for a member, or the workspace token when `member` is `None`. The returned
    /// value is the only copy of the token.
    pub async fn token_issue(
        &self,
        workspace: &str,
        member: Option<&str>,
        ttl: Option<Duration>,
    ) -> Result<IssuedToken> {
        let ws = self.workspace_id(workspace).await?;
        let member_id = match member {
            Some(m) => Some(self.member_id(ws, m).await?),
            None => None,
        };
        // 256 bits from the operating system's CSPRNG.
        let token = format!("{TOKEN_PREFIX}{}", random_hex(32)?);
        let id = format!("tok_{}", random_hex(8)?);
        let prefix = token[..TOKEN_PREFIX.len() + 6].to_owned();
        let now = now_ms();
        let expires_ms = ttl.map(|t| now + t.as_millis() as i64);
        with_db!(&self.db, p => sqlx::query("INSERT INTO tokens (id, workspace_id, member_id, hash, prefix, created_ms, expires_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&id).bind(ws).bind(member_id).bind(token_hash(&token)).bind(&prefix).bind(now).bind(expires_ms)
            .execute(p).await?.rows_affected());
        let info = TokenInfo {
            id,
            workspace: workspace.to_owned(),
            member: member.map(str::to_owned),
            prefix,
            created_ms: now,
            expires_ms,
            last_used_ms: None,
        };
        Ok(IssuedToken { info, token })
    }

    /// The tokens of a workspace (never the tokens themselves).
    pub async fn token_list(&self, workspace: &str) -> Result<Vec<TokenInfo>> {
        let ws = self.workspace_id(workspace).await?;
        type TokenRow = (
            String,
            Option<String>,
            String,
            i64,
            Option<i64>,
            Option<i64>,
        );
        let rows: Vec<TokenRow> = with_db!(&self.db, p => sqlx::query_as(
                "SELECT t.id, m.name, t.prefix, t.created_ms, t.expires_ms, t.last_used_ms FROM tokens t \
                 LEFT JOIN members m ON m.id = t.member_id WHERE t.workspace_id = $1 ORDER BY t.created_ms, t.id")
            .bind(ws).fetch_all(p).await?);
        Ok(rows
            .into_iter()
            .map(
                |(id, member, prefix, created_ms, expires_ms, last_used_ms)| TokenInfo {
                    id,
                    workspace: workspace.to_owned(),
                    member,
                    prefix,
                    created_ms,
                    expires_ms,
                    last_used_ms,
                },
            )
            .collect())
    }

    /// Revokes (deletes) a token; with `workspace`, only a token of that workspace.
    pub async fn token_revoke(&self, id: &str, workspace: Option<&str>) -> Result<()> {
        let done = match workspace {
            Some(w) => {
                let ws = self.workspace_id(w).await?;
                with_db!(&self.db, p => sqlx::query("DELETE FROM tokens WHERE id = $1 AND workspace_id = $2").bind(id).bind(ws).execute(p).await?.rows_affected())
            }
            None => {
                with_db!(&self.db, p => sqlx::query("DELETE FROM tokens WHERE id = $1").bind(id).execute(p).await?.rows_affected())
            }
        };
        if done == 0 {
            Err(Error::NotFound("token", id.to_owned()))
        } else {
            Ok(())
        }
    }

    /// Grants patterns to a member; granting one they have is a no-op.
    pub async fn grant_add(
        &self,
        workspace: &str,
        member: &str,
        patterns: &[String],
    ) -> Result<()> {
        for pattern in patterns {
            policy_sdk::pattern::validate(pattern).map_err(Error::Invalid)?;
        }
        let ws = self.workspace_id(workspace).await?;
        let m = self.member_id(ws, member).await?;
        let now = now_ms();
        with_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            for pattern in patterns {
                sqlx::query("INSERT INTO grants (member_id, pattern, created_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                    .bind(m).bind(pattern).bind(now).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Takes patterns away from a member; every pattern must be one they have.
    pub async fn grant_remove(
        &self,
        workspace: &str,
        member: &str,
        patterns: &[String],
    ) -> Result<()> {
        let ws = self.workspace_id(workspace).await?;
        let m = self.member_id(ws, member).await?;
        with_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            for pattern in patterns {
                let done = sqlx::query("DELETE FROM grants WHERE member_id = $1 AND pattern = $2")
                    .bind(m).bind(pattern).execute(&mut *tx).await?.rows_affected();
                if done == 0 {
                    return Err(Error::NotFound("grant", format!("{member} {pattern}")));
                }
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Grants of a workspace, or of one member.
    pub async fn grant_list(&self, workspace: &str, member: Option<&str>) -> Result<Vec<Grant>> {
        let ws = self.workspace_id(workspace).await?;
        let rows: Vec<(String, String)> = match member {
            Some(name) => {
                let m = self.member_id(ws, name).await?;
                with_db!(&self.db, p => sqlx::query_as("SELECT m.name, g.pattern FROM grants g JOIN members m ON m.id = g.member_id WHERE m.id = $1 ORDER BY g.pattern")
                    .bind(m).fetch_all(p).await?)
            }
            None => {
                with_db!(&self.db, p => sqlx::query_as("SELECT m.name, g.pattern FROM grants g JOIN members m ON m.id = g.member_id WHERE m.workspace_id = $1 ORDER BY m.name, g.pattern")
                .bind(ws).fetch_all(p).await?)
            }
        };
        Ok(rows
            .into_iter()
            .map(|(member, pattern)| Grant { member, pattern })
            .collect())
    }

    /// Every row the in-memory snapshot needs, read in one transaction.
    pub async fn rows(&self) -> Result<Rows> {
        with_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            let rows = Rows {
                workspaces: sqlx::query_as("SELECT id, name, enforce FROM workspaces").fetch_all(&mut *tx).await?,
                servers: sqlx::query_as("SELECT workspace_id, name, url, headers, prefix, transport FROM servers ORDER BY name").fetch_all(&mut *tx).await?,
                members: sqlx::query_as("SELECT id, workspace_id, name, disabled_ms FROM members").fetch_all(&mut *tx).await?,
                grants: sqlx::query_as("SELECT member_id, pattern FROM grants ORDER BY pattern").fetch_all(&mut *tx).await?,
                roles: sqlx::query_as("SELECT id, workspace_id, name FROM roles").fetch_all(&mut *tx).await?,
                role_grants: sqlx::query_as("SELECT role_id, pattern FROM role_grants ORDER BY pattern").fetch_all(&mut *tx).await?,
                member_roles: sqlx::query_as(MEMBER_ROLES).fetch_all(&mut *tx).await?,
                idps: sqlx::query_as("SELECT workspace_id, config FROM idps").fetch_all(&mut *tx).await?,
                tokens: sqlx::query_as("SELECT id, workspace_id, member_id, hash, expires_ms FROM tokens").fetch_all(&mut *tx).await?,
                rate_limits: sqlx::query_as(LIMITS).fetch_all(&mut *tx).await?,
            };
            tx.commit().await?;
            Ok(rows)
        })
    }

    /// The identity journal's position now: the last change recorded (0 when none ever was).
    /// Read before the rows of a full load, so that every change the load might have missed
    /// comes after it (and applying a change twice is harmless).
    pub async fn identity_head(&self) -> Result<i64> {
        with_db!(&self.db, p => {
            let head: (Option<i64>, i64) = sqlx::query_as(
                "SELECT (SELECT MAX(seq) FROM identity_changes), pruned_through FROM identity_journal WHERE id = 1",
            )
            .fetch_one(p)
            .await?;
            Ok(head.0.unwrap_or(0).max(head.1))
        })
    }

    /// The identity changes recorded after `after`, oldest first, at most `limit`, and up to
    /// where the journal has been pruned (a reader behind that has missed changes).
    pub async fn identity_changes(&self, after: i64, limit: i64) -> Result<Journal> {
        with_db!(&self.db, p => {
            let pruned_through: i64 =
                sqlx::query_scalar("SELECT pruned_through FROM identity_journal WHERE id = 1")
                    .fetch_one(p)
                    .await?;
            let changes: Vec<(i64, String, String)> = sqlx::query_as(
                "SELECT seq, kind, ref FROM identity_changes WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(after)
            .bind(limit)
            .fetch_all(p)
            .await?;
            Ok(Journal { pruned_through, changes })
        })
    }

    /// Deletes the journal's rows recorded before `before_ms` (every process has long applied
    /// them) and notes up to where. Returns how many went.
    pub async fn identity_prune(&self, before_ms: i64) -> Result<u64> {
        with_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            let through: Option<i64> =
                sqlx::query_scalar("SELECT MAX(seq) FROM identity_changes WHERE at_ms < $1")
                    .bind(before_ms)
                    .fetch_one(&mut *tx)
                    .await?;
            let Some(through) = through else {
                return Ok(0);
            };
            let gone = sqlx::query("DELETE FROM identity_changes WHERE seq <= $1")
                .bind(through)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query(
                "UPDATE identity_journal SET pruned_through = $1 WHERE id = 1 AND pruned_through < $1",
            )
            .bind(through)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(gone)
        })
    }

    /// The rows of one workspace as the snapshot needs them (its servers and identity provider;
    /// not its members, roles or tokens), or `None` when it is gone.
    pub async fn workspace_rows(&self, id: i64) -> Result<Option<Rows>> {
        with_db!(&self.db, p => {
            let workspaces: Vec<(i64, String, bool)> =
                sqlx::query_as("SELECT id, name, enforce FROM workspaces WHERE id = $1")
                    .bind(id)
                    .fetch_all(p)
                    .await?;
            if workspaces.is_empty() {
                return Ok(None);
            }
            Ok(Some(Rows {
                workspaces,
                servers: sqlx::query_as("SELECT workspace_id, name, url, headers, prefix, transport FROM servers WHERE workspace_id = $1 ORDER BY name").bind(id).fetch_all(p).await?,
                idps: sqlx::query_as("SELECT workspace_id, config FROM idps WHERE workspace_id = $1").bind(id).fetch_all(p).await?,
                rate_limits: sqlx::query_as(LIMITS_OF_WORKSPACE).bind(id).fetch_all(p).await?,
                ..Rows::default()
            }))
        })
    }

    /// The rows of one member: the member, their grants, their roles and their tokens, or
    /// `None` when they are gone.
    pub async fn member_rows(&self, id: i64) -> Result<Option<Rows>> {
        with_db!(&self.db, p => {
            let members: Vec<(i64, i64, String, Option<i64>)> =
                sqlx::query_as("SELECT id, workspace_id, name, disabled_ms FROM members WHERE id = $1")
                    .bind(id)
                    .fetch_all(p)
                    .await?;
            if members.is_empty() {
                return Ok(None);
            }
            Ok(Some(Rows {
                members,
                grants: sqlx::query_as("SELECT member_id, pattern FROM grants WHERE member_id = $1 ORDER BY pattern").bind(id).fetch_all(p).await?,
                member_roles: sqlx::query_as(MEMBER_ROLES_OF_MEMBER).bind(id).fetch_all(p).await?,
                tokens: sqlx::query_as("SELECT id, workspace_id, member_id, hash, expires_ms FROM tokens WHERE member_id = $1").bind(id).fetch_all(p).await?,
                ..Rows::default()
            }))
        })
    }

    /// The rows of one role: the role, its patterns and who holds it, or `None` when it is
    /// gone.
    pub async fn role_rows(&self, id: i64) -> Result<Option<Rows>> {
        with_db!(&self.db, p => {
            let roles: Vec<(i64, i64, String)> =
                sqlx::query_as("SELECT id, workspace_id, name FROM roles WHERE id = $1")
                    .bind(id)
                    .fetch_all(p)
                    .await?;
            if roles.is_empty() {
                return Ok(None);
            }
            Ok(Some(Rows {
                roles,
                role_grants: sqlx::query_as("SELECT role_id, pattern FROM role_grants WHERE role_id = $1 ORDER BY pattern").bind(id).fetch_all(p).await?,
                member_roles: sqlx::query_as(MEMBER_ROLES_OF_ROLE).bind(id).fetch_all(p).await?,
                ..Rows::default()
            }))
        })
    }

    /// One token's row, or `None` when it is gone.
    pub async fn token_row(&self, id: &str) -> Result<Option<TokenRow>> {
        with_db!(&self.db, p => {
            Ok(sqlx::query_as("SELECT id, workspace_id, member_id, hash, expires_ms FROM tokens WHERE id = $1")
                .bind(id)
                .fetch_optional(p)
                .await?)
        })
    }

    /// Records when tokens were last used (batched by the caller).
    pub async fn touch_tokens(&self, used: &[(String, i64)]) -> Result<()> {
        with_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            for (id, at) in used {
                sqlx::query("UPDATE tokens SET last_used_ms = $1 WHERE id = $2").bind(at).bind(id).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

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
use std::time::Duration;

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
}

/// An upstream MCP server of a workspace.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Server {
    /// Workspace name.
    pub workspace: String,
    /// Server name, unique in its workspace.
    pub name: String,
    /// Streamable HTTP endpoint.
    pub url: String,
    /// Headers injected into every upstream request.
    pub headers: Vec<HeaderSpec>,
    /// What goes before its tool and prompt names on `/mcp` (`NAME_` unless set; `''` exposes
    /// names unchanged).
    pub prefix: String,
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

/// A member of a workspace.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Member {
    /// Member name, unique in its workspace.
    pub name: String,
    /// Creation time, Unix ms.
    pub created_ms: i64,
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
    /// (workspace id, name, url, headers JSON, prefix)
    pub servers: Vec<(i64, String, String, String, Option<String>)>,
    /// (id, workspace id, name)
    pub members: Vec<(i64, i64, String)>,
    /// (member id, pattern)
    pub grants: Vec<(i64, String)>,
    /// Every token.
    pub tokens: Vec<TokenRow>,
}

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

/// Parses `Name: value` into a header spec; `env` makes the value an environment variable name.
pub fn parse_header(spec: &str, env: bool) -> Result<HeaderSpec> {
    let (name, value) = spec
        .split_once(':')
        .map(|(n, v)| (n.trim(), v.trim()))
        .ok_or_else(|| {
            Error::Invalid(format!("invalid header {spec:?}: expected 'Name: value'"))
        })?;
    http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| Error::Invalid(format!("invalid header name {name:?}")))?;
    if env {
        let ok = !value.is_empty()
            && !value.as_bytes()[0].is_ascii_digit()
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            return Err(Error::Invalid(format!(
                "invalid environment variable name {value:?}"
            )));
        }
        Ok(HeaderSpec {
            name: name.to_owned(),
            value: None,
            env: Some(value.to_owned()),
        })
    } else {
        http::HeaderValue::from_str(value)
            .map_err(|_| Error::Invalid(format!("invalid value for header {name:?}")))?;
        Ok(HeaderSpec {
            name: name.to_owned(),
            value: Some(value.to_owned()),
            env: None,
        })
    }
}

/// Parses a lifetime such as `90s`, `15m`, `12h`, `30d`, `4w`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let bad = || {
        Error::Invalid(format!(
            "invalid duration {text:?}: expected a number and s, m, h, d or w (30d)"
        ))
    };
    let (num, unit) = text.split_at(text.len().saturating_sub(1));
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

    /// Adds an upstream server to a workspace.
    pub async fn server_add(
        &self,
        workspace: &str,
        name: &str,
        url: &str,
        headers: Vec<HeaderSpec>,
        prefix: Option<&str>,
    ) -> Result<Server> {
        validate_server_name(name)?;
        validate_url(url)?;
        if let Some(p) = prefix {
            validate_prefix(p)?;
        }
        for h in &headers {
            if h.value.is_some() == h.env.is_some() {
                return Err(Error::Invalid(format!(
                    "header {:?}: give exactly one of value and env",
                    h.name
                )));
            }
        }
        let ws = self.workspace_id(workspace).await?;
        // Two servers under one prefix would expose colliding names: refused, naming both.
        let effective = effective_prefix(name, prefix);
        for other in self.server_list(workspace).await? {
            if other.prefix == effective && other.name != name {
                return Err(Error::Invalid(format!(
                    "prefix {effective:?} of server {name} is already server {}'s: their names would collide on /mcp",
                    other.name
                )));
            }
        }
        let json = serde_json::to_string(&headers).map_err(|e| Error::Invalid(e.to_string()))?;
        with_db!(&self.db, p => sqlx::query("INSERT INTO servers (workspace_id, name, url, headers, created_ms, prefix) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(ws).bind(name).bind(url).bind(&json).bind(now_ms()).bind(prefix).execute(p).await.map(|r| r.rows_affected()))
            .map_err(|e| duplicate_or(e, "server", name))?;
        Ok(Server {
            workspace: workspace.to_owned(),
            name: name.to_owned(),
            url: url.to_owned(),
            headers,
            prefix: effective,
        })
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
        let rows: Vec<(String, String, String, Option<String>)> = with_db!(&self.db, p => sqlx::query_as("SELECT name, url, headers, prefix FROM servers WHERE workspace_id = $1 ORDER BY name")
            .bind(ws).fetch_all(p).await?);
        rows.into_iter()
            .map(|(name, url, headers, prefix)| {
                let headers = serde_json::from_str(&headers)
                    .map_err(|e| Error::Invalid(format!("stored headers of {name}: {e}")))?;
                Ok(Server {
                    workspace: workspace.to_owned(),
                    prefix: effective_prefix(&name, prefix.as_deref()),
                    name,
                    url,
                    headers,
                })
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
        let rows: Vec<(String, i64)> = with_db!(&self.db, p => sqlx::query_as("SELECT name, created_ms FROM members WHERE workspace_id = $1 ORDER BY name")
            .bind(ws).fetch_all(p).await?);
        Ok(rows
            .into_iter()
            .map(|(name, created_ms)| Member { name, created_ms })
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
                servers: sqlx::query_as("SELECT workspace_id, name, url, headers, prefix FROM servers ORDER BY name").fetch_all(&mut *tx).await?,
                members: sqlx::query_as("SELECT id, workspace_id, name FROM members").fetch_all(&mut *tx).await?,
                grants: sqlx::query_as("SELECT member_id, pattern FROM grants ORDER BY pattern").fetch_all(&mut *tx).await?,
                tokens: sqlx::query_as("SELECT id, workspace_id, member_id, hash, expires_ms FROM tokens").fetch_all(&mut *tx).await?,
            };
            tx.commit().await?;
            Ok(rows)
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

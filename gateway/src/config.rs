//! Configuration: `RawConfig` is what the TOML file says (unknown fields refused); [`Config`] is
//! validated, with defaults filled in and `MCPGW_*` environment overrides applied. Command-line
//! flags override both (see `main.rs`). Every field is documented in `docs/config.md`.

use crate::audit::{AuditConfig, WhenFull};
use crate::listener::CertFiles;
use crate::policy::{InstanceStrategy, Limits, PolicyConfig};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors of loading configuration; each names the file, field or variable.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file cannot be read.
    #[error("read {0}: {1}")]
    Read(String, String),
    /// The file is not valid configuration.
    #[error("{0}: {1}")]
    Parse(String, String),
    /// A value is out of range or malformed.
    #[error("invalid {0}: {1}")]
    Invalid(&'static str, String),
}

/// The config file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `sqlite://PATH` or `postgres://…`; default `sqlite://<data_dir>/mcpgw.db`.
    pub database: Option<String>,
    /// Where the SQLite database and the compiled-module cache live; default `./mcpgw-data`.
    pub data_dir: Option<PathBuf>,
    /// MCP listener address; default `127.0.0.1:8080`.
    pub listen: Option<String>,
    /// Admin API listener address, or `off`; default `127.0.0.1:8081`.
    pub admin_listen: Option<String>,
    /// Certificate chain (PEM) of the MCP listener: with `tls_key`, it serves HTTPS. Reloaded
    /// when the file changes.
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of the MCP listener's certificate.
    pub tls_key: Option<PathBuf>,
    /// Certificate chain (PEM) of the admin listener: with `admin_tls_key`, it serves HTTPS.
    pub admin_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of the admin listener's certificate.
    pub admin_tls_key: Option<PathBuf>,
    /// The admin API token itself (prefer `admin_token_env`).
    pub admin_token: Option<String>,
    /// Environment variable that holds the admin token; default `MCPGW_ADMIN_TOKEN`.
    pub admin_token_env: Option<String>,
    /// The URL clients reach the gateway at, when it sits behind a proxy or TLS terminator: named
    /// in the RFC 9728 metadata and accepted as an `Origin` and `Host`.
    pub public_url: Option<String>,
    /// Browser origins (`https://app.example.com`) allowed besides the gateway's own.
    pub allowed_origins: Option<Vec<String>>,
    /// Time to connect to an upstream, in milliseconds; default 5000.
    pub upstream_connect_timeout_ms: Option<u64>,
    /// Time for an upstream to start answering (response headers), in milliseconds; default 30000.
    pub upstream_timeout_ms: Option<u64>,
    /// An unknown `kid` refetches an identity provider's keys at most this often, in
    /// milliseconds; default 10000.
    pub idp_min_refresh_ms: Option<u64>,
    /// Identity providers' keys are refetched this long after the last fetch, in milliseconds;
    /// default 900000 (15 minutes).
    pub idp_refresh_ms: Option<u64>,
    /// Keys keep working this long after they were fetched while their provider is unreachable,
    /// in milliseconds; default 86400000 (24 hours).
    pub idp_keys_max_age_ms: Option<u64>,
    /// Policy engine settings.
    #[serde(default)]
    pub policy: RawPolicy,
    /// Audit trail settings.
    #[serde(default)]
    pub audit: RawAudit,
}

/// `[audit]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// Keep the audit trail; default true.
    pub enabled: Option<bool>,
    /// Records that may wait for the writer, calls in flight included; default 10000.
    pub queue_capacity: Option<usize>,
    /// Most records per write transaction; default 1000.
    pub batch_size: Option<usize>,
    /// `refuse` (default: a full queue refuses new calls) or `drop` (calls run, records are
    /// dropped and counted).
    pub when_full: Option<WhenFull>,
    /// Longest a shutdown waits for the trail to be written, in milliseconds; default 30000.
    pub drain_timeout_ms: Option<u64>,
}

/// `[policy]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Directory of extra policy modules (`*.wasm`, `NAME.toml` settings beside each).
    pub dir: Option<PathBuf>,
    /// Per-module evaluation deadline in milliseconds; default 10.
    pub timeout_ms: Option<u64>,
    /// Per-instance memory cap in MiB; default 16.
    pub memory_mb: Option<u64>,
    /// `warm` (default) or `fresh`.
    pub instance_strategy: Option<InstanceStrategy>,
    /// Idle warm instances kept per module; default 32.
    pub max_idle_instances: Option<usize>,
    /// Settings of the built-in allowlist, for example `workspace_token = "grants"`.
    pub allowlist: Option<toml::Table>,
    /// Tool pinning: `enforce` (default: a tool whose definition changed is hidden until an
    /// admin approves it), `warn` (recorded and logged only) or `off`. Env `MCPGW_PINNING`.
    pub pinning: Option<crate::catalog::PinMode>,
    /// How long a flow's labels last after its last new label, in seconds; default 3600.
    pub flow_ttl_s: Option<u64>,
    /// A call of a tool last listed longer ago than this lists its server again first (to see a
    /// changed definition), in seconds; default 60.
    pub tool_recheck_s: Option<u64>,
}

/// Session-aware policy: flow labels and tool pinning (`[policy]` in the config file).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// What a changed tool definition does.
    pub pinning: crate::catalog::PinMode,
    /// Lifetime of a flow's labels after its last new label.
    pub flow_ttl: Duration,
    /// Age after which a call lists its tool's server again.
    pub tool_recheck: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            pinning: crate::catalog::PinMode::Enforce,
            flow_ttl: Duration::from_secs(3600),
            tool_recheck: Duration::from_secs(60),
        }
    }
}

/// A secret that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value, for comparison.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Database URL.
    pub database: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// MCP listener.
    pub listen: SocketAddr,
    /// Admin API listener; `None` when off.
    pub admin_listen: Option<SocketAddr>,
    /// TLS on the MCP listener; plain HTTP when `None`.
    pub tls: Option<CertFiles>,
    /// TLS on the admin listener; plain HTTP when `None`.
    pub admin_tls: Option<CertFiles>,
    /// Admin API token; required when the admin listener is on.
    pub admin_token: Option<Secret>,
    /// The URL clients reach the gateway at (behind a proxy), if set.
    pub public_url: Option<String>,
    /// Extra browser origins allowed on the MCP endpoints.
    pub allowed_origins: Vec<String>,
    /// Time to connect to an upstream.
    pub upstream_connect_timeout: Duration,
    /// Time for an upstream to send its response headers (streams may then run longer).
    pub upstream_timeout: Duration,
    /// Policy engine.
    pub policy: PolicyConfig,
    /// Audit trail.
    pub audit: AuditConfig,
    /// Identity providers' key fetching.
    pub idp: crate::oidc::Settings,
    /// Flow labels and tool pinning.
    pub session: SessionConfig,
}

/// Reads `MCPGW_<name>`; an empty value counts as unset.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A listener's certificate and key: both or neither.
fn cert_files(
    field: &'static str,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<CertFiles>, Error> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(CertFiles { cert, key })),
        (None, None) => Ok(None),
        _ => Err(Error::Invalid(
            field,
            "give both the certificate and the key, or neither".into(),
        )),
    }
}

fn parse_addr(field: &'static str, value: &str) -> Result<SocketAddr, Error> {
    value
        .parse()
        .map_err(|e| Error::Invalid(field, format!("{value:?}: {e}")))
}

impl Config {
    /// Loads `path` (or `mcpgw.toml` in the working directory if it exists, or nothing), then
    /// applies environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Config, Error> {
        let raw = match path {
            Some(p) => Self::read(p)?,
            None if Path::new("mcpgw.toml").exists() => Self::read(Path::new("mcpgw.toml"))?,
            None => RawConfig::default(),
        };
        Config::try_from(raw)
    }

    fn read(path: &Path) -> Result<RawConfig, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Read(path.display().to_string(), e.to_string()))?;
        toml::from_str(&text)
            .map_err(|e| Error::Parse(path.display().to_string(), e.message().to_owned()))
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = Error;

    fn try_from(raw: RawConfig) -> Result<Config, Error> {
        let data_dir = env("MCPGW_DATA_DIR")
            .map(PathBuf::from)
            .or(raw.data_dir)
            .unwrap_or_else(|| PathBuf::from("mcpgw-data"));
        let database = env("MCPGW_DATABASE_URL")
            .or(raw.database)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("mcpgw.db").display()));
        let listen = parse_addr(
            "listen",
            &env("MCPGW_LISTEN")
                .or(raw.listen)
                .unwrap_or_else(|| "127.0.0.1:8080".into()),
        )?;
        let admin_listen = match env("MCPGW_ADMIN_LISTEN").or(raw.admin_listen).as_deref() {
            Some("off") => None,
            Some(a) => Some(parse_addr("admin_listen", a)?),
            None => Some(parse_addr("admin_listen", "127.0.0.1:8081")?),
        };
        let tls = cert_files(
            "tls_cert / tls_key",
            env("MCPGW_TLS_CERT").map(PathBuf::from).or(raw.tls_cert),
            env("MCPGW_TLS_KEY").map(PathBuf::from).or(raw.tls_key),
        )?;
        let admin_tls = cert_files(
            "admin_tls_cert / admin_tls_key",
            env("MCPGW_ADMIN_TLS_CERT")
                .map(PathBuf::from)
                .or(raw.admin_tls_cert),
            env("MCPGW_ADMIN_TLS_KEY")
                .map(PathBuf::from)
                .or(raw.admin_tls_key),
        )?;
        let token_env = raw
            .admin_token_env
            .unwrap_or_else(|| "MCPGW_ADMIN_TOKEN".into());
        let admin_token = env(&token_env).or(raw.admin_token).map(Secret);
        if let Some(t) = &admin_token
            && t.0.len() < 16
        {
            return Err(Error::Invalid(
                "admin_token",
                "must be at least 16 characters".into(),
            ));
        }
        let p = raw.policy;
        let session_defaults = SessionConfig::default();
        let pinning = match env("MCPGW_PINNING") {
            Some(v) => {
                serde_json::from_value(serde_json::Value::String(v.clone())).map_err(|_| {
                    Error::Invalid(
                        "MCPGW_PINNING",
                        format!("{v:?}: expected enforce, warn or off"),
                    )
                })?
            }
            None => p.pinning.unwrap_or(session_defaults.pinning),
        };
        let session = SessionConfig {
            pinning,
            flow_ttl: p
                .flow_ttl_s
                .map(Duration::from_secs)
                .unwrap_or(session_defaults.flow_ttl),
            tool_recheck: p
                .tool_recheck_s
                .map(Duration::from_secs)
                .unwrap_or(session_defaults.tool_recheck),
        };
        if session.flow_ttl.is_zero() || session.tool_recheck.is_zero() {
            return Err(Error::Invalid(
                "policy.flow_ttl_s / policy.tool_recheck_s",
                "must be at least 1".into(),
            ));
        }
        let defaults = Limits::default();
        let timeout =
            Duration::from_millis(p.timeout_ms.unwrap_or(defaults.timeout.as_millis() as u64));
        let memory_bytes = p
            .memory_mb
            .map(|m| m as usize * 1024 * 1024)
            .unwrap_or(defaults.memory_bytes);
        match (timeout.as_millis(), memory_bytes) {
            (0, _) | (1001.., _) => {
                return Err(Error::Invalid(
                    "policy.timeout_ms",
                    "must be 1..=1000".into(),
                ));
            }
            (_, m) if !(1024 * 1024..=1024 * 1024 * 1024).contains(&m) => {
                return Err(Error::Invalid(
                    "policy.memory_mb",
                    "must be 1..=1024".into(),
                ));
            }
            _ => {}
        }
        let policy = PolicyConfig {
            dir: env("MCPGW_POLICY_DIR").map(PathBuf::from).or(p.dir),
            cache_dir: Some(data_dir.join("policy-cache")),
            limits: Limits {
                timeout,
                memory_bytes,
                strategy: p.instance_strategy.unwrap_or(defaults.strategy),
                max_idle_instances: p.max_idle_instances.unwrap_or(defaults.max_idle_instances),
            },
            allowlist_settings: serde_json::to_value(p.allowlist.unwrap_or_default())
                .map_err(|e| Error::Invalid("policy.allowlist", e.to_string()))?,
            ..PolicyConfig::default()
        };
        let public_url = env("MCPGW_PUBLIC_URL").or(raw.public_url);
        let allowed_origins = raw.allowed_origins.unwrap_or_default();
        crate::mcp::Origins::new(listen, public_url.as_deref(), &allowed_origins)
            .map_err(|e| Error::Invalid("public_url / allowed_origins", e))?;
        let upstream_connect_timeout =
            Duration::from_millis(raw.upstream_connect_timeout_ms.unwrap_or(5_000));
        let upstream_timeout = Duration::from_millis(raw.upstream_timeout_ms.unwrap_or(30_000));
        let idp_defaults = crate::oidc::Settings::default();
        let ms = |v: Option<u64>, d: Duration| v.map(Duration::from_millis).unwrap_or(d);
        let idp = crate::oidc::Settings {
            min_refresh: ms(raw.idp_min_refresh_ms, idp_defaults.min_refresh),
            refresh_every: ms(raw.idp_refresh_ms, idp_defaults.refresh_every),
            max_age: ms(raw.idp_keys_max_age_ms, idp_defaults.max_age),
            fetch_timeout: idp_defaults.fetch_timeout,
        };
        if idp.min_refresh.is_zero()
            || idp.min_refresh > idp.refresh_every
            || idp.refresh_every > idp.max_age
        {
            return Err(Error::Invalid(
                "idp_min_refresh_ms / idp_refresh_ms / idp_keys_max_age_ms",
                "must be 0 < min_refresh <= refresh <= keys_max_age".into(),
            ));
        }
        let a = raw.audit;
        let audit_defaults = AuditConfig::default();
        let audit = AuditConfig {
            enabled: env("MCPGW_AUDIT")
                .map(|v| v != "off")
                .or(a.enabled)
                .unwrap_or(audit_defaults.enabled),
            queue_capacity: a.queue_capacity.unwrap_or(audit_defaults.queue_capacity),
            batch_size: a.batch_size.unwrap_or(audit_defaults.batch_size),
            when_full: a.when_full.unwrap_or(audit_defaults.when_full),
            drain_timeout: a
                .drain_timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(audit_defaults.drain_timeout),
        };
        if !(1..=10_000_000).contains(&audit.queue_capacity) {
            return Err(Error::Invalid(
                "audit.queue_capacity",
                "must be 1..=10000000".into(),
            ));
        }
        if !(1..=10_000).contains(&audit.batch_size) {
            return Err(Error::Invalid(
                "audit.batch_size",
                "must be 1..=10000".into(),
            ));
        }
        Ok(Config {
            database,
            data_dir,
            listen,
            admin_listen,
            tls,
            admin_tls,
            admin_token,
            public_url,
            allowed_origins,
            upstream_connect_timeout,
            upstream_timeout,
            policy,
            audit,
            idp,
            session,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_tls_takes_both_files_or_neither() {
        let raw: RawConfig = toml::from_str(
            "tls_cert = \"/etc/mcpgw/gw.crt\"\ntls_key = \"/etc/mcpgw/gw.key\"\n\
             admin_tls_cert = \"/etc/mcpgw/admin.crt\"\nadmin_tls_key = \"/etc/mcpgw/admin.key\"\n",
        )
        .expect("parse");
        let config = Config::try_from(raw).expect("valid");
        assert_eq!(
            config.tls,
            Some(CertFiles {
                cert: "/etc/mcpgw/gw.crt".into(),
                key: "/etc/mcpgw/gw.key".into()
            })
        );
        assert_eq!(
            config.admin_tls.map(|f| f.cert),
            Some("/etc/mcpgw/admin.crt".into())
        );
        let raw: RawConfig = toml::from_str("tls_cert = \"/c.pem\"\n").expect("parse");
        let e = Config::try_from(raw).expect_err("a certificate without its key");
        assert_eq!(
            e.to_string(),
            "invalid tls_cert / tls_key: give both the certificate and the key, or neither"
        );
        let raw: RawConfig = toml::from_str("admin_tls_key = \"/k.pem\"\n").expect("parse");
        assert!(Config::try_from(raw).is_err());
        assert!(
            Config::try_from(RawConfig::default())
                .expect("defaults")
                .tls
                .is_none()
        );
    }
}

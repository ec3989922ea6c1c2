//! How the gateway reaches one upstream server, as stored in `servers.transport` (JSON): over
//! HTTP(S) with optional TLS files, or by spawning a local process that speaks MCP on stdio,
//! fenced by the gateway. Only names of secrets are stored (an environment variable, a file), never
//! their values; [`Transport::redacted`] is what listings show.

use super::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The transport of one server.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Transport {
    /// Streamable HTTP at the server's URL (`http://` or `https://`).
    Http {
        /// TLS settings for an `https://` URL.
        #[serde(default, skip_serializing_if = "TlsFiles::is_empty")]
        tls: TlsFiles,
    },
    /// A local process speaking MCP on stdin/stdout.
    Stdio(StdioSpec),
}

impl Default for Transport {
    fn default() -> Self {
        Transport::Http {
            tls: TlsFiles::default(),
        }
    }
}

impl Transport {
    /// The stdio spec, if this is a stdio server.
    pub fn stdio(&self) -> Option<&StdioSpec> {
        match self {
            Transport::Stdio(s) => Some(s),
            Transport::Http { .. } => None,
        }
    }

    /// The TLS files of an HTTP server.
    pub fn tls(&self) -> Option<&TlsFiles> {
        match self {
            Transport::Http { tls } => Some(tls),
            Transport::Stdio(_) => None,
        }
    }

    /// Checks every part (paths absolute, names valid, reserved variables refused).
    pub fn validate(&self) -> Result<()> {
        match self {
            Transport::Http { tls } => tls.validate(),
            Transport::Stdio(s) => s.validate(),
        }
    }
}

impl Transport {
    /// What listings show: paths, names and where each value comes from, never a value.
    pub fn redacted(&self) -> TransportView {
        match self {
            Transport::Http { tls } => TransportView::Http { tls: tls.clone() },
            Transport::Stdio(s) => TransportView::Stdio {
                command: s.command.clone(),
                args: s.args.clone(),
                env: s
                    .env
                    .iter()
                    .map(|e| SourceView {
                        name: e.name.clone(),
                        source: e.source(),
                    })
                    .collect(),
                cwd: s.cwd.clone(),
                fence: s.fence.clone(),
            },
        }
    }
}

/// A named value as listed: its name and where it comes from (`literal`, `env:VAR`,
/// `file:PATH`), never the value itself.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SourceView {
    /// The header's or variable's name.
    pub name: String,
    /// Where the value comes from.
    pub source: String,
}

/// A transport as listed (`server list`, `GET /v1/workspaces/{ws}/servers`): no secret values.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TransportView {
    /// Streamable HTTP at the server's URL.
    Http {
        /// TLS files of an `https://` server.
        #[serde(skip_serializing_if = "TlsFiles::is_empty")]
        tls: TlsFiles,
    },
    /// A spawned process.
    Stdio {
        /// The program.
        command: String,
        /// Its arguments.
        args: Vec<String>,
        /// Its environment, names and sources.
        env: Vec<SourceView>,
        /// Its working directory, when set.
        #[serde(skip_serializing_if = "Option::is_none")]
        cwd: Option<PathBuf>,
        /// The fence around it.
        fence: Fence,
    },
    /// The stored transport does not parse (written by a newer mcpgw?): the gateway leaves the
    /// server out until it is removed and added again.
    Unreadable,
}

/// PEM files for an HTTPS upstream. Paths are read when the connection is made (and re-read
/// when they change), so rotating a file needs no restart.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// CA certificates that replace the platform's trust roots for this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// Client private key (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
}

impl TlsFiles {
    /// No TLS setting given.
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.client_cert.is_none() && self.client_key.is_none()
    }

    fn validate(&self) -> Result<()> {
        for (what, p) in [
            ("ca_file", &self.ca_file),
            ("client_cert", &self.client_cert),
            ("client_key", &self.client_key),
        ] {
            if let Some(p) = p {
                absolute(what, p)?;
            }
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(Error::Invalid(
                "client_cert and client_key go together (mTLS needs both)".into(),
            ));
        }
        Ok(())
    }
}

/// A stdio server: what to run and how it is fenced.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StdioSpec {
    /// The program (a name looked up on the child's `PATH`, or an absolute path).
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// The environment the child gets besides `PATH`, `HOME` and `TMPDIR`.
    #[serde(default)]
    pub env: Vec<EnvSpec>,
    /// Working directory (absolute); the server's home directory when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// The fence around the process.
    #[serde(default)]
    pub fence: Fence,
}

impl StdioSpec {
    fn validate(&self) -> Result<()> {
        if self.command.is_empty() || self.command.contains('\0') {
            return Err(Error::Invalid("a stdio server needs a command".into()));
        }
        if self.args.iter().any(|a| a.contains('\0')) {
            return Err(Error::Invalid("arguments cannot hold NUL".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for e in &self.env {
            e.validate()?;
            if !seen.insert(e.name.as_str()) {
                return Err(Error::Invalid(format!(
                    "environment variable {} given twice",
                    e.name
                )));
            }
        }
        if let Some(cwd) = &self.cwd {
            absolute("cwd", cwd)?;
        }
        self.fence.validate()
    }
}

/// One environment variable of a stdio child: a literal, a variable of the gateway's own
/// environment, or the contents of a file (read at spawn).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EnvSpec {
    /// The variable's name in the child.
    pub name: String,
    /// A literal value (stored: not for secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The gateway environment variable whose value the child gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// A file whose contents (trailing newline removed) the child gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

/// Where a secret-bearing value comes from, for listings.
pub fn source_label(value: Option<&str>, env: Option<&str>, file: Option<&Path>) -> String {
    match (value, env, file) {
        (Some(_), _, _) => "literal".into(),
        (None, Some(v), _) => format!("env:{v}"),
        (None, None, Some(f)) => format!("file:{}", f.display()),
        _ => "none".into(),
    }
}

/// Variables the gateway sets itself in every child.
const RESERVED: [&str; 3] = ["PATH", "HOME", "TMPDIR"];

impl EnvSpec {
    /// Where the value comes from (`literal`, `env:VAR`, `file:PATH`): what listings show.
    pub fn source(&self) -> String {
        source_label(
            self.value.as_deref(),
            self.from.as_deref(),
            self.file.as_deref(),
        )
    }

    fn validate(&self) -> Result<()> {
        if !valid_env_name(&self.name) {
            return Err(Error::Invalid(format!(
                "invalid environment variable name {:?}",
                self.name
            )));
        }
        if RESERVED.contains(&self.name.as_str()) {
            return Err(Error::Invalid(format!(
                "{} is set by the gateway for every stdio server",
                self.name
            )));
        }
        let given = [
            self.value.is_some(),
            self.from.is_some(),
            self.file.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given != 1 {
            return Err(Error::Invalid(format!(
                "environment variable {}: give exactly one of value, from, file",
                self.name
            )));
        }
        if let Some(from) = &self.from
            && !valid_env_name(from)
        {
            return Err(Error::Invalid(format!(
                "invalid environment variable name {from:?}"
            )));
        }
        if let Some(v) = &self.value
            && v.contains('\0')
        {
            return Err(Error::Invalid(format!(
                "environment variable {}: value holds NUL",
                self.name
            )));
        }
        if let Some(f) = &self.file {
            absolute("env file", f)?;
        }
        Ok(())
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
pub fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// How `--env`, `--env-from` and `--env-file` are written.
#[derive(Clone, Copy, Debug)]
pub enum EnvKind {
    /// `K=V`.
    Literal,
    /// `K=GATEWAY_VAR`.
    From,
    /// `K=/path/to/file`.
    File,
}

/// Parses `K=...` into an env spec of `kind`.
pub fn parse_env(spec: &str, kind: EnvKind) -> Result<EnvSpec> {
    let (name, rest) = spec
        .split_once('=')
        .ok_or_else(|| Error::Invalid(format!("invalid environment {spec:?}: expected K=...")))?;
    let mut e = EnvSpec {
        name: name.to_owned(),
        value: None,
        from: None,
        file: None,
    };
    match kind {
        EnvKind::Literal => e.value = Some(rest.to_owned()),
        EnvKind::From => e.from = Some(rest.to_owned()),
        EnvKind::File => e.file = Some(PathBuf::from(rest)),
    }
    e.validate()?;
    Ok(e)
}

/// The fence around a stdio process. On by default; each step the kernel refuses is logged and
/// reported by `mcpgw server status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Fence {
    /// `false` turns every step off (the child still gets the cleared environment).
    pub enabled: bool,
    /// Give the child its own, empty network namespace.
    pub no_network: bool,
    /// Paths the child may read (Landlock). System directories are added by the gateway.
    pub read_only: Vec<PathBuf>,
    /// Paths the child may read and write (Landlock), besides its home directory.
    pub read_write: Vec<PathBuf>,
    /// Data segment limit (RLIMIT_DATA: heap and private mappings), MiB.
    pub memory_mb: u64,
    /// Processes (RLIMIT_NPROC).
    pub max_processes: u64,
    /// Open files (RLIMIT_NOFILE).
    pub max_open_files: u64,
    /// CPU seconds (RLIMIT_CPU).
    pub cpu_seconds: u64,
    /// The user the child runs as when the gateway runs as root (name or uid).
    pub run_as: String,
}

impl Default for Fence {
    fn default() -> Self {
        Fence {
            enabled: true,
            no_network: false,
            read_only: Vec::new(),
            read_write: Vec::new(),
            memory_mb: 1024,
            max_processes: 512,
            max_open_files: 1024,
            cpu_seconds: 3600,
            run_as: "nobody".into(),
        }
    }
}

impl Fence {
    fn validate(&self) -> Result<()> {
        for p in self.read_only.iter().chain(&self.read_write) {
            absolute("fence path", p)?;
        }
        if self.memory_mb == 0
            || self.max_processes == 0
            || self.max_open_files == 0
            || self.cpu_seconds == 0
        {
            return Err(Error::Invalid("resource limits must be positive".into()));
        }
        if self.run_as.is_empty() {
            return Err(Error::Invalid("run_as needs a user name or uid".into()));
        }
        Ok(())
    }
}

fn absolute(what: &str, p: &Path) -> Result<()> {
    if p.is_absolute() {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{what} must be an absolute path, not {}",
            p.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_specs_parse_and_refuse_reserved_names() {
        let e = parse_env("TOKEN=GH_TOKEN", EnvKind::From).unwrap();
        assert_eq!(e.from.as_deref(), Some("GH_TOKEN"));
        assert_eq!(e.source(), "env:GH_TOKEN");
        assert!(parse_env("PATH=/bin", EnvKind::Literal).is_err());
        assert!(parse_env("A=rel/file", EnvKind::File).is_err());
        assert!(parse_env("1A=x", EnvKind::Literal).is_err());
        assert!(parse_env("novalue", EnvKind::Literal).is_err());
    }

    #[test]
    fn transport_round_trips_as_json() {
        let t = Transport::Stdio(StdioSpec {
            command: "npx".into(),
            args: vec!["-y".into(), "x".into()],
            env: vec![parse_env("K=V", EnvKind::Literal).unwrap()],
            cwd: None,
            fence: Fence::default(),
        });
        let s = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Transport>(&s).unwrap(), t);
        let http: Transport = serde_json::from_str(r#"{"kind":"http"}"#).unwrap();
        assert_eq!(http, Transport::default());
    }
}

//! Workspaces, servers, members, tokens, grants and enforcement, over the store.

use super::{Command, OnOff, print_json, time};
use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use mcpgw::store::transport::{self, EnvKind};
use mcpgw::store::{self, Fence, NewServer, StdioSpec, Store, TlsFiles, TransportView};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum WorkspaceCmd {
    /// Create a workspace (enforcement starts off).
    Create { name: String },
    /// Delete a workspace with its servers, members, tokens and grants.
    Delete { name: String },
    /// List workspaces.
    List,
}

#[derive(Subcommand)]
pub enum ServerCmd {
    /// Add an upstream server: an http(s):// URL, or a local process with --stdio -- COMMAND.
    Add {
        workspace: String,
        name: String,
        /// The server's Streamable HTTP endpoint, http:// or https:// (not with --stdio).
        #[arg(required_unless_present = "stdio")]
        url: Option<String>,
        /// A header to send upstream: 'Name: value' (stored as given).
        #[arg(
            long = "header",
            value_name = "'NAME: VALUE'",
            conflicts_with = "stdio"
        )]
        headers: Vec<String>,
        /// A header whose value is read from an environment variable: 'Name: ENV_VAR' (only the name is stored).
        #[arg(
            long = "header-env",
            value_name = "'NAME: VAR'",
            conflicts_with = "stdio"
        )]
        header_envs: Vec<String>,
        /// A header whose value is a file's contents, read when sending: 'Name: /path' (only the path is stored).
        #[arg(
            long = "header-file",
            value_name = "'NAME: PATH'",
            conflicts_with = "stdio"
        )]
        header_files: Vec<String>,
        /// What goes before this server's tool and prompt names on /mcp (default: NAME_; '' keeps
        /// them unchanged). Two servers of a workspace cannot share one.
        #[arg(long)]
        prefix: Option<String>,
        #[command(flatten)]
        tls: TlsArgs,
        #[command(flatten)]
        stdio: Box<StdioArgs>,
    },
    /// Remove an upstream server.
    Remove { workspace: String, name: String },
    /// Show the processes of a workspace's stdio servers (pid, uptime, restarts, last exit, the
    /// fence in place), asked of the running gateway's admin API.
    Status {
        workspace: String,
        /// The admin API (default: http://{admin_listen} from the configuration).
        #[arg(long, env = "MCPGW_ADMIN_URL")]
        admin_url: Option<String>,
    },
    /// List a workspace's servers (where each header or variable comes from, never its value).
    List { workspace: String },
}

/// TLS files of an https:// server. Relative paths are taken from the current directory.
#[derive(Args)]
pub struct TlsArgs {
    /// CA certificates (PEM) trusted for this server instead of the system's roots.
    #[arg(long, value_name = "PEM", conflicts_with = "stdio")]
    ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS; with --client-key.
    #[arg(
        long,
        value_name = "PEM",
        requires = "client_key",
        conflicts_with = "stdio"
    )]
    client_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS; with --client-cert.
    #[arg(
        long,
        value_name = "PEM",
        requires = "client_cert",
        conflicts_with = "stdio"
    )]
    client_key: Option<PathBuf>,
}

/// A server spawned as a local process. Relative paths are taken from the current directory.
#[derive(Args)]
pub struct StdioArgs {
    /// Run the server as a local process speaking MCP on stdin/stdout: the command after `--`.
    #[arg(long, conflicts_with = "url", requires = "program")]
    stdio: bool,
    /// An environment variable of the process: K=V (stored as given: not for secrets).
    #[arg(long = "env", value_name = "K=V", requires = "stdio")]
    env: Vec<String>,
    /// An environment variable of the process taken from the gateway's own: K=GATEWAY_VAR (only
    /// the name is stored).
    #[arg(long = "env-from", value_name = "K=VAR", requires = "stdio")]
    env_from: Vec<String>,
    /// An environment variable of the process read from a file at spawn: K=PATH (only the path
    /// is stored).
    #[arg(long = "env-file", value_name = "K=PATH", requires = "stdio")]
    env_file: Vec<String>,
    /// Working directory of the process (default: its own home directory).
    #[arg(long, value_name = "DIR", requires = "stdio")]
    cwd: Option<PathBuf>,
    /// Run it without the fence (no namespaces, Landlock, limits or user change).
    #[arg(long, requires = "stdio", conflicts_with_all = [
        "no_network", "read_only", "read_write", "memory_mb", "max_processes", "max_open_files",
        "cpu_seconds", "run_as",
    ])]
    no_fence: bool,
    /// Give it no network (its own empty network namespace).
    #[arg(long, requires = "stdio")]
    no_network: bool,
    /// A path it may read (repeatable; system directories are added).
    #[arg(long = "read-only", value_name = "PATH", requires = "stdio")]
    read_only: Vec<PathBuf>,
    /// A path it may read and write (repeatable; besides its home directory).
    #[arg(long = "read-write", value_name = "PATH", requires = "stdio")]
    read_write: Vec<PathBuf>,
    /// Its data segment limit, MiB [default: 1024].
    #[arg(long, value_name = "N", requires = "stdio")]
    memory_mb: Option<u64>,
    /// Its process limit [default: 512].
    #[arg(long, value_name = "N", requires = "stdio")]
    max_processes: Option<u64>,
    /// Its open-file limit [default: 1024].
    #[arg(long, value_name = "N", requires = "stdio")]
    max_open_files: Option<u64>,
    /// Its CPU time limit, seconds [default: 3600].
    #[arg(long, value_name = "N", requires = "stdio")]
    cpu_seconds: Option<u64>,
    /// The user it runs as when the gateway runs as root [default: nobody].
    #[arg(long, value_name = "USER", requires = "stdio")]
    run_as: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND", requires = "stdio")]
    program: Vec<String>,
}

/// `p` made absolute against the current directory (not resolved: a symlink stays one).
fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("path {:?}", p.display().to_string()))
}

/// `KEY{sep}PATH` with the path made absolute; anything else unchanged (the parser says why).
fn absolute_after(spec: &str, sep: char) -> Result<String> {
    match spec.split_once(sep) {
        Some((key, path)) if !path.trim().is_empty() => {
            let path = absolute(Path::new(path.trim()))?;
            Ok(format!("{key}{sep}{}", path.display()))
        }
        _ => Ok(spec.to_owned()),
    }
}

impl TlsArgs {
    fn files(self) -> Result<Option<TlsFiles>> {
        let abs = |p: Option<PathBuf>| p.as_deref().map(absolute).transpose();
        let tls = TlsFiles {
            ca_file: abs(self.ca_file)?,
            client_cert: abs(self.client_cert)?,
            client_key: abs(self.client_key)?,
        };
        Ok((!tls.is_empty()).then_some(tls))
    }
}

impl StdioArgs {
    fn spec(self) -> Result<Option<StdioSpec>> {
        if !self.stdio {
            return Ok(None);
        }
        let mut program = self.program.into_iter();
        let Some(mut command) = program.next() else {
            bail!("--stdio needs the command after `--`");
        };
        // `./server` or `bin/server` means here, not the child's working directory.
        if command.contains('/') && !command.starts_with('/') {
            command = absolute(Path::new(&command))?.display().to_string();
        }
        let mut env = Vec::new();
        for e in &self.env {
            env.push(transport::parse_env(e, EnvKind::Literal)?);
        }
        for e in &self.env_from {
            env.push(transport::parse_env(e, EnvKind::From)?);
        }
        for e in &self.env_file {
            env.push(transport::parse_env(
                &absolute_after(e, '=')?,
                EnvKind::File,
            )?);
        }
        let abs_all = |ps: Vec<PathBuf>| ps.iter().map(|p| absolute(p)).collect::<Result<Vec<_>>>();
        let defaults = Fence::default();
        let fence = Fence {
            enabled: !self.no_fence,
            no_network: self.no_network,
            read_only: abs_all(self.read_only)?,
            read_write: abs_all(self.read_write)?,
            memory_mb: self.memory_mb.unwrap_or(defaults.memory_mb),
            max_processes: self.max_processes.unwrap_or(defaults.max_processes),
            max_open_files: self.max_open_files.unwrap_or(defaults.max_open_files),
            cpu_seconds: self.cpu_seconds.unwrap_or(defaults.cpu_seconds),
            run_as: self.run_as.unwrap_or(defaults.run_as),
        };
        Ok(Some(StdioSpec {
            command,
            args: program.collect(),
            env,
            cwd: self.cwd.as_deref().map(absolute).transpose()?,
            fence,
        }))
    }
}

/// A command line as one would type it again: arguments with spaces or quotes are quoted.
fn command_line(command: &str, args: &[String]) -> String {
    std::iter::once(command)
        .chain(args.iter().map(String::as_str))
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
                format!("{a:?}")
            } else {
                a.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Subcommand)]
pub enum MemberCmd {
    /// Add a member.
    Add { workspace: String, member: String },
    /// Remove a member, revoking all their tokens and grants.
    Remove { workspace: String, member: String },
    /// List a workspace's members.
    List { workspace: String },
    /// Disable a member: every credential of theirs is refused (401) until they are enabled.
    Disable { workspace: String, member: String },
    /// Enable a disabled member again.
    Enable { workspace: String, member: String },
    /// Add members (with grants and roles) from a CSV file (header: member,grants,roles; lists
    /// separated by spaces or `;`) or a JSONL file (`{"member","grants":[…],"roles":[…]}` per
    /// line). Checked whole before anything is written; existing members gain what is listed.
    Import {
        workspace: String,
        /// The file; `.jsonl` or `.ndjson` is JSONL, anything else CSV.
        file: std::path::PathBuf,
        /// Issue a token for every listed member and write them (CSV: member,token_id,token)
        /// to this new file, readable by its owner only. It is the only copy.
        #[arg(long, value_name = "OUT")]
        issue_tokens: Option<std::path::PathBuf>,
        /// Lifetime of the issued tokens: 90s, 15m, 12h, 30d, 4w.
        #[arg(long, requires = "issue_tokens")]
        expires: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum RoleCmd {
    /// Create a role: a named set of `server:tool` patterns.
    Create {
        workspace: String,
        role: String,
        patterns: Vec<String>,
    },
    /// Delete a role; its members lose what it granted.
    Delete { workspace: String, role: String },
    /// Add patterns to a role.
    Grant {
        workspace: String,
        role: String,
        #[arg(required = true)]
        patterns: Vec<String>,
    },
    /// Take patterns away from a role.
    Revoke {
        workspace: String,
        role: String,
        #[arg(required = true)]
        patterns: Vec<String>,
    },
    /// Assign a role to a member.
    Assign {
        workspace: String,
        member: String,
        role: String,
    },
    /// Take a role away from a member.
    Unassign {
        workspace: String,
        member: String,
        role: String,
    },
    /// List a workspace's roles with their patterns and members.
    List { workspace: String },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Issue a token (for MEMBER, or the workspace token); prints the token alone, once.
    Issue {
        workspace: String,
        member: Option<String>,
        /// Lifetime: 90s, 15m, 12h, 30d, 4w.
        #[arg(long)]
        expires: Option<String>,
    },
    /// List a workspace's tokens (ids and prefixes, never the tokens).
    List { workspace: String },
    /// Revoke a token by id.
    Revoke { token_id: String },
}

#[derive(Subcommand)]
pub enum GrantCmd {
    /// Grant patterns to a member.
    Add {
        workspace: String,
        member: String,
        #[arg(required = true)]
        patterns: Vec<String>,
    },
    /// Take patterns away from a member.
    Remove {
        workspace: String,
        member: String,
        #[arg(required = true)]
        patterns: Vec<String>,
    },
    /// List grants of a workspace, or of one member.
    List {
        workspace: String,
        member: Option<String>,
    },
}

/// A new file only its owner can read, for issued tokens.
fn token_file(path: &std::path::Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {} (it must not exist yet)", path.display()))
}

/// Runs an identity command.
pub async fn run(store: &Store, command: Command, json: bool) -> Result<ExitCode> {
    match command {
        Command::Workspace(WorkspaceCmd::Create { name }) => {
            store.workspace_create(&name).await?;
            println!(
                "created workspace {name} (enforcement off: denials are logged as would-deny)"
            );
        }
        Command::Workspace(WorkspaceCmd::Delete { name }) => {
            store.workspace_delete(&name).await?;
            println!("deleted workspace {name}");
        }
        Command::Workspace(WorkspaceCmd::List) => {
            let list = store.workspace_list().await?;
            if json {
                print_json(&list)?;
            } else {
                println!("{:<24} {:<8} CREATED", "NAME", "ENFORCE");
                for w in list {
                    println!(
                        "{:<24} {:<8} {}",
                        w.name,
                        if w.enforce { "on" } else { "off" },
                        time(Some(w.created_ms))
                    );
                }
            }
        }
        Command::Server(ServerCmd::Add {
            workspace,
            name,
            url,
            headers,
            header_envs,
            header_files,
            prefix,
            tls,
            stdio,
        }) => {
            let mut specs = Vec::new();
            for h in &headers {
                specs.push(store::parse_header(h, false)?);
            }
            for h in &header_envs {
                specs.push(store::parse_header(h, true)?);
            }
            for h in &header_files {
                specs.push(store::parse_header_file(&absolute_after(h, ':')?)?);
            }
            let spec = NewServer {
                name: name.clone(),
                url,
                headers: specs,
                prefix,
                tls: tls.files()?,
                stdio: stdio.spec()?,
            };
            store.server_add_spec(&workspace, spec).await?;
            println!("added server {name} to {workspace}");
        }
        Command::Server(ServerCmd::Remove { workspace, name }) => {
            store.server_remove(&workspace, &name).await?;
            println!("removed server {name} from {workspace}");
        }
        Command::Server(ServerCmd::List { workspace }) => {
            let list = store.server_list(&workspace).await?;
            if json {
                print_json(&list)?;
            } else {
                println!(
                    "{:<16} {:<16} {:<6} {:<40} SOURCES",
                    "NAME", "PREFIX", "KIND", "URL OR COMMAND"
                );
                for s in list {
                    // Names and where their values come from, never the values.
                    let mut sources: Vec<String> = s
                        .headers
                        .iter()
                        .map(|h| format!("{}={}", h.name, h.source))
                        .collect();
                    let (kind, target) = match &s.transport {
                        TransportView::Http { tls } => {
                            for (what, file) in [
                                ("ca-file", &tls.ca_file),
                                ("client-cert", &tls.client_cert),
                                ("client-key", &tls.client_key),
                            ] {
                                if let Some(f) = file {
                                    sources.push(format!("{what}={}", f.display()));
                                }
                            }
                            let https = s
                                .url
                                .get(..8)
                                .is_some_and(|p| p.eq_ignore_ascii_case("https://"));
                            (if https { "https" } else { "http" }, s.url.clone())
                        }
                        TransportView::Stdio {
                            command, args, env, ..
                        } => {
                            sources.extend(env.iter().map(|e| format!("{}={}", e.name, e.source)));
                            ("stdio", command_line(command, args))
                        }
                        TransportView::Unreadable => ("?", s.url.clone()),
                    };
                    let prefix = format!("{:?}", s.prefix);
                    println!(
                        "{:<16} {:<16} {:<6} {:<40} {}",
                        s.name,
                        prefix,
                        kind,
                        target,
                        sources.join(", ")
                    );
                }
            }
        }
        Command::Member(MemberCmd::Add { workspace, member }) => {
            store.member_add(&workspace, &member).await?;
            println!("added member {member} to {workspace}");
        }
        Command::Member(MemberCmd::Remove { workspace, member }) => {
            store.member_remove(&workspace, &member).await?;
            println!("removed member {member} from {workspace}; their tokens and grants are gone");
        }
        Command::Member(MemberCmd::List { workspace }) => {
            let list = store.member_list(&workspace).await?;
            if json {
                print_json(&list)?;
            } else {
                println!("{:<32} {:<21} {:<21} ROLES", "NAME", "CREATED", "DISABLED");
                for m in list {
                    println!(
                        "{:<32} {:<21} {:<21} {}",
                        m.name,
                        time(Some(m.created_ms)),
                        time(m.disabled_ms),
                        m.roles.join(",")
                    );
                }
            }
        }
        Command::Member(MemberCmd::Disable { workspace, member }) => {
            store.member_set_disabled(&workspace, &member, true).await?;
            println!("disabled {member} in {workspace}: every credential of theirs is refused");
        }
        Command::Member(MemberCmd::Import {
            workspace,
            file,
            issue_tokens,
            expires,
        }) => {
            let jsonl = matches!(
                file.extension().and_then(|e| e.to_str()),
                Some("jsonl" | "ndjson")
            );
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("read {}", file.display()))?;
            let rows = mcpgw::store::import::parse(&text, jsonl)
                .with_context(|| file.display().to_string())?;
            let ttl = expires.as_deref().map(store::parse_duration).transpose()?;
            // The token file is created (never overwritten) before anything is written, so a
            // path that cannot take it stops the import with nothing changed.
            let mut out = match &issue_tokens {
                Some(path) => Some(token_file(path)?),
                None => None,
            };
            let started = std::time::Instant::now();
            let report = store
                .member_import(&workspace, &rows, issue_tokens.as_ref().map(|_| ttl))
                .await?;
            if let (Some(out), Some(path)) = (out.as_mut(), &issue_tokens) {
                use std::io::Write as _;
                let mut text = String::from("member,token_id,token\n");
                for t in &report.tokens {
                    text.push_str(&format!(
                        "{},{},{}\n",
                        t.info.member.as_deref().unwrap_or_default(),
                        t.info.id,
                        t.token
                    ));
                }
                out.write_all(text.as_bytes())
                    .and_then(|()| out.sync_all())
                    .with_context(|| format!("write {}", path.display()))?;
            }
            println!(
                "imported {} members into {workspace} ({} new, {} existing) in {:.1} s{}",
                rows.len(),
                report.created,
                report.existing,
                started.elapsed().as_secs_f64(),
                match &issue_tokens {
                    Some(p) => format!("; {} tokens in {}", report.tokens.len(), p.display()),
                    None => String::new(),
                }
            );
        }
        Command::Member(MemberCmd::Enable { workspace, member }) => {
            store
                .member_set_disabled(&workspace, &member, false)
                .await?;
            println!("enabled {member} in {workspace}");
        }
        Command::Role(RoleCmd::Create {
            workspace,
            role,
            patterns,
        }) => {
            store.role_create(&workspace, &role, &patterns).await?;
            println!("created role {role} in {workspace}");
        }
        Command::Role(RoleCmd::Delete { workspace, role }) => {
            store.role_delete(&workspace, &role).await?;
            println!("deleted role {role} from {workspace}");
        }
        Command::Role(RoleCmd::Grant {
            workspace,
            role,
            patterns,
        }) => {
            store.role_grant(&workspace, &role, &patterns).await?;
            println!("granted {} to role {role}", patterns.join(" "));
        }
        Command::Role(RoleCmd::Revoke {
            workspace,
            role,
            patterns,
        }) => {
            store.role_revoke(&workspace, &role, &patterns).await?;
            println!("removed {} from role {role}", patterns.join(" "));
        }
        Command::Role(RoleCmd::Assign {
            workspace,
            member,
            role,
        }) => {
            store.role_assign(&workspace, &member, &role).await?;
            println!("assigned role {role} to {member}");
        }
        Command::Role(RoleCmd::Unassign {
            workspace,
            member,
            role,
        }) => {
            store.role_unassign(&workspace, &member, &role).await?;
            println!("took role {role} from {member}");
        }
        Command::Role(RoleCmd::List { workspace }) => {
            let list = store.role_list(&workspace).await?;
            if json {
                print_json(&list)?;
            } else {
                println!("{:<24} {:<40} MEMBERS", "ROLE", "PATTERNS");
                for r in list {
                    println!(
                        "{:<24} {:<40} {}",
                        r.name,
                        r.patterns.join(" "),
                        r.members.join(",")
                    );
                }
            }
        }
        Command::Token(TokenCmd::Issue {
            workspace,
            member,
            expires,
        }) => {
            let ttl = expires.as_deref().map(store::parse_duration).transpose()?;
            let issued = store
                .token_issue(&workspace, member.as_deref(), ttl)
                .await?;
            // The token alone on stdout, once; the id for revocation on stderr.
            println!("{}", issued.token);
            eprintln!(
                "issued {} ({}); it is shown only now",
                issued.info.id, issued.info.prefix
            );
        }
        Command::Token(TokenCmd::List { workspace }) => {
            let list = store.token_list(&workspace).await?;
            if json {
                print_json(&list)?;
            } else {
                println!(
                    "{:<22} {:<20} {:<14} {:<21} {:<21} LAST USED",
                    "ID", "MEMBER", "PREFIX", "CREATED", "EXPIRES"
                );
                for t in list {
                    println!(
                        "{:<22} {:<20} {:<14} {:<21} {:<21} {}",
                        t.id,
                        t.member.as_deref().unwrap_or("(workspace)"),
                        t.prefix,
                        time(Some(t.created_ms)),
                        time(t.expires_ms),
                        time(t.last_used_ms)
                    );
                }
            }
        }
        Command::Token(TokenCmd::Revoke { token_id }) => {
            store.token_revoke(&token_id, None).await?;
            println!("revoked {token_id}");
        }
        Command::Grant(GrantCmd::Add {
            workspace,
            member,
            patterns,
        }) => {
            store.grant_add(&workspace, &member, &patterns).await?;
            println!("granted {} to {member}", patterns.join(" "));
        }
        Command::Grant(GrantCmd::Remove {
            workspace,
            member,
            patterns,
        }) => {
            store.grant_remove(&workspace, &member, &patterns).await?;
            println!("removed {} from {member}", patterns.join(" "));
        }
        Command::Grant(GrantCmd::List { workspace, member }) => {
            let list = store.grant_list(&workspace, member.as_deref()).await?;
            if json {
                print_json(&list)?;
            } else {
                println!("{:<32} PATTERN", "MEMBER");
                for g in list {
                    println!("{:<32} {}", g.member, g.pattern);
                }
            }
        }
        Command::Enforce { workspace, state } => {
            let on = matches!(state, OnOff::On);
            store.enforce_set(&workspace, on).await?;
            println!(
                "enforcement {} for {workspace}",
                if on { "on" } else { "off" }
            );
        }
        Command::Serve { .. }
        | Command::Dev { .. }
        | Command::Policy(_)
        | Command::Audit(_)
        | Command::Tools(_)
        | Command::Limit(_)
        | Command::Idp(_)
        | Command::Scim(_)
        | Command::Server(ServerCmd::Status { .. }) => {
            bail!("not a store command")
        }
    }
    Ok(ExitCode::SUCCESS)
}

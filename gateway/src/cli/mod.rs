//! The `mcpgw` command line: each family of commands in its own file, all of them calling the
//! library (`mcpgw::*`) for the work.
//!
//! - `identity.rs`: workspaces, servers, members, tokens, grants, enforcement (over the store);
//! - `policy.rs`: policy modules offline (check, run, status);
//! - `audit.rs`: the audit trail (list, tail, export, verify, checkpoint, prune);
//! - `dev.rs`: `mcpgw dev`, the complete demo;
//! - `status.rs`: `mcpgw server status`, asked of a running gateway's admin API.

mod audit;
mod dev;
mod identity;
mod idp;
mod limit;
mod policy;
mod scim;
mod status;
mod tools;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use identity::{GrantCmd, MemberCmd, RoleCmd, ServerCmd, TokenCmd, WorkspaceCmd};
use mcpgw::config::Config;
use mcpgw::store::Store;
use policy::PolicyCommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "mcpgw",
    version,
    about = "A gateway for the Model Context Protocol"
)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// Config file (TOML); default: ./mcpgw.toml if present. See docs/config.md.
    #[arg(long, global = true, env = "MCPGW_CONFIG")]
    config: Option<PathBuf>,
    /// Database URL (`sqlite://PATH` or `postgres://...`), overriding the config file.
    #[arg(long, global = true)]
    database: Option<String>,
    /// Print lists as JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Start a complete demo: SQLite in --data-dir, allowlist + secrets-guard, three demo MCP
    /// servers, a workspace with two members; prints their tokens and client configs.
    Dev {
        /// Where the demo keeps its SQLite database, policies and cache.
        #[arg(long, default_value = "mcpgw-dev")]
        data_dir: PathBuf,
        /// MCP listener address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Admin API listener address.
        #[arg(long, default_value = "127.0.0.1:8081")]
        admin_listen: String,
    },
    /// Run the gateway: identity snapshot, policy chain (hot-reloaded) and the admin API.
    Serve {
        /// MCP listener address.
        #[arg(long)]
        listen: Option<String>,
        /// Admin API listener address, or `off`.
        #[arg(long)]
        admin_listen: Option<String>,
        /// Policy directory.
        #[arg(long)]
        policy_dir: Option<PathBuf>,
    },
    /// Workspaces: the unit of tenancy.
    #[command(subcommand)]
    Workspace(WorkspaceCmd),
    /// Upstream MCP servers of a workspace.
    #[command(subcommand)]
    Server(ServerCmd),
    /// Members of a workspace.
    #[command(subcommand)]
    Member(MemberCmd),
    /// Bearer tokens: per member, or the workspace token.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Which tools a member may see and call (`server:tool` patterns, `*` globs).
    #[command(subcommand)]
    Grant(GrantCmd),
    /// Roles: named sets of patterns assigned to members (effective grants = own + roles').
    #[command(subcommand)]
    Role(RoleCmd),
    /// The workspace's identity provider: OIDC JWTs as members' credentials.
    #[command(subcommand)]
    Idp(idp::IdpCmd),
    /// SCIM provisioning from the identity provider: its token, and the role each group gives.
    #[command(subcommand)]
    Scim(scim::ScimCmd),
    /// Turn a workspace's enforcement on (denials refuse calls) or off (denials are would-deny).
    Enforce { workspace: String, state: OnOff },
    /// Work with policy modules offline.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The audit trail: list, tail, export, verify, checkpoint, prune.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Upstream tools pinned by a workspace: list, diff a changed one, approve it.
    #[command(subcommand)]
    Tools(tools::ToolsCmd),
    /// Rate limits on tool calls, per member, role or every caller × tool pattern.
    #[command(subcommand)]
    Limit(limit::LimitCmd),
}

#[derive(Clone, Copy, ValueEnum)]
enum OnOff {
    On,
    Off,
}

fn load_config(g: &Global) -> Result<Config> {
    let mut config = Config::load(g.config.as_deref())?;
    if let Some(db) = &g.database {
        config.database = db.clone();
    }
    Ok(config)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("start tokio")
}

/// Runs one command.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let g = cli.global;
    match cli.command {
        Command::Policy(PolicyCommand::Check { file, settings }) => {
            policy::check(&file, settings.as_deref())
        }
        Command::Policy(PolicyCommand::Status {
            dir,
            cache_dir,
            watch,
        }) => policy::status(dir, cache_dir, watch, g.json),
        Command::Policy(PolicyCommand::Run {
            file,
            call,
            result,
            settings,
        }) => policy::run(&file, &call, result.as_deref(), settings.as_deref()),
        Command::Serve {
            listen,
            admin_listen,
            policy_dir,
        } => {
            let mut config = load_config(&g)?;
            if let Some(l) = listen {
                config.listen = l.parse().with_context(|| format!("--listen {l}"))?;
            }
            match admin_listen.as_deref() {
                Some("off") => config.admin_listen = None,
                Some(a) => {
                    config.admin_listen =
                        Some(a.parse().with_context(|| format!("--admin-listen {a}"))?)
                }
                None => {}
            }
            if let Some(d) = policy_dir {
                config.policy.dir = Some(d);
            }
            runtime()?.block_on(mcpgw::run(config, mcpgw::shutdown_signal()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev {
            data_dir,
            listen,
            admin_listen,
        } => {
            let mut config = load_config(&g)?;
            if g.database.is_none() && std::env::var_os("MCPGW_DATABASE_URL").is_none() {
                config.database = format!("sqlite://{}", data_dir.join("mcpgw.db").display());
            }
            let args = dev::DevArgs {
                data_dir,
                listen,
                admin_listen,
            };
            runtime()?.block_on(dev::run(config, args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(cmd) => {
            let config = load_config(&g)?;
            runtime()?.block_on(async move {
                let store = Store::connect(&config.database)
                    .await
                    .with_context(|| format!("open {}", redact_url(&config.database)))?;
                audit::run(&store, cmd, g.json).await
            })
        }
        Command::Tools(cmd) => {
            let config = load_config(&g)?;
            runtime()?.block_on(async move {
                let store = Store::connect(&config.database)
                    .await
                    .with_context(|| format!("open {}", redact_url(&config.database)))?;
                tools::run(&store, cmd, g.json).await
            })
        }
        Command::Limit(cmd) => {
            let config = load_config(&g)?;
            runtime()?.block_on(async move {
                let store = Store::connect(&config.database)
                    .await
                    .with_context(|| format!("open {}", redact_url(&config.database)))?;
                limit::run(&store, cmd, g.json).await
            })
        }
        Command::Server(ServerCmd::Status {
            workspace,
            admin_url,
        }) => {
            let config = load_config(&g)?;
            runtime()?.block_on(status::server_status(
                &config,
                &workspace,
                admin_url.as_deref(),
                g.json,
            ))
        }
        Command::Idp(cmd) => {
            let config = load_config(&g)?;
            runtime()?.block_on(async move {
                let store = Store::connect(&config.database)
                    .await
                    .with_context(|| format!("open {}", redact_url(&config.database)))?;
                idp::run(&store, &config, cmd, g.json).await
            })
        }
        Command::Scim(cmd) => {
            let config = load_config(&g)?;
            runtime()?.block_on(async move {
                let store = Store::connect(&config.database)
                    .await
                    .with_context(|| format!("open {}", redact_url(&config.database)))?;
                scim::run(&store, config.admin_listen, cmd, g.json).await
            })
        }
        command => {
            let config = load_config(&g)?;
            runtime()?.block_on(async move {
                let store = Store::connect(&config.database)
                    .await
                    .with_context(|| format!("open {}", redact_url(&config.database)))?;
                identity::run(&store, command, g.json).await
            })
        }
    }
}

/// The database URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn time(ms: Option<i64>) -> String {
    match ms {
        Some(ms) if ms > 0 => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64),
        )
        .to_string(),
        _ => "-".into(),
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

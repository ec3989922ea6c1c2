//! The `mcpgw` command: wiring only; the work is in the library.

mod cli_audit;
mod cli_dev;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use mcpgw::config::Config;
use mcpgw::policy::{self, Limits, PolicyEngine, Principal, Question, host::wit_types};
use mcpgw::store::{self, Store};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "mcpgw",
    version,
    about = "A gateway for the Model Context Protocol"
)]
struct Cli {
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
    /// Turn a workspace's enforcement on (denials refuse calls) or off (denials are would-deny).
    Enforce { workspace: String, state: OnOff },
    /// Work with policy modules offline.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The audit trail: list, tail, export, verify, checkpoint, prune.
    #[command(subcommand)]
    Audit(cli_audit::AuditCmd),
}

#[derive(Clone, Copy, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Subcommand)]
enum WorkspaceCmd {
    /// Create a workspace (enforcement starts off).
    Create { name: String },
    /// Delete a workspace with its servers, members, tokens and grants.
    Delete { name: String },
    /// List workspaces.
    List,
}

#[derive(Subcommand)]
enum ServerCmd {
    /// Add an upstream server.
    Add {
        workspace: String,
        name: String,
        url: String,
        /// A header to send upstream: 'Name: value' (stored as given).
        #[arg(long = "header")]
        headers: Vec<String>,
        /// A header whose value is read from an environment variable: 'Name: ENV_VAR' (only the name is stored).
        #[arg(long = "header-env")]
        header_envs: Vec<String>,
        /// What goes before this server's tool and prompt names on /mcp (default: NAME_; '' keeps
        /// them unchanged). Two servers of a workspace cannot share one.
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Remove an upstream server.
    Remove { workspace: String, name: String },
    /// List a workspace's servers.
    List { workspace: String },
}

#[derive(Subcommand)]
enum MemberCmd {
    /// Add a member.
    Add { workspace: String, member: String },
    /// Remove a member, revoking all their tokens and grants.
    Remove { workspace: String, member: String },
    /// List a workspace's members.
    List { workspace: String },
}

#[derive(Subcommand)]
enum TokenCmd {
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
enum GrantCmd {
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

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a module as the gateway would load it: component, world, imports, settings, trial call.
    Check {
        /// The component (`.wasm`).
        file: PathBuf,
        /// Settings (TOML); default: `NAME.toml` beside the module if present.
        #[arg(long)]
        settings: Option<PathBuf>,
    },
    /// Load the built-in allowlist and a policy directory as the gateway does, and print the chain;
    /// with --watch, keep it live and print it again after every change until Ctrl-C.
    Status {
        /// Policy directory (`*.wasm`, with `NAME.toml` settings beside each).
        #[arg(long, env = "MCPGW_POLICY_DIR")]
        dir: Option<PathBuf>,
        /// Directory for compiled-module cache entries.
        #[arg(long, env = "MCPGW_POLICY_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
        /// Keep watching the directory.
        #[arg(long)]
        watch: bool,
    },
    /// Evaluate one question with a module and print its decision and the fuel (instructions) used.
    Run {
        /// The component (`.wasm`).
        file: PathBuf,
        /// The question as JSON: {"server","tool","workspace","member","grants","arguments"};
        /// without "arguments" it is a listing question.
        #[arg(long)]
        call: String,
        /// A tool result (JSON) to inspect instead of deciding the call.
        #[arg(long)]
        result: Option<String>,
        /// Settings (TOML); default: `NAME.toml` beside the module if present.
        #[arg(long)]
        settings: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MCPGW_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
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

fn run(cli: Cli) -> Result<ExitCode> {
    let g = cli.global;
    match cli.command {
        Command::Policy(PolicyCommand::Check { file, settings }) => {
            policy_check(&file, settings.as_deref())
        }
        Command::Policy(PolicyCommand::Status {
            dir,
            cache_dir,
            watch,
        }) => policy_status(dir, cache_dir, watch, g.json),
        Command::Policy(PolicyCommand::Run {
            file,
            call,
            result,
            settings,
        }) => policy_run(&file, &call, result.as_deref(), settings.as_deref()),
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
            let args = cli_dev::DevArgs {
                data_dir,
                listen,
                admin_listen,
            };
            runtime()?.block_on(cli_dev::run(config, args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(cmd) => {
            let config = load_config(&g)?;
            runtime()?.block_on(async move {
                let store = Store::connect(&config.database)
                    .await
                    .with_context(|| format!("open {}", redact_url(&config.database)))?;
                cli_audit::run(&store, cmd, g.json).await
            })
        }
        command => {
            let config = load_config(&g)?;
            runtime()?.block_on(async move {
                let store = Store::connect(&config.database)
                    .await
                    .with_context(|| format!("open {}", redact_url(&config.database)))?;
                admin_command(&store, command, g.json).await
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

async fn admin_command(store: &Store, command: Command, json: bool) -> Result<ExitCode> {
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
            prefix,
        }) => {
            let mut specs = Vec::new();
            for h in &headers {
                specs.push(store::parse_header(h, false)?);
            }
            for h in &header_envs {
                specs.push(store::parse_header(h, true)?);
            }
            store
                .server_add(&workspace, &name, &url, specs, prefix.as_deref())
                .await?;
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
                println!("{:<16} {:<16} {:<40} HEADERS", "NAME", "PREFIX", "URL");
                for s in list {
                    let headers: Vec<String> = s
                        .headers
                        .iter()
                        .map(|h| match &h.env {
                            Some(env) => format!("{} (from ${env})", h.name),
                            None => h.name.clone(),
                        })
                        .collect();
                    let prefix = format!("{:?}", s.prefix);
                    println!(
                        "{:<16} {:<16} {:<40} {}",
                        s.name,
                        prefix,
                        s.url,
                        headers.join(", ")
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
                println!("{:<32} CREATED", "NAME");
                for m in list {
                    println!("{:<32} {}", m.name, time(Some(m.created_ms)));
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
        Command::Serve { .. } | Command::Dev { .. } | Command::Policy(_) | Command::Audit(_) => {
            bail!("not an admin command")
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn load_inputs(file: &Path, settings: Option<&Path>) -> Result<(Vec<u8>, String)> {
    let bytes = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
    let settings_path = settings
        .map(Path::to_path_buf)
        .unwrap_or_else(|| file.with_extension("toml"));
    if settings.is_some() && !settings_path.exists() {
        bail!("settings file {} not found", settings_path.display());
    }
    let settings = policy::reload::read_settings(&settings_path)?;
    Ok((bytes, settings))
}

fn policy_check(file: &Path, settings: Option<&Path>) -> Result<ExitCode> {
    let (bytes, settings) = load_inputs(file, settings)?;
    let engine = PolicyEngine::new(Limits::default(), None)?;
    let name = file.display();
    match engine.load(&name.to_string(), &bytes, &settings) {
        Ok(m) => {
            let p = m.phases();
            let phases: Vec<&str> = [(p.list, "list"), (p.call, "call"), (p.result, "result")]
                .into_iter()
                .filter_map(|(on, n)| on.then_some(n))
                .collect();
            println!(
                "ok: {name}: module {} (phases: {}), sha256 {}",
                m.name(),
                phases.join(", "),
                m.digest()
            );
            if !m.stubbed_imports().is_empty() {
                println!(
                    "   WASI imports answered with traps: {}",
                    m.stubbed_imports().join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("rejected: {name}: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CallInput {
    server: String,
    tool: String,
    #[serde(default = "default_workspace")]
    workspace: String,
    #[serde(default)]
    member: Option<String>,
    #[serde(default)]
    grants: Vec<String>,
    #[serde(default)]
    arguments: Option<serde_json::Value>,
    #[serde(default)]
    request_id: Option<String>,
}

fn default_workspace() -> String {
    "default".into()
}

fn policy_run(
    file: &Path,
    call: &str,
    result: Option<&str>,
    settings: Option<&Path>,
) -> Result<ExitCode> {
    let (bytes, settings) = load_inputs(file, settings)?;
    let input: CallInput = serde_json::from_str(call).context("--call is not a valid question")?;
    let engine = PolicyEngine::with_fuel(Limits::default())?;
    let module = engine
        .load(&file.display().to_string(), &bytes, &settings)
        .with_context(|| format!("{} rejected", file.display()))?;
    let principal = Principal {
        workspace: input.workspace,
        member: input.member,
        grants: input.grants,
    };
    let arguments = input.arguments.map(|a| a.to_string());
    let call = Question {
        request_id: input.request_id.as_deref().unwrap_or("cli"),
        principal: &principal,
        server: &input.server,
        tool: &input.tool,
        arguments: arguments.as_deref(),
    };
    let answer = match result {
        Some(r) => {
            let r: serde_json::Value = serde_json::from_str(r).context("--result is not JSON")?;
            module.inspect_result(&call, &r.to_string())
        }
        None => module.decide(&call),
    };
    let mut out = match &answer.result {
        Ok(wit_types::Decision::Allow) => serde_json::json!({"decision": "allow"}),
        Ok(wit_types::Decision::Abstain) => serde_json::json!({"decision": "abstain"}),
        Ok(wit_types::Decision::Deny(d)) => {
            serde_json::json!({"decision": "deny", "code": d.code, "reason": d.reason})
        }
        Err(f) => {
            serde_json::json!({"decision": "deny", "code": f.code(), "reason": f.describe(), "fault": true})
        }
    };
    out["module"] = module.name().into();
    out["fuel"] = answer.fuel.into();
    if result.is_none() && call.arguments.is_some() {
        // A module with call triggers is not run by the gateway on arguments holding none.
        out["gateway_asks"] = module.wants_call(call.arguments).into();
    }
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn print_status(status: &policy::Status, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(status)?);
        return Ok(());
    }
    println!(
        "{:<4} {:<24} {:<16} {:<10} {:<18} {:>9} {:>7} {:>7}",
        "#", "source", "module", "version", "phases", "decisions", "denies", "errors"
    );
    for (i, m) in status.modules.iter().enumerate() {
        let p = m.phases;
        let phases: Vec<&str> = [(p.list, "list"), (p.call, "call"), (p.result, "result")]
            .into_iter()
            .filter_map(|(on, n)| on.then_some(n))
            .collect();
        println!(
            "{:<4} {:<24} {:<16} {:<10} {:<18} {:>9} {:>7} {:>7}  sha256:{}",
            i + 1,
            m.source,
            m.name,
            m.version,
            phases.join(","),
            m.decisions,
            m.denies,
            m.errors,
            &m.digest[..12]
        );
        if let Some(e) = &m.last_error {
            println!("     last error: {e}");
        }
    }
    for r in &status.rejected {
        let serving = if r.serving_previous {
            " (previous version still serving)"
        } else {
            ""
        };
        println!("rejected {}: {}{serving}", r.file, r.reason);
    }
    Ok(())
}

fn policy_status(
    dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    watch: bool,
    json: bool,
) -> Result<ExitCode> {
    if let Some(d) = &dir
        && !d.is_dir()
    {
        bail!("policy directory {} does not exist", d.display());
    }
    let set = policy::PolicySet::load(policy::PolicyConfig {
        dir,
        cache_dir,
        ..Default::default()
    })?;
    print_status(&set.status(), json)?;
    if !watch {
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Runtime::new().context("start tokio")?;
    runtime.block_on(async {
        let _watch = set.watch()?;
        let mut seen = set.chain();
        eprintln!("watching for policy changes; Ctrl-C to stop");
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
            }
            let now = set.chain();
            if !std::sync::Arc::ptr_eq(&now, &seen) {
                print_status(&now.status(), json)?;
                seen = now;
            }
        }
    })
}

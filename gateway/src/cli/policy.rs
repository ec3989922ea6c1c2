//! Policy modules offline: check one as the gateway would load it, run one on a question, show
//! the chain a directory makes.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use mcpgw::policy::{self, Limits, PolicyEngine, Principal, Question, host::wit_types};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum PolicyCommand {
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
        /// The question as JSON: {"server","tool","workspace","member","grants","arguments",
        /// "labels","definition","client"}; without "arguments" it is a listing question.
        /// "definition" is the tool as the upstream lists it (its facts), "labels" the
        /// session's flow labels.
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

pub fn check(file: &Path, settings: Option<&Path>) -> Result<ExitCode> {
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
    /// The session's flow labels.
    #[serde(default)]
    labels: Vec<String>,
    /// The tool as the upstream lists it (`{"name", "description", "inputSchema",
    /// "annotations", ...}`): its facts and fingerprint, as the gateway would give them.
    #[serde(default)]
    definition: Option<serde_json::Value>,
    /// The client: `{"name", "version"}`.
    #[serde(default)]
    client: Option<serde_json::Value>,
}

fn default_workspace() -> String {
    "default".into()
}

pub fn run(
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
    let mut labels = input.labels;
    labels.sort();
    labels.dedup();
    let facts = input.definition.as_ref().map(mcpgw::catalog::facts_of);
    let client = input.client.as_ref().and_then(|c| {
        Some(policy::ClientInfo {
            name: c.get("name")?.as_str()?.to_owned(),
            version: c
                .get("version")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned(),
        })
    });
    let call = Question {
        request_id: input.request_id.as_deref().unwrap_or("cli"),
        principal: &principal,
        server: &input.server,
        tool: &input.tool,
        arguments: arguments.as_deref(),
        facts: facts.as_ref(),
        client: client.as_ref(),
        labels: &labels,
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
    if !answer.labels.is_empty() {
        out["labels"] = answer.labels.clone().into();
    }
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

pub fn status(
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

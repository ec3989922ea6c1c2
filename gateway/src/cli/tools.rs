//! `mcpgw tools …`: the upstream tools a workspace has pinned (the rug-pull defence, see
//! `mcpgw::catalog`): list them, show how a changed one differs, approve the change.

use anyhow::{Result, bail};
use clap::Subcommand;
use mcpgw::audit::{self, Audit};
use mcpgw::store::{Store, flows::Pin};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ToolsCmd {
    /// The workspace's pinned tools, and which changed since (`changed`: hidden and refused
    /// until approved, with pinning = "enforce").
    List {
        workspace: String,
        /// `SERVER` or `SERVER:TOOL`.
        target: Option<String>,
    },
    /// How changed tools' definitions differ from the approved ones.
    Diff {
        workspace: String,
        /// `SERVER` or `SERVER:TOOL`.
        target: Option<String>,
    },
    /// Trust the definitions the upstreams list now for changed tools; audited.
    Approve {
        workspace: String,
        /// `SERVER` or `SERVER:TOOL`; every changed tool of the workspace when left out.
        target: Option<String>,
        /// The seen definition's fingerprint as `diff` showed it (8 or more of its hex
        /// characters): a definition that changed again since is not approved.
        #[arg(long)]
        fingerprint: Option<String>,
    },
}

fn split(target: Option<&str>) -> (Option<&str>, Option<&str>) {
    match target {
        None => (None, None),
        Some(t) => match t.split_once(':') {
            Some((s, tool)) => (Some(s), Some(tool)),
            None => (Some(t), None),
        },
    }
}

fn matching(pins: Vec<Pin>, target: Option<&str>) -> Vec<Pin> {
    let (server, tool) = split(target);
    pins.into_iter()
        .filter(|p| server.is_none_or(|s| p.server == s) && tool.is_none_or(|t| p.tool == t))
        .collect()
}

pub async fn run(store: &Store, cmd: ToolsCmd, json: bool) -> Result<ExitCode> {
    match cmd {
        ToolsCmd::List { workspace, target } => {
            let pins = matching(store.pins(Some(&workspace)).await?, target.as_deref());
            if json {
                super::print_json(&pins)?;
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<20} {:<32} {:<8} {:<14} PINNED",
                "SERVER", "TOOL", "STATE", "FINGERPRINT"
            );
            for p in &pins {
                let state = if p.changed() { "changed" } else { "pinned" };
                println!(
                    "{:<20} {:<32} {:<8} {:<14} {}",
                    p.server,
                    p.tool,
                    state,
                    &p.fingerprint[..12.min(p.fingerprint.len())],
                    super::time(Some(p.pinned_ms))
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ToolsCmd::Diff { workspace, target } => {
            let pins: Vec<Pin> = matching(store.pins(Some(&workspace)).await?, target.as_deref())
                .into_iter()
                .filter(Pin::changed)
                .collect();
            if json {
                super::print_json(&pins)?;
                return Ok(ExitCode::SUCCESS);
            }
            if pins.is_empty() {
                println!("no changed tools");
            }
            for p in &pins {
                println!(
                    "--- {}:{} approved {}",
                    p.server,
                    p.tool,
                    super::time(Some(p.pinned_ms))
                );
                println!(
                    "+++ {}:{} seen {} fingerprint {}",
                    p.server,
                    p.tool,
                    super::time(p.seen_ms),
                    p.seen_fingerprint.as_deref().unwrap_or("-")
                );
                let old = pretty(&p.definition);
                let new = pretty(p.seen_definition.as_deref().unwrap_or(""));
                for line in diff_lines(&old, &new) {
                    println!("{line}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ToolsCmd::Approve {
            workspace,
            target,
            fingerprint,
        } => {
            let (server, tool) = split(target.as_deref());
            let approved = store
                .pins_approve(&workspace, server, tool, fingerprint.as_deref())
                .await?;
            if approved.is_empty() {
                match fingerprint {
                    Some(f) => bail!(
                        "no changed tool of {workspace} matches with a seen definition {f}...; \
                         it may have changed again since: run mcpgw tools diff"
                    ),
                    None => bail!("no changed tool of {workspace} matches; nothing to approve"),
                }
            }
            let trail = Audit::start(store.clone(), &audit::AuditConfig::default());
            for p in &approved {
                trail.event(
                    audit::KIND_TOOL_APPROVED,
                    &p.workspace,
                    &p.server,
                    &p.tool,
                    "tool-approved",
                );
                println!(
                    "approved {}:{} ({})",
                    p.server,
                    p.tool,
                    p.seen_fingerprint
                        .as_deref()
                        .map_or("", |f| &f[..12.min(f.len())])
                );
            }
            trail.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn pretty(definition: &str) -> Vec<String> {
    let text = serde_json::from_str::<serde_json::Value>(definition)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| definition.to_owned());
    text.lines().map(str::to_owned).collect()
}

/// A line diff (longest common subsequence): ` ` kept, `-` approved only, `+` seen only.
pub fn diff_lines(old: &[String], new: &[String]) -> Vec<String> {
    let (n, m) = (old.len(), new.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if old[i] == new[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && old[i] == new[j] {
            out.push(format!(" {}", old[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("+{}", new[j]));
            j += 1;
        } else {
            out.push(format!("-{}", old[i]));
            i += 1;
        }
    }
    out
}

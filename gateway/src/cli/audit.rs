//! `mcpgw audit …` (part of the binary, not the library): list, tail, export, verify, checkpoint
//! and prune the audit trail.

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use mcpgw::audit::{self, ChainHead, Filter, Record};
use mcpgw::store::Store;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum AuditCmd {
    /// List records, oldest first (the newest --limit of those matching).
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Print the last records; with --follow, keep printing new ones until Ctrl-C.
    Tail {
        #[command(flatten)]
        filter: FilterArgs,
        /// How many to start with.
        #[arg(long, short = 'n', default_value_t = 20)]
        lines: i64,
        /// Keep printing records as they are written.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Write every matching record to stdout, oldest first.
    Export {
        #[command(flatten)]
        filter: FilterArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
    },
    /// Recompute the hash chains; names the first broken row and exits non-zero.
    Verify {
        /// Only this workspace's chain.
        #[arg(long)]
        workspace: Option<String>,
        /// A file written by `mcpgw audit checkpoint`: its heads must still be on the chains.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
    /// Print every chain's head (workspace, seq, hash), to keep somewhere else.
    Checkpoint,
    /// Remove records received before a time; the rest stays verifiable from the checkpoint
    /// recorded for each chain.
    Prune {
        /// 2026-11-24, 2026-11-24T09:30:00Z, or a span back from now such as 90d.
        #[arg(long)]
        before: String,
    },
}

#[derive(Args)]
pub struct FilterArgs {
    /// Workspace name.
    #[arg(long)]
    workspace: Option<String>,
    /// Member name.
    #[arg(long)]
    member: Option<String>,
    /// Server name.
    #[arg(long)]
    server: Option<String>,
    /// Tool name.
    #[arg(long)]
    tool: Option<String>,
    /// allow, would-deny, deny or error.
    #[arg(long)]
    decision: Option<String>,
    /// success, tool-error, denied, upstream-error, timeout or cancelled.
    #[arg(long)]
    status: Option<String>,
    /// Received at or after: 2026-11-24, 2026-11-24T09:30:00Z, or a span back from now (15m, 12h).
    #[arg(long)]
    since: Option<String>,
    /// Received before (same forms as --since).
    #[arg(long)]
    until: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated, with a header line.
    Csv,
}

impl FilterArgs {
    fn filter(&self, limit: Option<i64>) -> Result<Filter> {
        Ok(Filter {
            workspace: self.workspace.clone(),
            member: self.member.clone(),
            server: self.server.clone(),
            tool: self.tool.clone(),
            decision: self.decision.clone(),
            status: self.status.clone(),
            since_ms: self.since.as_deref().map(audit::parse_time).transpose()?,
            until_ms: self.until.as_deref().map(audit::parse_time).transpose()?,
            after_id: None,
            before_id: None,
            limit,
        })
    }
}

fn chain_name(w: &str) -> &str {
    if w.is_empty() { "(unauthenticated)" } else { w }
}

fn print_table(records: &[Record], header: bool) {
    if header {
        println!(
            "{:<24} {:<16} {:<16} {:<12} {:<20} {:<10} {:<14} {:<16} {:>10}",
            "TIME",
            "WORKSPACE",
            "MEMBER",
            "SERVER",
            "TOOL",
            "DECISION",
            "STATUS",
            "CODE",
            "LATENCY"
        );
    }
    for r in records {
        let time = humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.ts_ms.max(0) as u64),
        );
        let member = match (&r.member, r.kind.as_str()) {
            (Some(m), _) => m.as_str(),
            (None, audit::KIND_AUTH) => "-",
            (None, _) => "(workspace)",
        };
        println!(
            "{:<24} {:<16} {:<16} {:<12} {:<20} {:<10} {:<14} {:<16} {:>8}µs",
            time.to_string(),
            chain_name(&r.workspace),
            member,
            r.server,
            if r.kind == audit::KIND_AUTH {
                "(auth)"
            } else {
                &r.tool
            },
            r.decision,
            r.status,
            r.error_code.as_deref().unwrap_or("-"),
            r.latency_us
        );
    }
}

/// Reads a checkpoint file: the lines `mcpgw audit checkpoint` prints (`WORKSPACE SEQ HASH`) or its
/// `--json` output.
fn read_checkpoint(path: &PathBuf) -> Result<Vec<ChainHead>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(&text)
            .with_context(|| format!("{}: not a checkpoint", path.display()));
    }
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [workspace, seq, hash] = fields.as_slice() else {
            bail!(
                "{}: expected WORKSPACE SEQ HASH, got {line:?}",
                path.display()
            );
        };
        out.push(ChainHead {
            workspace: if *workspace == "(unauthenticated)" {
                String::new()
            } else {
                (*workspace).to_owned()
            },
            seq: seq
                .parse()
                .with_context(|| format!("{}: bad seq in {line:?}", path.display()))?,
            hash: (*hash).to_owned(),
        });
    }
    Ok(out)
}

pub async fn run(store: &Store, cmd: AuditCmd, json: bool) -> Result<ExitCode> {
    let db = store.db();
    match cmd {
        AuditCmd::List { filter, limit } => {
            let records = audit::store::query(db, &filter.filter(Some(limit))?).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else {
                print_table(&records, true);
            }
        }
        AuditCmd::Tail {
            filter,
            lines,
            follow,
        } => {
            let mut f = filter.filter(Some(lines))?;
            let mut records = audit::store::query(db, &f).await?;
            let mut header = !json;
            loop {
                if json {
                    for r in &records {
                        println!("{}", serde_json::to_string(r)?);
                    }
                } else {
                    print_table(&records, header);
                    header = false;
                }
                std::io::stdout().flush()?;
                if !follow {
                    break;
                }
                if let Some(last) = records.last() {
                    f.after_id = Some(last.id);
                } else if f.after_id.is_none() {
                    f.after_id = Some(0);
                }
                f.limit = Some(1_000);
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
                    _ = tokio::signal::ctrl_c() => break,
                }
                records = audit::store::query(db, &f).await?;
            }
        }
        AuditCmd::Export { filter, format } => {
            let mut f = filter.filter(Some(5_000))?;
            f.after_id = Some(0);
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            if let Format::Csv = format {
                writeln!(out, "{}", audit::CSV_HEADER)?;
            }
            loop {
                let page = audit::store::query(db, &f).await?;
                let Some(last) = page.last() else { break };
                f.after_id = Some(last.id);
                for r in &page {
                    match format {
                        Format::Jsonl => writeln!(out, "{}", serde_json::to_string(r)?)?,
                        Format::Csv => writeln!(out, "{}", audit::csv_line(r))?,
                    }
                }
            }
            out.flush()?;
        }
        AuditCmd::Verify {
            workspace,
            checkpoint,
        } => {
            let expect = match &checkpoint {
                Some(p) => read_checkpoint(p)?,
                None => Vec::new(),
            };
            let report = audit::store::verify(db, workspace.as_deref(), &expect).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
            if let Some(b) = &report.broken {
                let row = match b.id {
                    Some(id) => format!("row id {id} (seq {})", b.seq),
                    None => format!("head (seq {})", b.seq),
                };
                eprintln!(
                    "BROKEN: workspace {}: {row}: {}",
                    chain_name(&b.workspace),
                    b.why
                );
                return Ok(ExitCode::FAILURE);
            }
            if !json {
                println!(
                    "ok: {} records in {} chains verified in {:.1} s ({} records/s)",
                    report.records,
                    report.chains.len(),
                    report.elapsed_ms as f64 / 1000.0,
                    report.records_per_s
                );
                for c in &report.chains {
                    println!("{}\t{}\t{}", chain_name(&c.workspace), c.seq, c.hash);
                }
            }
        }
        AuditCmd::Checkpoint => {
            let heads = audit::store::heads(db).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&heads)?);
            } else {
                for h in heads {
                    println!("{}\t{}\t{}", chain_name(&h.workspace), h.seq, h.hash);
                }
            }
        }
        AuditCmd::Prune { before } => {
            let before_ms = audit::parse_time(&before)?;
            let pruned = audit::store::prune(db, before_ms).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&pruned)?);
            } else if pruned.is_empty() {
                println!("nothing to prune");
            } else {
                for p in pruned {
                    println!(
                        "{}: removed {} records; the chain now continues from seq {} hash {}",
                        chain_name(&p.workspace),
                        p.removed,
                        p.checkpoint.seq,
                        p.checkpoint.hash
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! `mcpgw limit …`: rate limits on `tools/call` per member, role or every caller × tool pattern
//! (`mcpgw::limit`).

use anyhow::Result;
use clap::Subcommand;
use mcpgw::limit::{Rate, Subject};
use mcpgw::store::Store;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum LimitCmd {
    /// Limit calls to tools matching PATTERN: each caller SUBJECT names gets a bucket of
    /// --burst calls (default: N) refilled at RATE. Setting it again replaces rate and burst.
    /// Counted per replica: with n replicas a caller may get up to n × RATE.
    Set {
        workspace: String,
        /// A member, a role (every member holding it, each counted apart), or `*` (every
        /// caller). `member:NAME` or `role:NAME` when a name is both.
        subject: String,
        /// `server:tool` pattern (`*` globs), e.g. `ci:deploy` or `db:*`.
        pattern: String,
        /// `N/s`, `N/min` or `N/h`.
        rate: String,
        /// Calls a caller may make at once before the rate applies.
        #[arg(long)]
        burst: Option<u64>,
    },
    /// The workspace's rate limits.
    List { workspace: String },
    /// Remove a rate limit.
    Remove {
        workspace: String,
        /// As it was set (a name, `member:NAME`, `role:NAME` or `*`).
        subject: String,
        pattern: String,
    },
}

pub async fn run(store: &Store, cmd: LimitCmd, json: bool) -> Result<ExitCode> {
    match cmd {
        LimitCmd::Set {
            workspace,
            subject,
            pattern,
            rate,
            burst,
        } => {
            let rate = Rate::parse(&rate)?;
            let subject = store.limit_subject(&workspace, &subject).await?;
            let burst = burst.unwrap_or(rate.calls);
            store
                .limit_set(&workspace, &subject, &pattern, rate, burst)
                .await?;
            if json {
                super::print_json(&store.limit_list(&workspace).await?)?;
            } else {
                println!(
                    "limit set in {workspace}: {subject} on {pattern}, {rate}, burst {burst} (per replica)"
                );
            }
        }
        LimitCmd::List { workspace } => {
            let limits = store.limit_list(&workspace).await?;
            if json {
                super::print_json(&limits)?;
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<24} {:<32} {:<12} {:<7} SET",
                "SUBJECT", "PATTERN", "RATE", "BURST"
            );
            for l in &limits {
                println!(
                    "{:<24} {:<32} {:<12} {:<7} {}",
                    l.subject,
                    l.pattern,
                    l.rate,
                    l.burst,
                    super::time(Some(l.created_ms))
                );
            }
        }
        LimitCmd::Remove {
            workspace,
            subject,
            pattern,
        } => {
            let subject = match Subject::parse(&subject) {
                Ok(s) => s,
                Err(_) => store.limit_subject(&workspace, &subject).await?,
            };
            store
                .limit_remove(&workspace, &subject.to_string(), &pattern)
                .await?;
            if json {
                super::print_json(&store.limit_list(&workspace).await?)?;
            } else {
                println!("limit removed in {workspace}: {subject} on {pattern}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

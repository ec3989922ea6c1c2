//! Workspaces, servers, members, tokens, grants and enforcement, over the store.

use super::{Command, OnOff, print_json, time};
use anyhow::{Result, bail};
use clap::Subcommand;
use mcpgw::store::{self, Store};
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
pub enum MemberCmd {
    /// Add a member.
    Add { workspace: String, member: String },
    /// Remove a member, revoking all their tokens and grants.
    Remove { workspace: String, member: String },
    /// List a workspace's members.
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

//! `mcpgw scim token|revoke|groups|map|unmap WS`: SCIM provisioning of a workspace (see
//! `mcpgw::scim`): the bearer token the identity provider uses, and which role each
//! provisioned group gives its members.

use super::print_json;
use anyhow::Result;
use clap::Subcommand;
use mcpgw::store::Store;
use mcpgw::store::scim::Filter;
use serde_json::json;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ScimCmd {
    /// Issue the workspace's SCIM bearer token (replacing any previous one) and print it once,
    /// with the base URL to give the identity provider.
    Token { workspace: String },
    /// End SCIM access to the workspace.
    Revoke { workspace: String },
    /// The groups the identity provider has provisioned, with their member counts and roles.
    Groups { workspace: String },
    /// Members of GROUP hold ROLE's grants while they are in the group.
    Map {
        workspace: String,
        group: String,
        role: String,
    },
    /// GROUP no longer gives a role.
    Unmap { workspace: String, group: String },
}

/// Runs a `scim` command.
pub async fn run(
    store: &Store,
    admin_listen: Option<std::net::SocketAddr>,
    cmd: ScimCmd,
    json: bool,
) -> Result<ExitCode> {
    match cmd {
        ScimCmd::Token { workspace } => {
            let token = store.scim_token_issue(&workspace).await?;
            // Where the admin listener is (behind TLS or a proxy, the provider uses that address).
            let base = match admin_listen {
                Some(addr) => format!("http://{addr}/scim/v2/{workspace}"),
                None => format!("(the admin listener is off) /scim/v2/{workspace}"),
            };
            if json {
                print_json(&json!({"workspace": workspace, "token": token, "base_url": base}))?;
            } else {
                println!("SCIM base URL: {base}");
                println!("SCIM token (shown once; the previous one, if any, no longer works):");
                println!("{token}");
            }
        }
        ScimCmd::Revoke { workspace } => {
            store.scim_token_revoke(&workspace).await?;
            println!("SCIM access to {workspace} revoked");
        }
        ScimCmd::Groups { workspace } => {
            let (_, groups) = store
                .scim_groups(&workspace, &Filter::All, 0, i64::MAX, true)
                .await?;
            if json {
                let rows: Vec<_> = groups
                    .iter()
                    .map(|g| {
                        json!({"id": g.id, "name": g.display_name, "external_id": g.external_id,
                                    "role": g.role, "members": g.members.len()})
                    })
                    .collect();
                print_json(&rows)?;
            } else {
                println!("{:<8} {:<32} {:>8}  ROLE", "ID", "GROUP", "MEMBERS");
                for g in groups {
                    println!(
                        "{:<8} {:<32} {:>8}  {}",
                        g.id,
                        g.display_name,
                        g.members.len(),
                        g.role.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        ScimCmd::Map {
            workspace,
            group,
            role,
        } => {
            store
                .scim_group_map(&workspace, &group, Some(&role))
                .await?;
            println!("members of {group} hold role {role} in {workspace}");
        }
        ScimCmd::Unmap { workspace, group } => {
            store.scim_group_map(&workspace, &group, None).await?;
            println!("{group} gives no role in {workspace}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

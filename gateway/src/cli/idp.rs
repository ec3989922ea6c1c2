//! `mcpgw idp set|show|remove WS`: the workspace's identity provider, whose JWTs are accepted as
//! members' credentials (see `mcpgw::oidc`).

use super::{print_json, status, time};
use anyhow::{Result, bail};
use clap::Subcommand;
use mcpgw::config::Config;
use mcpgw::store::{IdpConfig, RoleMapping, Store};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum IdpCmd {
    /// Accept the JWTs of an OIDC issuer as this workspace's members' credentials (replaces
    /// any previous setting).
    Set {
        workspace: String,
        /// The issuer URL (https://), exactly as its tokens' `iss` says.
        #[arg(long)]
        issuer: String,
        /// What the tokens' `aud` must contain (default: the gateway's resource URL,
        /// `{public_url}/mcp`).
        #[arg(long)]
        audience: Option<String>,
        /// The claim naming the member (`sub` by default: never reassigned; `email` reads
        /// better but can move to another person).
        #[arg(long, default_value = "sub")]
        member_claim: String,
        /// The claim listing the caller's groups.
        #[arg(long)]
        groups_claim: Option<String>,
        /// GROUP=ROLE: members in GROUP get ROLE's grants while their token lists the group.
        #[arg(long = "role-map", value_name = "GROUP=ROLE")]
        role_map: Vec<String>,
        /// Create members the first time a valid token names them.
        #[arg(long)]
        auto_create: bool,
        /// A scope every token must carry (repeatable); missing one is 403 insufficient_scope.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// CA certificates (PEM) to trust for the issuer instead of the platform's roots.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// Show the settings, and the keys' state as the running gateway reports it.
    Show {
        workspace: String,
        /// The admin API (default: http://{admin_listen} from the configuration).
        #[arg(long, env = "MCPGW_ADMIN_URL")]
        admin_url: Option<String>,
    },
    /// Stop accepting the provider's tokens.
    Remove { workspace: String },
}

/// Runs an `idp` command.
pub async fn run(store: &Store, config: &Config, cmd: IdpCmd, json: bool) -> Result<ExitCode> {
    match cmd {
        IdpCmd::Set {
            workspace,
            issuer,
            audience,
            member_claim,
            groups_claim,
            role_map,
            auto_create,
            scopes,
            ca_file,
        } => {
            let audience = match (audience, &config.public_url) {
                (Some(a), _) => a,
                (None, Some(url)) => format!("{}/mcp", url.trim_end_matches('/')),
                (None, None) => bail!(
                    "give --audience, or set public_url so the gateway's resource URL can be used"
                ),
            };
            let role_map = role_map
                .iter()
                .map(|m| RoleMapping::parse(m))
                .collect::<Result<Vec<_>, _>>()?;
            let ca_file = match ca_file {
                Some(p) if p.is_relative() => Some(std::env::current_dir()?.join(p)),
                other => other,
            };
            let idp = IdpConfig {
                issuer,
                audience,
                member_claim,
                groups_claim,
                role_map,
                auto_create,
                scopes,
                ca_file,
            };
            store.idp_set(&workspace, &idp).await?;
            println!(
                "{workspace} accepts tokens of {} for audience {} (members: claim {:?})",
                idp.issuer, idp.audience, idp.member_claim
            );
        }
        IdpCmd::Show {
            workspace,
            admin_url,
        } => {
            let Some(idp) = store.idp_get(&workspace).await? else {
                bail!("{workspace} has no identity provider");
            };
            // The keys live in each gateway process: ask the running one.
            let live: Result<Value> = async {
                let body = status::admin_get(
                    config,
                    admin_url.as_deref(),
                    &format!("/v1/workspaces/{workspace}/idp"),
                )
                .await?;
                Ok(serde_json::from_slice::<Value>(&body)?["status"].clone())
            }
            .await;
            if json {
                let live = match &live {
                    Ok(v) => v.clone(),
                    Err(e) => json!({"unavailable": e.to_string()}),
                };
                print_json(&json!({"config": idp, "status": live}))?;
                return Ok(ExitCode::SUCCESS);
            }
            println!("issuer        {}", idp.issuer);
            println!("audience      {}", idp.audience);
            println!("member claim  {}", idp.member_claim);
            println!(
                "groups claim  {}",
                idp.groups_claim.as_deref().unwrap_or("-")
            );
            for m in &idp.role_map {
                println!("role map      {} = {}", m.group, m.role);
            }
            println!("auto create   {}", idp.auto_create);
            println!(
                "scopes        {}",
                if idp.scopes.is_empty() {
                    "-".into()
                } else {
                    idp.scopes.join(" ")
                }
            );
            if let Some(f) = &idp.ca_file {
                println!("ca file       {}", f.display());
            }
            match live {
                Ok(Value::Null) => println!("keys          not fetched yet by the running gateway"),
                Ok(s) => {
                    println!("jwks          {}", s["jwks_uri"].as_str().unwrap_or("-"));
                    println!("keys          {}", s["keys"]);
                    println!("last refresh  {}", time(s["last_refresh_ms"].as_i64()));
                    if let Some(e) = s["last_error"].as_str() {
                        println!(
                            "last error    {} ({})",
                            e,
                            time(s["last_error_ms"].as_i64())
                        );
                    }
                }
                Err(e) => println!("keys          unknown: {e}"),
            }
        }
        IdpCmd::Remove { workspace } => {
            store.idp_remove(&workspace).await?;
            println!("{workspace} no longer accepts its identity provider's tokens");
        }
    }
    Ok(ExitCode::SUCCESS)
}

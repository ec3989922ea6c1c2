//! mcpgw: a gateway for the Model Context Protocol.
//!
//! Modules, in the order a request meets them:
//! - [`config`]: `RawConfig` (the file) → [`config::Config`] (validated, env overrides applied).
//! - [`identity`]: bearer token → [`identity::Identity`] from an in-memory snapshot of the store,
//!   kept current across processes.
//! - [`policy`]: the Wasm policy chain that decides every `tools/call` and `tools/list` visibility,
//!   with hot reload of the policy directory.
//! - [`store`]: workspaces, servers, members, tokens and grants in SQLite or PostgreSQL.
//! - [`admin`]: the admin HTTP API over the store and the policy status.
#![warn(missing_docs)]

pub mod admin;
pub mod config;
pub mod identity;
pub mod policy;
pub mod store;

use anyhow::Context as _;
use std::future::Future;
use std::sync::Arc;

/// Runs the gateway until `shutdown` resolves: opens the store, loads the identity snapshot and
/// the policy chain, keeps both current, and serves the admin API when configured.
pub async fn run(config: config::Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let admin = match config.admin_listen {
        Some(addr) => {
            let token = config.admin_token.clone().context(
                "the admin API needs a token: set MCPGW_ADMIN_TOKEN (or admin_token_env in the config), \
                 or turn it off with admin_listen = \"off\"",
            )?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("bind admin API on {addr}"))?;
            Some((listener, token))
        }
        None => None,
    };
    run_with(config, admin, shutdown).await
}

/// [`run`] on an already bound admin listener (tests bind `127.0.0.1:0`).
pub async fn run_with(
    config: config::Config,
    admin: Option<(tokio::net::TcpListener, config::Secret)>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let store = store::Store::connect(&config.database)
        .await
        .context("open the database")?;
    let directory = identity::Directory::open(store)
        .await
        .context("load identities")?;
    let _identity_watch = directory.watch();
    let policy_config = config.policy.clone();
    let policies = tokio::task::spawn_blocking(move || policy::PolicySet::load(policy_config))
        .await
        .context("policy loader")?
        .context("load policies")?;
    let _policy_watch = match &config.policy.dir {
        Some(_) => Some(policies.watch()?),
        None => None,
    };
    tokio::pin!(shutdown);
    match admin {
        Some((listener, token)) => {
            let addr = listener.local_addr()?;
            // The first line on stdout says where to reach us: scripts and tests read it.
            println!("mcpgw admin API listening on http://{addr}");
            tracing::info!(%addr, "admin API listening");
            let admin = Arc::new(admin::Admin {
                directory: directory.clone(),
                policies: policies.clone(),
                token,
            });
            admin::serve(admin, listener, shutdown).await;
        }
        None => {
            println!("mcpgw running (admin API off)");
            shutdown.await;
        }
    }
    tracing::info!("shutting down");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

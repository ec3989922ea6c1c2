//! mcpgw: a gateway for the Model Context Protocol.
//!
//! Modules, in the order a request meets them:
//! - [`config`]: `RawConfig` (the file) → [`config::Config`] (validated, env overrides applied).
//! - [`listener`]: accept loops with connection limits and graceful shutdown.
//! - [`mcp`]: the MCP endpoint `/mcp/{server}`: route, authenticate, check, decide, forward, relay.
//! - [`identity`]: bearer token → [`identity::Identity`] from an in-memory snapshot of the store,
//!   kept current across processes.
//! - [`policy`]: the Wasm policy chain that decides every `tools/call` and `tools/list` visibility,
//!   with hot reload of the policy directory.
//! - [`upstream`]: the pooled HTTP(S) clients to upstream MCP servers.
//! - [`tls`]: what the listeners' TLS and the HTTPS upstreams share (provider, PEM files).
//! - [`store`]: workspaces, servers, members, tokens and grants in SQLite or PostgreSQL.
//! - [`audit`]: one record per `tools/call`, queued off the hot path, hash-chained per workspace.
//! - [`demo`]: demo upstream MCP servers (real rmcp servers) for `mcpgw dev` and the load harness.
//! - [`admin`]: the admin HTTP API over the store, the policy status and the audit trail.
#![warn(missing_docs)]

pub mod admin;
pub mod audit;
pub mod catalog;
pub mod clients;
pub mod config;
pub mod console;
pub mod demo;
pub mod flow;
pub mod identity;
pub mod limit;
pub mod listener;
pub mod mcp;
pub mod metrics;
pub mod oidc;
pub mod policy;
pub mod scim;
pub mod store;
pub mod tls;
pub mod upstream;

use anyhow::Context as _;
use std::future::Future;
use std::sync::Arc;

/// The sockets the gateway serves: bound by [`run`], or by tests on `127.0.0.1:0`.
pub struct Listeners {
    /// The MCP endpoint.
    pub mcp: tokio::net::TcpListener,
    /// The admin API and its token; `None` when it is off.
    pub admin: Option<(tokio::net::TcpListener, config::Secret)>,
}

/// Runs the gateway until `shutdown` resolves: binds the configured addresses, then [`run_with`].
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
    let mcp = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("bind the MCP listener on {}", config.listen))?;
    run_with(config, Listeners { mcp, admin }, shutdown).await
}

/// Opens the store, loads the identity snapshot and the policy chain, keeps both current, and
/// serves the MCP endpoint (and the admin API) until `shutdown` resolves; then stops accepting and
/// lets requests in flight finish (bounded).
pub async fn run_with(
    config: config::Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let store = store::Store::connect(&config.database)
        .await
        .context("open the database")?;
    let audit = audit::Audit::start(store.clone(), &config.audit);
    let flows = flow::Flows::shared(store.clone(), config.session.flow_ttl)
        .await
        .context("load flow labels")?;
    let catalog = catalog::Catalog::start(
        store.clone(),
        audit.clone(),
        config.session.pinning,
        config.session.tool_recheck,
    );
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
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let limits = listener::ListenerLimits::default();
    let metrics = Arc::new(metrics::Metrics::default());
    let mcp_addr = listeners.mcp.local_addr()?;
    // stdio servers' processes: each gets a home directory under the data directory.
    let upstream = upstream::Upstream::new(
        config.upstream_connect_timeout,
        config.upstream_timeout,
        metrics.clone(),
    )
    .with_stdio(upstream::stdio::StdioSettings {
        home_root: config.data_dir.join("stdio"),
        response_timeout: config.upstream_timeout,
        ..Default::default()
    });
    let stdio = upstream.stdio().clone();
    let idp = Arc::new(oidc::Idp::new(upstream.https().clone(), config.idp.clone()));
    // Identity providers' keys: fetched at start and kept fresh, so tokens rarely wait.
    let idp_refresh = {
        let (idp, directory) = (idp.clone(), directory.clone());
        tokio::spawn(async move {
            loop {
                idp.refresh_all(&directory).await;
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            }
        })
    };
    let proxy = Arc::new(mcp::Proxy::new(
        directory.clone(),
        idp.clone(),
        policies.clone(),
        upstream.clone(),
        mcp::Settings {
            limits: mcp::Limits::default(),
            origins: mcp::Origins::new(
                mcp_addr,
                config.public_url.as_deref(),
                &config.allowed_origins,
            )
            .map_err(anyhow::Error::msg)?,
            public_url: config.public_url.clone(),
            flows: flows.clone(),
            catalog: catalog.clone(),
        },
        audit.clone(),
        metrics.clone(),
    ));
    // TLS files are read now, so a bad one stops the start with the file named.
    let mcp_tls = match &config.tls {
        Some(files) => Some(Arc::new(
            listener::Tls::load("mcp", files.clone()).context("TLS of the MCP listener")?,
        )),
        None => None,
    };
    let admin_tls = match (&config.admin_tls, &listeners.admin) {
        (Some(files), Some(_)) => Some(Arc::new(
            listener::Tls::load("admin", files.clone()).context("TLS of the admin listener")?,
        )),
        _ => None,
    };
    let scheme = |tls: &Option<Arc<listener::Tls>>| if tls.is_some() { "https" } else { "http" };
    let mcp_scheme = scheme(&mcp_tls);
    // Ready lines on stdout say where to reach us: scripts and tests read them.
    println!(
        "mcpgw MCP endpoint listening on {}://{mcp_addr}/mcp/{{server}}",
        scheme(&mcp_tls)
    );
    tracing::info!(addr = %mcp_addr, tls = mcp_tls.is_some(), "MCP endpoint listening");
    let mcp_task = tokio::spawn(listener::serve(
        "mcp",
        listeners.mcp,
        limits.clone(),
        mcp_tls,
        move |req| proxy.clone().handle(req),
        stopped(),
    ));
    let admin_task = match listeners.admin {
        Some((listener, token)) => {
            let addr = listener.local_addr()?;
            println!(
                "mcpgw admin API listening on {}://{addr}",
                scheme(&admin_tls)
            );
            tracing::info!(%addr, tls = admin_tls.is_some(), "admin API listening");
            let admin = Arc::new(admin::Admin {
                directory: directory.clone(),
                policies: policies.clone(),
                token,
                audit: audit.clone(),
                metrics: metrics.clone(),
                stdio: stdio.clone(),
                idp: idp.clone(),
                console: console::Console::new(
                    upstream::client::Client::new(
                        upstream.clone(),
                        mcp::Limits::default().max_rewrite_bytes,
                    ),
                    admin_tls.is_some(),
                    format!(
                        "{}/mcp",
                        config
                            .public_url
                            .clone()
                            .unwrap_or_else(|| format!("{}://{mcp_addr}", mcp_scheme))
                            .trim_end_matches('/')
                    ),
                ),
            });
            Some(tokio::spawn(listener::serve(
                "admin",
                listener,
                limits,
                admin_tls,
                move |req| admin.clone().handle(req),
                stopped(),
            )))
        }
        None => None,
    };
    shutdown.await;
    tracing::info!("shutting down");
    idp_refresh.abort();
    let _ = stop_tx.send(true);
    let _ = mcp_task.await;
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    // No request is left: the stdio servers' processes are stopped (stdin closed, then their
    // process groups killed) and reaped.
    stdio.shutdown().await;
    // Every call has finished or been cut off, so every record is queued: write them all.
    audit.shutdown().await;
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

//! Demo upstream MCP servers for `mcpgw dev` and the load harness: real `rmcp` Streamable HTTP
//! servers (2025-11-25 sessions, or stateless) on loopback ports, with made-up data.
//!
//! - `db`: `query` (read-only SQL, answers with canned rows) and `schema`.
//! - `ci`: `deploy` (reports progress while it "rolls out") and `status`.
//! - `search`: `web`.

use http_body_util::BodyExt as _;
use rmcp::handler::server::{router::tool::ToolRouter, wrapper::Parameters};
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ProgressNotificationParam, ServerCapabilities,
    ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router,
};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Arguments of `db.query`.
#[derive(serde::Deserialize, schemars::JsonSchema)]
pub struct QueryArgs {
    /// A read-only SQL statement.
    pub sql: String,
}

/// Arguments of `ci.deploy` and `ci.status`.
#[derive(serde::Deserialize, schemars::JsonSchema)]
pub struct ServiceArgs {
    /// Service name, for example `api`.
    pub service: String,
    /// Target environment (`deploy` only), for example `staging`.
    #[serde(default)]
    pub environment: Option<String>,
}

/// Arguments of `search.web`.
#[derive(serde::Deserialize, schemars::JsonSchema)]
pub struct WebArgs {
    /// What to look for.
    pub query: String,
}

fn text(s: impl Into<String>) -> Result<CallToolResult, McpError> {
    Ok(CallToolResult::success(vec![ContentBlock::text(s.into())]))
}

/// The `db` demo server.
#[derive(Clone)]
pub struct Db {
    tool_router: ToolRouter<Self>,
}

impl Default for Db {
    fn default() -> Self {
        Db::new()
    }
}

#[tool_router]
impl Db {
    /// The server, to serve on any transport (the load harness serves it over stdio too).
    pub fn new() -> Self {
        Db {
            tool_router: Self::tool_router(),
        }
    }

    #[tool(description = "Run a read-only SQL query against the demo database")]
    async fn query(
        &self,
        Parameters(a): Parameters<QueryArgs>,
    ) -> Result<CallToolResult, McpError> {
        let sql = a.sql.trim().to_ascii_lowercase();
        if !sql.starts_with("select") {
            return Ok(CallToolResult::error(vec![ContentBlock::text(
                "only SELECT statements are allowed",
            )]));
        }
        text(
            "id | name  | email\n1  | Ada   | ada@example.com\n2  | Grace | grace@example.com\n(2 rows)",
        )
    }

    #[tool(description = "Describe the demo database's tables")]
    async fn schema(&self) -> Result<CallToolResult, McpError> {
        text("users(id, name, email)\norders(id, user_id, total, created_at)")
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Db {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("demo-db", env!("CARGO_PKG_VERSION")))
    }
}

/// The `ci` demo server.
#[derive(Clone)]
pub struct Ci {
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl Ci {
    fn new() -> Self {
        Ci {
            tool_router: Self::tool_router(),
        }
    }

    #[tool(description = "Deploy a service to an environment (reports progress)")]
    async fn deploy(
        &self,
        Parameters(a): Parameters<ServiceArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let env = a.environment.unwrap_or_else(|| "staging".into());
        if let Some(token) = ctx.meta.get_progress_token() {
            for (i, step) in ["build", "push", "roll out"].iter().enumerate() {
                let p = ProgressNotificationParam::new(token.clone(), (i + 1) as f64)
                    .with_total(3.0)
                    .with_message(format!("{step} {}", a.service));
                let _ = ctx.peer.notify_progress(p).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        text(format!("deployed {} to {env}", a.service))
    }

    #[tool(description = "Show a service's deployment status")]
    async fn status(
        &self,
        Parameters(a): Parameters<ServiceArgs>,
    ) -> Result<CallToolResult, McpError> {
        text(format!(
            "{}: healthy, 3/3 replicas, version 1.4.2",
            a.service
        ))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Ci {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("demo-ci", env!("CARGO_PKG_VERSION")))
    }
}

/// The `search` demo server.
#[derive(Clone)]
pub struct Search {
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl Search {
    fn new() -> Self {
        Search {
            tool_router: Self::tool_router(),
        }
    }

    #[tool(description = "Search the web (demo results)")]
    async fn web(&self, Parameters(a): Parameters<WebArgs>) -> Result<CallToolResult, McpError> {
        text(format!(
            "1. {q} - Wikipedia\n2. {q} explained\n3. Ask HN: {q}",
            q = a.query
        ))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Search {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_server_info(
            Implementation::new("demo-search", env!("CARGO_PKG_VERSION")),
        )
    }
}

/// A running demo server; stops when dropped.
pub struct DemoServer {
    /// Its name (`db`, `ci`, `search`).
    pub name: &'static str,
    /// Its MCP endpoint.
    pub url: String,
    stop: CancellationToken,
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Serves one MCP server on `addr` (port 0: any free port).
pub async fn serve<S>(
    name: &'static str,
    addr: SocketAddr,
    stateful: bool,
    make: impl Fn() -> S + Send + Sync + 'static,
) -> std::io::Result<DemoServer>
where
    S: ServerHandler,
{
    let stop = CancellationToken::new();
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(stateful)
        .with_sse_keep_alive(Some(Duration::from_secs(15)))
        .with_cancellation_token(stop.child_token());
    let service = StreamableHttpService::new(
        move || Ok(make()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let url = format!("http://{}/mcp", listener.local_addr()?);
    let token = stop.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                _ = token.cancelled() => break,
                r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            };
            let _ = tcp.set_nodelay(true);
            let service = service.clone();
            let handler =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let mut service = service.clone();
                    async move {
                        let resp = tower_service::Service::call(&mut service, req).await?;
                        Ok::<_, Infallible>(resp.map(|b| {
                            b.map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })
                                .boxed()
                        }))
                    }
                });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), handler)
                    .await;
            });
        }
    });
    Ok(DemoServer { name, url, stop })
}

/// The three demo servers on loopback ports (2025-11-25 sessions).
pub async fn start_all() -> std::io::Result<Vec<DemoServer>> {
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    Ok(vec![
        serve("db", any, true, Db::new).await?,
        serve("ci", any, true, Ci::new).await?,
        serve("search", any, true, Search::new).await?,
    ])
}

/// The `db` server alone, stateless or not (for the load harness).
pub async fn start_db(addr: SocketAddr, stateful: bool) -> std::io::Result<DemoServer> {
    serve("db", addr, stateful, Db::new).await
}

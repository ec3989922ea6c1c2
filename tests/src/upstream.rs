//! Real MCP servers for the tests: rmcp's Streamable HTTP server on a loopback port, stateful
//! (2025-11-25 sessions) or stateless, exposing a handful of tools.

use rmcp::handler::server::{router::tool::ToolRouter, wrapper::Parameters};
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ProgressNotificationParam, ServerCapabilities,
    ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Arguments of `query`.
#[derive(serde::Deserialize, schemars::JsonSchema)]
pub struct QueryArgs {
    /// The SQL.
    pub sql: String,
    /// Optional row cap.
    #[serde(default)]
    pub limit: Option<u64>,
}

/// Arguments of `steps`.
#[derive(serde::Deserialize, schemars::JsonSchema)]
pub struct StepArgs {
    /// Number of progress notifications.
    pub steps: u32,
    /// Pause between them.
    pub delay_ms: u64,
}

/// Arguments of `echo`.
#[derive(serde::Deserialize, schemars::JsonSchema)]
pub struct EchoArgs {
    /// Returned as the result text.
    pub text: String,
}

/// The test server's tools: `query`, `schema`, `steps` (progress), `roots` (asks the client), `echo`.
#[derive(Clone)]
pub struct Demo {
    tool_router: ToolRouter<Self>,
    calls: Arc<AtomicUsize>,
}

#[tool_router]
impl Demo {
    /// The tools, counting calls in `calls`.
    pub fn new(calls: Arc<AtomicUsize>) -> Self {
        Demo {
            tool_router: Self::tool_router(),
            calls,
        }
    }

    #[tool(description = "Take delay_ms to answer")]
    async fn slow(&self, Parameters(a): Parameters<StepArgs>) -> Result<CallToolResult, McpError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(a.delay_ms)).await;
        Ok(CallToolResult::success(vec![ContentBlock::text(
            "slow done",
        )]))
    }

    #[tool(description = "Run a read-only SQL query")]
    async fn query(
        &self,
        Parameters(a): Parameters<QueryArgs>,
    ) -> Result<CallToolResult, McpError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(CallToolResult::success(vec![ContentBlock::text(format!(
            "rows for: {}",
            a.sql
        ))]))
    }

    #[tool(description = "Describe the schema")]
    async fn schema(&self) -> Result<CallToolResult, McpError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(CallToolResult::success(vec![ContentBlock::text(
            "users(id, name)",
        )]))
    }

    #[tool(description = "Report progress in steps")]
    async fn steps(
        &self,
        Parameters(a): Parameters<StepArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let token = ctx.meta.get_progress_token();
        for i in 1..=a.steps {
            if let Some(t) = &token {
                let p = ProgressNotificationParam::new(t.clone(), f64::from(i))
                    .with_total(f64::from(a.steps))
                    .with_message(format!("step {i}"));
                ctx.peer
                    .notify_progress(p)
                    .await
                    .map_err(|e| McpError::internal_error(e.to_string(), None))?;
            }
            tokio::time::sleep(Duration::from_millis(a.delay_ms)).await;
        }
        Ok(CallToolResult::success(vec![ContentBlock::text(format!(
            "done after {} steps",
            a.steps
        ))]))
    }

    #[tool(
        description = "List the client's roots: a server-to-client request in the middle of a call"
    )]
    #[allow(deprecated)] // roots are deprecated by SEP-2577 but still part of 2025-11-25
    async fn roots(&self, ctx: RequestContext<RoleServer>) -> Result<CallToolResult, McpError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let roots = ctx
            .peer
            .list_roots()
            .await
            .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        let uris: Vec<String> = roots.roots.into_iter().map(|r| r.uri).collect();
        Ok(CallToolResult::success(vec![ContentBlock::text(format!(
            "roots: {}",
            uris.join(",")
        ))]))
    }

    #[tool(description = "Fail with the text as a tool error (isError)")]
    async fn fail(&self, Parameters(a): Parameters<EchoArgs>) -> Result<CallToolResult, McpError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(CallToolResult::error(vec![ContentBlock::text(a.text)]))
    }

    #[tool(description = "Echo the text")]
    async fn echo(&self, Parameters(a): Parameters<EchoArgs>) -> Result<CallToolResult, McpError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(CallToolResult::success(vec![ContentBlock::text(a.text)]))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Demo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("demo-upstream", "0.1.0"))
    }
}

/// A running upstream (served by `mcpgw::demo::serve`); stops when dropped.
pub struct Upstream {
    /// Its MCP endpoint.
    pub url: String,
    /// `tools/call`s it has started.
    pub calls: Arc<AtomicUsize>,
    _server: mcpgw::demo::DemoServer,
}

impl Upstream {
    /// Starts a server on `127.0.0.1:0`; `stateful` selects 2025-11-25 sessions.
    pub async fn start(stateful: bool) -> Upstream {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let server = mcpgw::demo::serve("test", ([127, 0, 0, 1], 0).into(), stateful, move || {
            Demo::new(c.clone())
        })
        .await
        .expect("start upstream");
        Upstream {
            url: server.url.clone(),
            calls,
            _server: server,
        }
    }

    /// Tool calls executed so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// A client that answers the server's `roots/list` request with one root.
#[derive(Clone)]
pub struct RootsClient;

#[allow(deprecated)] // roots are deprecated by SEP-2577 but still part of 2025-11-25
impl rmcp::ClientHandler for RootsClient {
    async fn list_roots(
        &self,
        _: rmcp::service::RequestContext<rmcp::RoleClient>,
    ) -> Result<rmcp::model::ListRootsResult, McpError> {
        Ok(rmcp::model::ListRootsResult::new(vec![
            rmcp::model::Root::new("file:///work/project"),
        ]))
    }

    fn get_info(&self) -> rmcp::model::ClientConfig {
        #[allow(deprecated)]
        let capabilities = rmcp::model::ClientCapabilities::builder()
            .enable_roots()
            .build();
        rmcp::model::ClientConfig::new(capabilities, Implementation::new("roots-client", "0.1.0"))
    }
}

/// A server whose tools are data: each answers with a fixed text, and descriptions can change
/// while clients are connected (a rug pull).
#[derive(Clone)]
pub struct Toolbox {
    /// (name, description, answer) of each tool.
    tools: Arc<std::sync::Mutex<Vec<(String, String, String)>>>,
    /// `tools/call`s it has started.
    pub calls: Arc<AtomicUsize>,
}

impl Toolbox {
    /// Tools given as (name, description, answer).
    pub fn new(tools: &[(&str, &str, &str)]) -> Toolbox {
        Toolbox {
            tools: Arc::new(std::sync::Mutex::new(
                tools
                    .iter()
                    .map(|(n, d, a)| ((*n).to_owned(), (*d).to_owned(), (*a).to_owned()))
                    .collect(),
            )),
            calls: Arc::default(),
        }
    }

    /// Changes a tool's description.
    pub fn describe(&self, name: &str, description: &str) {
        let mut tools = self.tools.lock().expect("tools");
        for t in tools.iter_mut().filter(|t| t.0 == name) {
            t.1 = description.to_owned();
        }
    }

    /// Serves it on `127.0.0.1:0` (2025-11-25 sessions when `stateful`).
    pub async fn serve(&self, stateful: bool) -> (String, mcpgw::demo::DemoServer) {
        let this = self.clone();
        let server =
            mcpgw::demo::serve("toolbox", ([127, 0, 0, 1], 0).into(), stateful, move || {
                this.clone()
            })
            .await
            .expect("start toolbox");
        (server.url.clone(), server)
    }
}

impl ServerHandler for Toolbox {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("toolbox", "0.1.0"))
    }

    async fn list_tools(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListToolsResult, McpError> {
        let schema: rmcp::model::JsonObject = serde_json::from_value(serde_json::json!({
            "type": "object", "properties": {"q": {"type": "string"}}}))
        .expect("schema");
        let schema = Arc::new(schema);
        let tools = self
            .tools
            .lock()
            .expect("tools")
            .iter()
            .map(|(n, d, _)| rmcp::model::Tool::new(n.clone(), d.clone(), schema.clone()))
            .collect();
        Ok(rmcp::model::ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, McpError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = self
            .tools
            .lock()
            .expect("tools")
            .iter()
            .find(|t| *t.0 == *request.name)
            .map(|t| t.2.clone())
            .ok_or_else(|| McpError::invalid_params("no such tool", None))?;
        Ok(CallToolResult::success(vec![ContentBlock::text(answer)]).into())
    }
}

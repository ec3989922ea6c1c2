//! The two stdio MCP servers the stdio-upstream tests spawn, checked directly with the official
//! Rust SDK's stdio client (rmcp `TokioChildProcess`), no gateway in between: the workspace's
//! `reference-server --stdio` and the npm `@modelcontextprotocol/server-everything` that
//! `scripts/setup` installs. Each is initialized at 2025-11-25, listed, and called for plain text,
//! progress notifications and a server-to-client `sampling/createMessage`, so that a failure of a
//! gateway test through them is the gateway's.

// Sampling is deprecated by SEP-2577 but part of 2025-11-25, which both servers speak.
#![allow(deprecated)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcpgw_tests::{reference_server_bin, server_everything_or_skip, wait_until_async};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig,
    CreateMessageRequestParams, CreateMessageResult, ErrorData, Implementation,
    ProgressNotificationParam, ProtocolVersion, SamplingMessage,
};
use rmcp::service::{NotificationContext, RequestContext, RunningService};
use rmcp::transport::{ConfigureCommandExt as _, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt as _};
use serde_json::{Value, json};

/// The model name the client's sampling answers carry.
const MODEL: &str = "stdio-fixture-model";

/// A 2025-11-25 client that declares sampling, answers every `sampling/createMessage` with
/// "sampled: PROMPT", and keeps the progress notifications it receives.
#[derive(Clone, Default)]
struct Client {
    progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
    prompts: Arc<Mutex<Vec<String>>>,
}

impl rmcp::ClientHandler for Client {
    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let prompt = params
            .messages
            .iter()
            .filter_map(|m| m.content.first()?.as_text().map(|t| t.text.clone()))
            .collect::<Vec<_>>()
            .join(" ");
        self.prompts.lock().unwrap().push(prompt.clone());
        Ok(CreateMessageResult::new(
            SamplingMessage::assistant_text(format!("sampled: {prompt}")),
            MODEL.to_owned(),
        )
        .with_stop_reason(CreateMessageResult::STOP_REASON_END_TURN))
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push(params);
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::builder().enable_sampling().build(),
            Implementation::new("stdio-fixture-client", "0.1.0"),
        )
        .with_protocol_version(ProtocolVersion::V_2025_11_25)
    }
}

impl Client {
    fn progress(&self) -> Vec<(f64, Option<f64>)> {
        let progress = self.progress.lock().unwrap();
        progress.iter().map(|p| (p.progress, p.total)).collect()
    }
}

/// Spawns `program args...` with exactly `env` as its environment and initializes it over stdio.
async fn connect(
    program: &Path,
    args: &[String],
    env: &[(&str, &str)],
) -> (Client, RunningService<RoleClient, Client>) {
    let command = tokio::process::Command::new(program).configure(|cmd| {
        cmd.args(args).env_clear().envs(env.iter().copied());
    });
    let transport = TokioChildProcess::new(command)
        .unwrap_or_else(|e| panic!("spawning {}: {e}", program.display()));
    let client = Client::default();
    let service = match tokio::time::timeout(
        Duration::from_secs(20),
        client.clone().serve(transport),
    )
    .await
    {
        Ok(Ok(service)) => service,
        Ok(Err(e)) => panic!("initializing {}: {e}", program.display()),
        Err(_) => panic!("{} did not initialize in 20 s", program.display()),
    };
    let info = service.peer_info().expect("the initialize result");
    assert_eq!(info.protocol_version, ProtocolVersion::V_2025_11_25);
    (client, service)
}

async fn tool_names(service: &RunningService<RoleClient, Client>) -> Vec<String> {
    let tools = service.list_all_tools().await.expect("tools/list");
    tools.into_iter().map(|t| t.name.into_owned()).collect()
}

async fn call(service: &RunningService<RoleClient, Client>, tool: &str, args: Value) -> String {
    let Value::Object(args) = args else {
        panic!("arguments are an object")
    };
    let result: CallToolResult = tokio::time::timeout(
        Duration::from_secs(20),
        service.call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args)),
    )
    .await
    .unwrap_or_else(|_| panic!("{tool} did not answer in 20 s"))
    .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert_ne!(result.is_error, Some(true), "{tool} failed: {result:?}");
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits for `n` progress notifications (they are handled beside the call's answer, so may land
/// just after it).
async fn wait_progress(client: &Client, n: usize) -> Vec<(f64, Option<f64>)> {
    let waited = wait_until_async(Duration::from_secs(5), || client.progress().len() >= n).await;
    let progress = client.progress();
    assert!(
        waited.is_some(),
        "{n} progress notifications expected: {progress:?}"
    );
    progress
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_server_serves_its_fixtures_over_stdio() {
    let (client, service) = connect(
        &reference_server_bin(),
        &["--stdio".to_owned()],
        &[("FIXTURE_GREETING", "hello")],
    )
    .await;
    let names = tool_names(&service).await;
    for name in [
        "test_simple_text",
        "test_tool_with_progress",
        "test_sampling",
        "debug_environment",
        "debug_crash",
    ] {
        assert!(
            names.iter().any(|n| n == name),
            "{name} not listed: {names:?}"
        );
    }

    assert_eq!(
        call(&service, "test_simple_text", json!({})).await,
        "This is a simple text response for testing."
    );

    assert_eq!(
        call(&service, "test_tool_with_progress", json!({})).await,
        "Progress test completed"
    );
    assert_eq!(
        wait_progress(&client, 3).await,
        [
            (0.0, Some(100.0)),
            (50.0, Some(100.0)),
            (100.0, Some(100.0))
        ]
    );

    assert_eq!(
        call(&service, "test_sampling", json!({"prompt": "What is 2+2?"})).await,
        "LLM response: sampled: What is 2+2?"
    );
    assert_eq!(*client.prompts.lock().unwrap(), ["What is 2+2?"]);

    let report: Value = serde_json::from_str(&call(&service, "debug_environment", json!({})).await)
        .expect("debug_environment answers JSON");
    assert_eq!(
        report["env"],
        json!({"FIXTURE_GREETING": "hello"}),
        "{report}"
    );
    assert!(report["uid"].is_u64() && report["pid"].is_u64(), "{report}");

    service.cancel().await.expect("closing the client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_everything_from_npm_serves_over_stdio() {
    let Some((node, args)) =
        server_everything_or_skip("server_everything_from_npm_serves_over_stdio")
    else {
        return;
    };
    let (client, service) = connect(&node, &args, &[("FIXTURE_GREETING", "hello")]).await;
    let names = tool_names(&service).await;
    // trigger-sampling-request is listed only to a client that declares sampling.
    for name in [
        "echo",
        "get-sum",
        "get-env",
        "trigger-long-running-operation",
        "trigger-sampling-request",
    ] {
        assert!(
            names.iter().any(|n| n == name),
            "{name} not listed: {names:?}"
        );
    }

    assert_eq!(
        call(&service, "echo", json!({"message": "hi"})).await,
        "Echo: hi"
    );

    let done = call(
        &service,
        "trigger-long-running-operation",
        json!({"duration": 0.3, "steps": 3}),
    )
    .await;
    assert!(
        done.starts_with("Long running operation completed"),
        "{done}"
    );
    assert_eq!(
        wait_progress(&client, 3).await,
        [(1.0, Some(3.0)), (2.0, Some(3.0)), (3.0, Some(3.0))]
    );

    let sampled = call(
        &service,
        "trigger-sampling-request",
        json!({"prompt": "What is 2+2?", "maxTokens": 10}),
    )
    .await;
    assert!(
        sampled.contains(MODEL) && sampled.contains("sampled: "),
        "{sampled}"
    );
    let prompts = client.prompts.lock().unwrap().clone();
    assert!(
        prompts.len() == 1 && prompts[0].ends_with("What is 2+2?"),
        "{prompts:?}"
    );

    let env: Value = serde_json::from_str(&call(&service, "get-env", json!({})).await)
        .expect("get-env answers JSON");
    assert_eq!(env["FIXTURE_GREETING"], "hello", "{env}");

    service.cancel().await.expect("closing the client");
}

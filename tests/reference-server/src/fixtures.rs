//! The fixtures: tools, prompts, resources and behaviours that the conformance suite's server
//! scenarios call by name (`test_simple_text`, `test://static-text`, `test_simple_prompt`, ...).
//! Names, payloads and flows follow the scenarios in `@modelcontextprotocol/conformance`
//! 0.2.0-alpha.12 (`src/scenarios/server/*.ts`).

// Logging and sampling are deprecated by SEP-2577, and resources/subscribe by subscriptions/listen,
// but the suite still tests them at 2025-11-25, so the fixtures implement them.
#![allow(deprecated)]

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::*,
    service::{RequestContext, SubscriptionContext, SubscriptionSink},
};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// 1x1 PNG.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg==";
/// An empty 44.1 kHz mono WAV.
const WAV: &str = "UklGRiQAAABXQVZFZm10IBAAAAABAAEARKwAAIhYAQACABAAZGF0YQAAAAA=";
/// `ttlMs` on list and read results (SEP-2549 caching hints, required at 2026-07-28).
const TTL_MS: u64 = 60_000;
/// Key sealing `requestState` (SEP-2322). A fixed key is fine for a test fixture only.
const STATE_KEY: &[u8] = b"mcpgw reference-server requestState key, test only";

#[derive(Clone)]
pub struct Fixtures {
    /// `resources/subscribe` URIs (2025-11-25).
    watched: Arc<Mutex<HashSet<String>>>,
    /// Open `subscriptions/listen` streams (2026-07-28).
    listeners: Arc<Mutex<HashMap<u64, SubscriptionSink>>>,
    next_listener: Arc<AtomicU64>,
    log_level: Arc<Mutex<LoggingLevel>>,
    state: RequestStateCodec,
    /// Also list and run the tools of [`crate::debug`] (`--stdio` mode only).
    debug_tools: bool,
}

impl Fixtures {
    pub fn new() -> Self {
        Self {
            watched: Arc::default(),
            listeners: Arc::default(),
            next_listener: Arc::default(),
            log_level: Arc::new(Mutex::new(LoggingLevel::Debug)),
            state: RequestStateCodec::try_new(STATE_KEY)
                .expect("the requestState key is long enough"),
            debug_tools: false,
        }
    }

    /// The same fixtures plus `debug_environment` and `debug_crash` ([`crate::debug`]).
    pub fn with_debug_tools(mut self) -> Self {
        self.debug_tools = true;
        self
    }
}

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        other => panic!("a fixture schema is not an object: {other}"),
    }
}

fn no_args() -> JsonObject {
    object(json!({ "type": "object", "properties": {} }))
}

fn text(s: impl Into<String>) -> CallToolResponse {
    CallToolResult::success(vec![ContentBlock::text(s)]).into()
}

fn tool(name: &'static str, description: &'static str, schema: JsonObject) -> Tool {
    Tool::new(name, description, schema)
}

/// `x-mcp-header` (SEP-2243): the gateway and the server must both mirror `value` into the
/// `Mcp-Param-Value` header and the server rejects a mismatch.
fn custom_header_tool() -> Tool {
    tool(
        "test_custom_header",
        "Echoes `value`, which clients also send in the Mcp-Param-Value header (SEP-2243)",
        object(json!({
            "type": "object",
            "properties": { "value": { "type": "string", "x-mcp-header": "Value" } },
            "required": ["value"]
        })),
    )
}

fn tools() -> Vec<Tool> {
    let mut tools = vec![
        tool("test_simple_text", "Returns one text block", no_args()),
        tool(
            "test_image_content",
            "Returns one PNG image block",
            no_args(),
        ),
        tool(
            "test_audio_content",
            "Returns one WAV audio block",
            no_args(),
        ),
        tool(
            "test_embedded_resource",
            "Returns an embedded text resource",
            no_args(),
        ),
        tool(
            "test_multiple_content_types",
            "Returns text, an image and a resource",
            no_args(),
        ),
        tool(
            "test_tool_with_logging",
            "Sends three log messages while it runs",
            no_args(),
        ),
        tool(
            "test_error_handling",
            "Always fails with isError: true",
            no_args(),
        ),
        tool(
            "test_tool_with_progress",
            "Reports progress 0, 50, 100 of 100",
            no_args(),
        ),
        tool(
            "test_sampling",
            "Asks the client to sample (sampling/createMessage)",
            object(json!({
                "type": "object",
                "properties": { "prompt": { "type": "string", "description": "The prompt to send" } },
                "required": ["prompt"]
            })),
        ),
        tool(
            "test_elicitation",
            "Asks the client for a username and an email (elicitation/create)",
            object(json!({
                "type": "object",
                "properties": { "message": { "type": "string", "description": "The message to show" } },
                "required": ["message"]
            })),
        ),
        tool(
            "test_elicitation_sep1034_defaults",
            "Elicits fields that all have defaults (SEP-1034)",
            no_args(),
        ),
        tool(
            "test_elicitation_sep1330_enums",
            "Elicits every enum form (SEP-1330)",
            no_args(),
        ),
        tool(
            "json_schema_2020_12_tool",
            "An input schema using JSON Schema 2020-12 keywords",
            // The suite's canonical fixture: 2020-12 dialect, `$defs` with an `$anchor`,
            // composition and conditional keywords (SEP-1613, SEP-2106).
            object(json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "$defs": {
                    "address": {
                        "$anchor": "addressDef",
                        "type": "object",
                        "properties": { "street": { "type": "string" }, "city": { "type": "string" } }
                    }
                },
                "properties": {
                    "name": { "type": "string" },
                    "address": { "$ref": "#/$defs/address" },
                    "contactMethod": { "type": "string", "enum": ["phone", "email"] },
                    "phone": { "type": "string" },
                    "email": { "type": "string" }
                },
                "allOf": [{ "anyOf": [{ "required": ["phone"] }, { "required": ["email"] }] }],
                "if": {
                    "properties": { "contactMethod": { "const": "phone" } },
                    "required": ["contactMethod"]
                },
                "then": { "required": ["phone"] },
                "else": { "required": ["email"] },
                "additionalProperties": false
            })),
        ),
        tool(
            "test_reconnection",
            "Closes its SSE stream mid-call; the client resumes with Last-Event-ID (SEP-1699)",
            no_args(),
        ),
        custom_header_tool(),
        tool(
            "test_trigger_tool_change",
            "Sends notifications/tools/list_changed to every listener",
            no_args(),
        ),
        tool(
            "test_trigger_prompt_change",
            "Sends notifications/prompts/list_changed to every listener",
            no_args(),
        ),
        tool(
            "test_missing_capability",
            "Fails with -32021 unless the client declared sampling",
            no_args(),
        ),
        tool(
            "test_streaming_elicitation",
            "Returns an input-required result asking for one elicitation",
            no_args(),
        ),
        tool(
            "test_logging_tool",
            "Logs once at the request's logLevel, if it has one",
            no_args(),
        ),
    ];
    for (name, description) in [
        (
            "test_input_required_result_elicitation",
            "Needs one elicitation (SEP-2322)",
        ),
        (
            "test_input_required_result_sampling",
            "Needs one sampling result (SEP-2322)",
        ),
        (
            "test_input_required_result_list_roots",
            "Needs the client's roots (SEP-2322)",
        ),
        (
            "test_input_required_result_request_state",
            "Round-trips a sealed requestState",
        ),
        (
            "test_input_required_result_multiple_inputs",
            "Needs three inputs in one round",
        ),
        (
            "test_input_required_result_multi_round",
            "Two input rounds, then completes",
        ),
        (
            "test_input_required_result_tampered_state",
            "Rejects a tampered requestState",
        ),
        (
            "test_input_required_result_capabilities",
            "Asks only for declared capabilities",
        ),
    ] {
        tools.push(tool(name, description, no_args()));
    }
    tools
}

fn elicitation(message: &str, schema: Value) -> InputRequest {
    InputRequest::Elicitation(ElicitRequest::new(form(message, schema)))
}

fn form(message: &str, schema: Value) -> ElicitRequestParams {
    serde_json::from_value(json!({ "mode": "form", "message": message, "requestedSchema": schema }))
        .expect("fixture elicitation schemas are valid")
}

fn one_string(field: &str) -> Value {
    json!({ "type": "object", "properties": { field: { "type": "string" } }, "required": [field] })
}

fn sampling(prompt: &str) -> InputRequest {
    InputRequest::CreateMessage(CreateMessageRequest::new(CreateMessageRequestParams::new(
        vec![SamplingMessage::user_text(prompt)],
        100,
    )))
}

fn roots() -> InputRequest {
    InputRequest::ListRoots(ListRootsRequest::default())
}

fn requests<const N: usize>(entries: [(&str, InputRequest); N]) -> InputRequests {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// The client's answer to input request `key`, if it is an object (a result); anything else
/// counts as missing and is asked again.
fn answer<'a>(responses: Option<&'a InputResponses>, key: &str) -> Option<&'a JsonObject> {
    responses?.get(key)?.as_object()
}

fn content_str<'a>(answer: &'a JsonObject, field: &str) -> Option<&'a str> {
    answer.get("content")?.get(field)?.as_str()
}

fn action_name(action: &ElicitationAction) -> &'static str {
    match action {
        ElicitationAction::Accept => "accept",
        ElicitationAction::Decline => "decline",
        ElicitationAction::Cancel => "cancel",
        _ => "unknown",
    }
}

impl Fixtures {
    fn seal(&self, state: Value) -> Result<String, ErrorData> {
        self.state
            .seal_json(&state)
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))
    }

    fn open(&self, sealed: &str) -> Result<Value, ErrorData> {
        self.state.open_json(sealed).map_err(|_| {
            ErrorData::invalid_params("requestState failed integrity verification", None)
        })
    }

    /// SEP-2322 (2026-07-28): each returns an input-required result until the retry carries the
    /// answers (and, where used, the sealed `requestState`).
    fn input_required_tool(
        &self,
        request: &CallToolRequestParams,
        meta: &RequestMetaObject,
    ) -> Result<CallToolResponse, ErrorData> {
        let responses = request.input_responses.as_ref();
        let state = request.request_state.as_deref();
        Ok(match request.name.as_ref() {
            "test_input_required_result_elicitation" => match answer(responses, "user_name") {
                Some(a) => text(format!("Hello, {}!", content_str(a, "name").unwrap_or("friend"))),
                None => InputRequiredResult::from_input_requests(requests([(
                    "user_name",
                    elicitation("What is your name?", one_string("name")),
                )]))
                .into(),
            },
            "test_input_required_result_sampling" => match answer(responses, "capital_question") {
                Some(a) => text(format!(
                    "Sampling response: {}",
                    content_str(a, "text").unwrap_or("(no text)")
                )),
                None => InputRequiredResult::from_input_requests(requests([(
                    "capital_question",
                    sampling("What is the capital of France?"),
                )]))
                .into(),
            },
            "test_input_required_result_list_roots" => match answer(responses, "client_roots") {
                Some(a) => {
                    let uris: Vec<&str> = a
                        .get("roots")
                        .and_then(Value::as_array)
                        .map(|r| r.iter().filter_map(|r| r.get("uri")?.as_str()).collect())
                        .unwrap_or_default();
                    text(format!("Client roots: [{}]", uris.join(", ")))
                }
                None => InputRequiredResult::from_input_requests(requests([(
                    "client_roots",
                    roots(),
                )]))
                .into(),
            },
            "test_input_required_result_request_state"
            | "test_input_required_result_tampered_state" => match state {
                Some(sealed) => {
                    self.open(sealed)?;
                    text("Confirmed: state-ok")
                }
                None => InputRequiredResult::new(
                    Some(requests([(
                        "confirm",
                        elicitation(
                            "Please confirm",
                            json!({ "type": "object", "properties": { "ok": { "type": "boolean" } }, "required": ["ok"] }),
                        ),
                    )])),
                    Some(self.seal(json!({ "stage": "confirm" }))?),
                )
                .into(),
            },
            "test_input_required_result_multiple_inputs" => {
                if let Some(sealed) = state {
                    self.open(sealed)?;
                }
                let all = ["user_name", "greeting", "client_roots"]
                    .iter()
                    .all(|k| answer(responses, k).is_some());
                if all && state.is_some() {
                    text("All inputs received")
                } else {
                    InputRequiredResult::new(
                        Some(requests([
                            ("user_name", elicitation("What is your name?", one_string("name"))),
                            ("greeting", sampling("Generate a greeting")),
                            ("client_roots", roots()),
                        ])),
                        Some(self.seal(json!({ "stage": "gather" }))?),
                    )
                    .into()
                }
            }
            "test_input_required_result_multi_round" => {
                let round = match state {
                    Some(sealed) => self.open(sealed)?.get("round").and_then(Value::as_i64).unwrap_or(0),
                    None => 0,
                };
                match round {
                    0 => InputRequiredResult::new(
                        Some(requests([(
                            "step1",
                            elicitation("Step 1: What is your name?", one_string("name")),
                        )])),
                        Some(self.seal(json!({ "round": 1 }))?),
                    )
                    .into(),
                    1 => InputRequiredResult::new(
                        Some(requests([(
                            "step2",
                            elicitation("Step 2: What is your favorite color?", one_string("color")),
                        )])),
                        Some(self.seal(json!({ "round": 2 }))?),
                    )
                    .into(),
                    _ => text("Multi-round flow complete"),
                }
            }
            "test_input_required_result_capabilities" => {
                if responses.is_some() {
                    return Ok(text("Capability-aware flow complete"));
                }
                let caps = meta.client_capabilities().unwrap_or_default();
                let mut asks = InputRequests::new();
                if caps.elicitation.is_some() {
                    asks.insert("user_name".into(), elicitation("What is your name?", one_string("name")));
                }
                if caps.sampling.is_some() {
                    asks.insert("greeting".into(), sampling("Generate a greeting"));
                }
                if caps.roots.is_some() {
                    asks.insert("client_roots".into(), roots());
                }
                if asks.is_empty() {
                    text("The client declared no input capability")
                } else {
                    InputRequiredResult::from_input_requests(asks).into()
                }
            }
            other => return Err(ErrorData::invalid_params(format!("Unknown tool: {other}"), None)),
        })
    }

    async fn listeners(&self) -> Vec<SubscriptionSink> {
        self.listeners.lock().await.values().cloned().collect()
    }
}

async fn elicit(
    cx: &RequestContext<RoleServer>,
    params: ElicitRequestParams,
) -> Result<ElicitResult, String> {
    cx.peer
        .create_elicitation(params)
        .await
        .map_err(|e| e.to_string())
}

impl ServerHandler for Fixtures {
    fn get_info(&self) -> ServerInfo {
        ServerInfo::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_prompts()
                .enable_prompts_list_changed()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_resources_list_changed()
                .enable_logging()
                .enable_completions()
                .build(),
        )
        .with_server_info(Implementation::new(
            "mcpgw-reference-server",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions("The conformance suite's fixtures, for testing mcpgw")
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        // Lets rmcp validate the SEP-2243 Mcp-Param-* headers against the x-mcp-header schema.
        (name == "test_custom_header").then(custom_header_tool)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut tools = tools();
        if self.debug_tools {
            tools.extend(crate::debug::tools());
        }
        Ok(ListToolsResult::with_all_items(tools)
            .with_ttl_ms(TTL_MS)
            .with_cache_scope(CacheScope::Public))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if request.name.starts_with("test_input_required_result_") {
            return self.input_required_tool(&request, &cx.meta);
        }
        let args = request.arguments.clone().unwrap_or_default();
        if self.debug_tools
            && let Some(result) = crate::debug::call(&request.name, &args)
        {
            return result;
        }
        let arg = |name: &str| args.get(name).and_then(Value::as_str);
        Ok(match request.name.as_ref() {
            "test_simple_text" => text("This is a simple text response for testing."),
            "test_image_content" => {
                CallToolResult::success(vec![ContentBlock::image(PNG, "image/png")]).into()
            }
            "test_audio_content" => CallToolResult::success(vec![ContentBlock::Audio(
                AudioContent::new(WAV, "audio/wav"),
            )])
            .into(),
            "test_embedded_resource" => CallToolResult::success(vec![ContentBlock::resource(
                ResourceContents::TextResourceContents {
                    uri: "test://embedded-resource".into(),
                    mime_type: Some("text/plain".into()),
                    text: "This is an embedded resource content.".into(),
                    meta: None,
                },
            )])
            .into(),
            "test_multiple_content_types" => CallToolResult::success(vec![
                ContentBlock::text("Multiple content types test:"),
                ContentBlock::image(PNG, "image/png"),
                ContentBlock::resource(ResourceContents::TextResourceContents {
                    uri: "test://mixed-content-resource".into(),
                    mime_type: Some("application/json".into()),
                    text: r#"{"test":"data","value":123}"#.into(),
                    meta: None,
                }),
            ])
            .into(),
            "test_tool_with_logging" => {
                for message in [
                    "Tool execution started",
                    "Tool processing data",
                    "Tool execution completed",
                ] {
                    let _ = cx
                        .peer
                        .notify_logging_message(
                            LoggingMessageNotificationParam::new(
                                LoggingLevel::Info,
                                json!(message),
                            )
                            .with_logger("reference-server"),
                        )
                        .await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                text("Logging test completed")
            }
            "test_error_handling" => CallToolResult::error(vec![ContentBlock::text(
                "This tool intentionally returns an error for testing",
            )])
            .into(),
            "test_tool_with_progress" => {
                let token = cx.meta.get_progress_token();
                for (progress, message) in
                    [(0.0, "Starting"), (50.0, "Halfway"), (100.0, "Complete")]
                {
                    if let Some(token) = &token {
                        let _ = cx
                            .peer
                            .notify_progress(
                                ProgressNotificationParam::new(token.clone(), progress)
                                    .with_total(100.0)
                                    .with_message(message),
                            )
                            .await;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                text("Progress test completed")
            }
            "test_sampling" => {
                let params = CreateMessageRequestParams::new(
                    vec![SamplingMessage::user_text(arg("prompt").unwrap_or("Hello"))],
                    100,
                );
                match cx.peer.create_message(params).await {
                    Ok(result) => {
                        let reply = result
                            .message
                            .content
                            .first()
                            .and_then(|c| c.as_text())
                            .map(|t| t.text.clone())
                            .unwrap_or_else(|| "(no text)".into());
                        text(format!("LLM response: {reply}"))
                    }
                    Err(e) => CallToolResult::error(vec![ContentBlock::text(format!(
                        "Sampling error: {e}"
                    ))])
                    .into(),
                }
            }
            "test_elicitation" => {
                let params = form(
                    arg("message").unwrap_or("Please provide your information"),
                    json!({
                        "type": "object",
                        "properties": {
                            "username": { "type": "string", "description": "User's response" },
                            "email": { "type": "string", "description": "User's email address" }
                        },
                        "required": ["username", "email"]
                    }),
                );
                match elicit(&cx, params).await {
                    Ok(r) => text(format!(
                        "User response: action={}, content={}",
                        action_name(&r.action),
                        serde_json::to_string(&r.content).unwrap_or_default()
                    )),
                    Err(e) => CallToolResult::error(vec![ContentBlock::text(format!(
                        "Elicitation error: {e}"
                    ))])
                    .into(),
                }
            }
            "test_elicitation_sep1034_defaults" => {
                let params = form(
                    "Please provide values (all have defaults)",
                    json!({
                        "type": "object",
                        "properties": {
                            "name": { "type": "string", "description": "User's name", "default": "John Doe" },
                            "age": { "type": "integer", "description": "User's age", "default": 30 },
                            "score": { "type": "number", "description": "User's score", "default": 95.5 },
                            "status": {
                                "type": "string",
                                "description": "User's status",
                                "enum": ["active", "inactive", "pending"],
                                "default": "active"
                            },
                            "verified": { "type": "boolean", "description": "Whether user is verified", "default": true }
                        }
                    }),
                );
                match elicit(&cx, params).await {
                    Ok(r) => text(format!(
                        "Elicitation completed: action={}, content={}",
                        action_name(&r.action),
                        serde_json::to_string(&r.content).unwrap_or_default()
                    )),
                    Err(e) => CallToolResult::error(vec![ContentBlock::text(format!(
                        "Elicitation error: {e}"
                    ))])
                    .into(),
                }
            }
            "test_elicitation_sep1330_enums" => {
                let titled = |title: &str| {
                    json!([
                        { "const": "value1", "title": format!("First {title}") },
                        { "const": "value2", "title": format!("Second {title}") },
                        { "const": "value3", "title": format!("Third {title}") }
                    ])
                };
                let params = form(
                    "Test enum schema improvements",
                    json!({
                        "type": "object",
                        "properties": {
                            "untitledSingle": { "type": "string", "enum": ["option1", "option2", "option3"] },
                            "titledSingle": { "type": "string", "oneOf": titled("Option") },
                            "legacyEnum": {
                                "type": "string",
                                "enum": ["opt1", "opt2", "opt3"],
                                "enumNames": ["Option One", "Option Two", "Option Three"]
                            },
                            "untitledMulti": {
                                "type": "array",
                                "items": { "type": "string", "enum": ["option1", "option2", "option3"] }
                            },
                            "titledMulti": { "type": "array", "items": { "anyOf": titled("Choice") } }
                        }
                    }),
                );
                match elicit(&cx, params).await {
                    Ok(r) => text(format!(
                        "Enum elicitation completed: action={}",
                        action_name(&r.action)
                    )),
                    Err(e) => CallToolResult::error(vec![ContentBlock::text(format!(
                        "Elicitation error: {e}"
                    ))])
                    .into(),
                }
            }
            "json_schema_2020_12_tool" => {
                text(format!("Hello, {}!", arg("name").unwrap_or("world")))
            }
            "test_reconnection" => {
                // rmcp closes the POST's SSE stream after its priming event when the client can
                // resume (SEP-1699); the result is then replayed on the resumed GET.
                tokio::time::sleep(Duration::from_millis(100)).await;
                text("Reconnection test completed")
            }
            "test_custom_header" => match arg("value") {
                Some(value) => text(value),
                None => return Err(ErrorData::invalid_params("value must be a string", None)),
            },
            "test_trigger_tool_change" => {
                for sink in self.listeners().await {
                    let _ = sink.notify_tool_list_changed().await;
                }
                text("Tool list change triggered")
            }
            "test_trigger_prompt_change" => {
                for sink in self.listeners().await {
                    let _ = sink.notify_prompt_list_changed().await;
                }
                text("Prompt list change triggered")
            }
            "test_missing_capability" => {
                if cx
                    .meta
                    .client_capabilities()
                    .unwrap_or_default()
                    .sampling
                    .is_none()
                {
                    return Err(ErrorData::missing_required_client_capability(
                        ClientCapabilities::builder().enable_sampling().build(),
                    ));
                }
                text("Required capability declared")
            }
            "test_streaming_elicitation" => InputRequiredResult::from_input_requests(requests([(
                "streaming_elicitation",
                elicitation("Provide a value", one_string("value")),
            )]))
            .into(),
            "test_logging_tool" => {
                if let Some(level) = cx.meta.log_level() {
                    let _ = cx
                        .peer
                        .notify_logging_message(
                            LoggingMessageNotificationParam::new(
                                level,
                                json!("logLevel was requested"),
                            )
                            .with_logger("reference-server"),
                        )
                        .await;
                }
                text("Logging tool completed")
            }
            other => {
                return Err(ErrorData::invalid_params(
                    format!("Unknown tool: {other}"),
                    None,
                ));
            }
        })
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new("test://static-text", "Static Text Resource")
                .with_description("A static text resource for testing")
                .with_mime_type("text/plain"),
            Resource::new("test://static-binary", "Static Binary Resource")
                .with_description("A static binary resource (a PNG) for testing")
                .with_mime_type("image/png"),
            Resource::new("test://watched-resource", "Watched Resource")
                .with_description("A resource clients may subscribe to")
                .with_mime_type("text/plain"),
        ])
        .with_ttl_ms(TTL_MS)
        .with_cache_scope(CacheScope::Public))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new("test://template/{id}/data", "Dynamic Resource")
                .with_description("A dynamic resource with parameter substitution")
                .with_mime_type("application/json"),
        ])
        .with_ttl_ms(TTL_MS)
        .with_cache_scope(CacheScope::Public))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri.as_str();
        let text_contents = |mime: &str, body: String| ResourceContents::TextResourceContents {
            uri: uri.into(),
            mime_type: Some(mime.into()),
            text: body,
            meta: None,
        };
        let contents = match uri {
            "test://static-text" => text_contents(
                "text/plain",
                "This is the content of the static text resource.".into(),
            ),
            "test://watched-resource" => {
                text_contents("text/plain", "Watched resource content.".into())
            }
            "test://static-binary" => ResourceContents::BlobResourceContents {
                uri: uri.into(),
                mime_type: Some("image/png".into()),
                blob: PNG.into(),
                meta: None,
            },
            _ => match uri
                .strip_prefix("test://template/")
                .and_then(|s| s.strip_suffix("/data"))
            {
                Some(id) => text_contents(
                    "application/json",
                    json!({ "id": id, "templateTest": true, "data": format!("Data for ID: {id}") })
                        .to_string(),
                ),
                // SEP-2164: an unknown URI is -32602 with the URI in `data`, never empty contents.
                None => {
                    return Err(ErrorData::resource_not_found(
                        format!("Resource not found: {uri}"),
                        Some(json!({ "uri": uri })),
                    ));
                }
            },
        };
        Ok(ReadResourceResult::new(vec![contents])
            .with_ttl_ms(TTL_MS)
            .with_cache_scope(CacheScope::Public)
            .into())
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.watched.lock().await.insert(request.uri.to_string());
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.watched.lock().await.remove(request.uri.as_str());
        Ok(())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let id = self.next_listener.fetch_add(1, Ordering::Relaxed);
        self.listeners
            .lock()
            .await
            .insert(id, context.sink().clone());
        context.cancelled().await;
        self.listeners.lock().await.remove(&id);
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(vec![
            Prompt::new(
                "test_simple_prompt",
                Some("A simple prompt without arguments"),
                None,
            ),
            Prompt::new(
                "test_prompt_with_arguments",
                Some("A prompt with a required and an optional argument"),
                Some(vec![
                    PromptArgument::new("arg1")
                        .with_description("First test argument")
                        .with_required(true),
                    PromptArgument::new("arg2")
                        .with_description("Second test argument")
                        .with_required(false),
                ]),
            ),
            Prompt::new(
                "test_prompt_with_embedded_resource",
                Some("A prompt embedding a resource"),
                None,
            ),
            Prompt::new(
                "test_prompt_with_image",
                Some("A prompt with an image"),
                None,
            ),
            Prompt::new(
                "test_input_required_result_prompt",
                Some("Needs one elicitation before it renders (SEP-2322)"),
                None,
            ),
        ])
        .with_ttl_ms(TTL_MS)
        .with_cache_scope(CacheScope::Public))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let user = |s: String| PromptMessage::new_text(Role::User, s);
        let result = match request.name.as_str() {
            "test_simple_prompt" => {
                GetPromptResult::new(vec![user("This is a simple test prompt.".into())])
                    .with_description("A simple test prompt")
            }
            "test_prompt_with_arguments" => {
                let args = request.arguments.clone().unwrap_or_default();
                let get = |k: &str| {
                    args.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                GetPromptResult::new(vec![user(format!(
                    "Prompt with arguments: arg1='{}', arg2='{}'",
                    get("arg1"),
                    get("arg2")
                ))])
                .with_description("A prompt with arguments")
            }
            "test_prompt_with_embedded_resource" => GetPromptResult::new(vec![
                user("Here is a resource:".into()),
                PromptMessage::new_resource(
                    Role::User,
                    "test://static-text".into(),
                    Some("text/plain".into()),
                    Some("Resource content for prompt".into()),
                    None,
                    None,
                    None,
                ),
            ])
            .with_description("A prompt with an embedded resource"),
            "test_prompt_with_image" => GetPromptResult::new(vec![
                user("Here is an image:".into()),
                PromptMessage::new(
                    Role::User,
                    ContentBlock::Image(ImageContent::new(PNG, "image/png")),
                ),
            ])
            .with_description("A prompt with an image"),
            "test_input_required_result_prompt" => {
                return Ok(
                    match answer(request.input_responses.as_ref(), "user_context") {
                        Some(a) => GetPromptResult::new(vec![user(format!(
                            "Prompt with elicited context: {}",
                            content_str(a, "context").unwrap_or("(none)")
                        ))])
                        .with_description("A prompt built from elicited context")
                        .into(),
                        None => InputRequiredResult::from_input_requests(requests([(
                            "user_context",
                            elicitation(
                                "What context should the prompt use?",
                                one_string("context"),
                            ),
                        )]))
                        .into(),
                    },
                );
            }
            other => {
                return Err(ErrorData::invalid_params(
                    format!("Unknown prompt: {other}"),
                    None,
                ));
            }
        };
        Ok(result.into())
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        // Candidates for each completable argument, narrowed to those starting with what the
        // user has typed so far.
        let candidates: &[&str] = match (&request.r#ref, request.argument.name.as_str()) {
            (Reference::Resource(_), "id") => &["1", "2", "3", "123"],
            (Reference::Prompt(_), _) => {
                &["paris", "park", "party", "test", "testing", "test-value"]
            }
            _ => &[],
        };
        let typed = request.argument.value.to_lowercase();
        let values = candidates
            .iter()
            .filter(|c| c.starts_with(&typed))
            .map(|c| c.to_string())
            .collect();
        Ok(CompleteResult::new(
            CompletionInfo::new(values).map_err(|e| ErrorData::internal_error(e, None))?,
        ))
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        *self.log_level.lock().await = request.level;
        Ok(())
    }
}

//! `/mcp`: one endpoint per workspace exposing every server's tools, prompts and resources.
//!
//! Here the gateway is the MCP server the client talks to (it answers `initialize` and
//! `server/discover` itself) and an MCP client of each upstream (one 2025-11-25 session per token
//! and server, opened on first use and re-opened when the upstream forgets it).
//!
//! Naming: a tool or prompt `t` of server `s` is exposed as `s_t`. Server names are `[a-z0-9-]`,
//! so the first `_` always separates them, and `s_t` satisfies the strictest client rule
//! `^[a-zA-Z0-9_-]{1,64}$` whenever `t` does and fits. Otherwise the name is made to fit: characters
//! outside the rule become `-`, and a name over 64 characters is cut and ends in `-` plus 8 hex
//! digits of the SHA-256 of the original, so it stays unique. Resources keep their URIs.
//! Server-to-client requests relayed during a call get ids `mcpgw~{server}~{id}`, so the client's
//! answer finds its way back to the right upstream.

use super::*;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;

/// Separates server and tool in exposed names.
const SEP: char = '_';
/// Prefix of relayed server-to-client request ids.
const RELAY_ID: &str = "mcpgw~";
/// Open `/mcp` sessions one token may hold; opening more forgets some of its own.
const SESSIONS_PER_TOKEN: usize = 64;
/// Time an upstream gets to finish an answer the gateway reads whole (lists, prompts, resources).
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Pages of a paginated upstream list the gateway follows.
const MAX_PAGES: usize = 20;
/// The revision the gateway speaks to upstreams.
const UPSTREAM_PROTOCOL: &str = "2025-11-25";
/// Revisions the gateway speaks to clients on `/mcp`.
const SUPPORTED: &[&str] = &["2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26"];

/// The state of the aggregated endpoint.
#[derive(Default)]
pub(super) struct Aggregates {
    /// Client session id → token id, for 2025-11-25 clients.
    client_sessions: Mutex<HashMap<String, String>>,
    /// (token id, server) → upstream session id (`None`: the upstream is stateless).
    upstream_sessions: Mutex<HashMap<(String, String), Option<String>>>,
    /// Token id → exposed names → (server, original name).
    names: Mutex<HashMap<String, Names>>,
}

#[derive(Default)]
struct Names {
    tools: HashMap<String, (String, String)>,
    prompts: HashMap<String, (String, String)>,
    resources: HashMap<String, String>,
}

/// The exposed name of `name` on `server`.
pub fn exposed_name(server: &str, name: &str) -> String {
    let candidate = format!("{server}{SEP}{name}");
    let valid = |s: &str| {
        s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if valid(&candidate) {
        return candidate;
    }
    let cleaned: String = candidate
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if cleaned.len() <= 64 {
        // Cleaning may collide with a real name; the hash keeps it apart.
        let hash = hex::encode(&Sha256::digest(name.as_bytes())[..4]);
        if cleaned.len() + 9 <= 64 {
            return format!("{cleaned}-{hash}");
        }
    }
    let hash = hex::encode(&Sha256::digest(name.as_bytes())[..4]);
    format!("{}-{hash}", &cleaned[..55])
}

impl Proxy {
    pub(super) async fn aggregate(
        &self,
        req: Request<Incoming>,
        identity: Arc<Identity>,
        request_id: String,
        received: Instant,
    ) -> Response<Body> {
        let client_session = req
            .headers()
            .get(&upstream::MCP_SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let Some(s) = &client_session {
            let owner = lock(&self.aggregates.client_sessions).get(s).cloned();
            if owner.as_deref() != Some(identity.token_id.as_str()) {
                return http_error(
                    StatusCode::NOT_FOUND,
                    code::INVALID_REQUEST,
                    "session not found",
                );
            }
        }
        match *req.method() {
            Method::POST => {}
            Method::DELETE => {
                if let Some(s) = client_session {
                    lock(&self.aggregates.client_sessions).remove(&s);
                }
                return json_response(StatusCode::OK, &json!({}));
            }
            Method::GET => {
                let mut resp = http_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    code::INVALID_REQUEST,
                    "the aggregated endpoint has no GET stream",
                );
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
                return resp;
            }
            _ => {
                return http_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    code::INVALID_REQUEST,
                    "use POST",
                );
            }
        }
        let (_parts, _body, msg) = match self.read_message(req).await {
            Ok(read) => read,
            Err(refusal) => return refusal,
        };
        let span = tracing::Span::current();
        if let Some(m) = msg.method() {
            span.record("method", m);
        }
        let id = msg.id().cloned();
        match (&msg.kind, msg.method()) {
            (Kind::Notification, _) => {
                let mut resp = Response::new(full(Bytes::new()));
                *resp.status_mut() = StatusCode::ACCEPTED;
                resp
            }
            (Kind::Response, _) => self.relay_reply(&identity, &msg).await,
            (Kind::Request, Some("initialize")) => self.initialize(&identity, &msg),
            (Kind::Request, Some("server/discover")) => rpc_result(id.as_ref(), discover_result()),
            (Kind::Request, Some("ping")) => rpc_result(id.as_ref(), json!({})),
            (Kind::Request, Some("tools/list")) => {
                let tools = self.list_tools(&identity, &request_id).await;
                rpc_result(id.as_ref(), json!({ "tools": tools }))
            }
            (Kind::Request, Some("prompts/list")) => {
                let prompts = self.list_named(&identity, "prompts").await;
                rpc_result(id.as_ref(), json!({ "prompts": prompts }))
            }
            (Kind::Request, Some("resources/list")) => {
                let resources = self.list_named(&identity, "resources").await;
                rpc_result(id.as_ref(), json!({ "resources": resources }))
            }
            (Kind::Request, Some("resources/templates/list")) => {
                let templates = self.list_named(&identity, "resourceTemplates").await;
                rpc_result(id.as_ref(), json!({ "resourceTemplates": templates }))
            }
            (Kind::Request, Some("tools/call")) => {
                let exposed = msg.param_str("name").unwrap_or_default();
                let start = CallStart {
                    workspace: &identity.principal.workspace,
                    member: identity.principal.member.as_deref(),
                    token_id: &identity.token_id,
                    server: "",
                    tool: exposed,
                    request_id: &request_id,
                    session_id: client_session.as_deref(),
                    received,
                };
                let call = match self.audit.begin_call(&start) {
                    Ok(call) => call,
                    Err(full) => {
                        return rpc_error(id.as_ref(), code::INTERNAL_ERROR, &full.to_string());
                    }
                };
                let resp = self
                    .call_tool(&identity, &msg, request_id, call.clone())
                    .await;
                tracked(resp, call)
            }
            (Kind::Request, Some("prompts/get")) => {
                let name = msg.param_str("name").unwrap_or_default();
                let target = lock(&self.aggregates.names)
                    .get(&identity.token_id)
                    .and_then(|n| n.prompts.get(name).cloned());
                match target.or_else(|| split_name(name)) {
                    Some((server, prompt)) => {
                        self.forward_renamed(&identity, &msg, &server, Some(&prompt))
                            .await
                    }
                    None => rpc_error(
                        id.as_ref(),
                        code::INVALID_PARAMS,
                        &format!("Unknown prompt: {name}"),
                    ),
                }
            }
            (Kind::Request, Some("resources/read")) => {
                let uri = msg.param_str("uri").unwrap_or_default();
                let server = lock(&self.aggregates.names)
                    .get(&identity.token_id)
                    .and_then(|n| n.resources.get(uri).cloned());
                match server {
                    Some(server) => self.forward_renamed(&identity, &msg, &server, None).await,
                    None => rpc_error(
                        id.as_ref(),
                        code::INVALID_PARAMS,
                        &format!("Unknown resource: {uri} (list resources first)"),
                    ),
                }
            }
            (Kind::Request, Some(other)) => {
                rpc_error(id.as_ref(), -32601, &format!("Method not found: {other}"))
            }
            (Kind::Request, None) => {
                rpc_error(id.as_ref(), code::INVALID_REQUEST, "missing method")
            }
        }
    }

    fn initialize(&self, identity: &Identity, msg: &Message) -> Response<Body> {
        let asked = msg
            .value
            .get("params")
            .and_then(|p| p.get("protocolVersion"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let version = if SUPPORTED[1..].contains(&asked) {
            asked
        } else {
            UPSTREAM_PROTOCOL
        };
        let mut seed = [0u8; 16];
        let _ = getrandom::fill(&mut seed);
        let session = hex::encode(seed);
        {
            // Bounded per token: one member opening sessions in a loop only forgets their own.
            let mut sessions = lock(&self.aggregates.client_sessions);
            let mine: Vec<String> = sessions
                .iter()
                .filter(|(_, t)| **t == identity.token_id)
                .map(|(s, _)| s.clone())
                .collect();
            if mine.len() >= SESSIONS_PER_TOKEN {
                for s in mine.iter().take(mine.len() + 1 - SESSIONS_PER_TOKEN) {
                    sessions.remove(s);
                }
            }
            if sessions.len() >= MAX_SESSIONS {
                return rpc_error(
                    msg.id(),
                    code::INTERNAL_ERROR,
                    "too many open sessions; try again later",
                );
            }
            sessions.insert(session.clone(), identity.token_id.clone());
        }
        let result = json!({
            "protocolVersion": version,
            "capabilities": capabilities(),
            "serverInfo": {"name": "mcpgw", "version": env!("CARGO_PKG_VERSION")},
            "instructions": "Every tool of every server in this workspace, named SERVER_TOOL.",
        });
        let mut resp = rpc_result(msg.id(), result);
        if let Ok(v) = HeaderValue::from_str(&session) {
            resp.headers_mut().insert("mcp-session-id", v);
        }
        resp
    }

    /// Sends `body` to `server` in this token's upstream session, opening it (or re-opening it
    /// once, when the upstream says 404) as needed.
    async fn upstream_send(
        &self,
        identity: &Identity,
        server: &ServerView,
        body: &Value,
    ) -> Result<Response<Incoming>, SendError> {
        let key = (identity.token_id.clone(), server.name.clone());
        for attempt in 0..2 {
            let cached = lock(&self.aggregates.upstream_sessions).get(&key).cloned();
            let session = match cached {
                Some(s) => s,
                None => {
                    let s = self.open_upstream(server).await.map_err(SendError::Other)?;
                    lock(&self.aggregates.upstream_sessions).insert(key.clone(), s.clone());
                    s
                }
            };
            let headers = upstream_headers(session.as_deref());
            let resp = self
                .upstream
                .forward(
                    server,
                    Method::POST,
                    &headers,
                    Bytes::from(body.to_string()),
                )
                .await
                .map_err(SendError::Upstream)?;
            if resp.status() == StatusCode::NOT_FOUND && session.is_some() && attempt == 0 {
                lock(&self.aggregates.upstream_sessions).remove(&key);
                continue;
            }
            return Ok(resp);
        }
        Err(SendError::Other(format!(
            "upstream {} keeps losing its session",
            server.name
        )))
    }

    async fn open_upstream(&self, server: &ServerView) -> Result<Option<String>, String> {
        let init = json!({"jsonrpc": "2.0", "id": "mcpgw-init", "method": "initialize", "params": {
            "protocolVersion": UPSTREAM_PROTOCOL, "capabilities": {},
            "clientInfo": {"name": "mcpgw", "version": env!("CARGO_PKG_VERSION")}}});
        let resp = self
            .upstream
            .forward(
                server,
                Method::POST,
                &upstream_headers(None),
                Bytes::from(init.to_string()),
            )
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!(
                "upstream {} refused initialize ({})",
                server.name,
                resp.status()
            ));
        }
        let session = resp
            .headers()
            .get(&upstream::MCP_SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let answer = self.read_answer(resp, &json!("mcpgw-init")).await?;
        if answer.get("error").is_some() {
            return Err(format!(
                "upstream {} refused initialize: {}",
                server.name, answer["error"]
            ));
        }
        let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let _ = self
            .upstream
            .forward(
                server,
                Method::POST,
                &upstream_headers(session.as_deref()),
                Bytes::from(done.to_string()),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(session)
    }

    /// The JSON-RPC response with `id` from a JSON or SSE answer (bounded).
    async fn read_answer(&self, resp: Response<Incoming>, id: &Value) -> Result<Value, String> {
        let sse = upstream::is_event_stream(resp.headers());
        let collect = Limited::new(resp.into_body(), self.limits.max_rewrite_bytes).collect();
        let bytes = tokio::time::timeout(ANSWER_TIMEOUT, collect)
            .await
            .map_err(|_| format!("upstream answer not complete within {ANSWER_TIMEOUT:?}"))?
            .map_err(|e| format!("upstream answer unreadable: {e}"))?
            .to_bytes();
        if !sse {
            return serde_json::from_slice(&bytes)
                .map_err(|e| format!("upstream answer is not JSON: {e}"));
        }
        let text = String::from_utf8_lossy(&bytes).replace("\r\n", "\n");
        for event in text.split("\n\n") {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if let Ok(v) = serde_json::from_str::<Value>(&data.join("\n"))
                && v.get("id") == Some(id)
            {
                return Ok(v);
            }
        }
        Err("upstream stream ended without an answer".into())
    }

    /// Every page of `{kind}/list` from one server.
    async fn list_one(
        &self,
        identity: &Identity,
        server: &ServerView,
        kind: &str,
    ) -> Result<Vec<Value>, String> {
        let method = match kind {
            "resourceTemplates" => "resources/templates/list".to_owned(),
            k => format!("{k}/list"),
        };
        let mut items = Vec::new();
        let mut cursor: Option<Value> = None;
        for page in 0..MAX_PAGES {
            let id = json!(format!(
                "mcpgw-list-{}-{page}",
                self.next_request.fetch_add(1, Ordering::Relaxed)
            ));
            let mut req = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {}});
            if let Some(c) = &cursor {
                req["params"]["cursor"] = c.clone();
            }
            let resp = self
                .upstream_send(identity, server, &req)
                .await
                .map_err(|e| e.to_string())?;
            let answer = self.read_answer(resp, &id).await?;
            if let Some(e) = answer.get("error") {
                // A server without prompts or resources says method-not-found: nothing to list.
                if e.get("code").and_then(Value::as_i64) == Some(-32601) {
                    return Ok(items);
                }
                return Err(format!("upstream {} {method} failed: {e}", server.name));
            }
            if let Some(list) = answer
                .pointer(&format!("/result/{kind}"))
                .and_then(Value::as_array)
            {
                items.extend(list.iter().cloned());
            }
            match answer.pointer("/result/nextCursor") {
                Some(c) if !c.is_null() => cursor = Some(c.clone()),
                _ => break,
            }
        }
        Ok(items)
    }

    /// Lists `kind` on every server of the workspace concurrently, in server-name order. A server
    /// that fails is left out (and logged): one broken upstream must not hide the others.
    async fn list_every(&self, identity: &Identity, kind: &str) -> Vec<(String, Vec<Value>)> {
        let servers: BTreeMap<&String, &ServerView> = identity
            .workspace
            .servers
            .iter()
            .map(|(name, server)| (name, &**server))
            .collect();
        let lists = futures_util::future::join_all(
            servers.values().map(|s| self.list_one(identity, s, kind)),
        )
        .await;
        servers
            .keys()
            .zip(lists)
            .filter_map(|(name, list)| match list {
                Ok(items) => Some(((*name).clone(), items)),
                Err(e) => {
                    tracing::warn!(server = %name, error = %e, "left out of the aggregated list");
                    None
                }
            })
            .collect()
    }

    async fn list_tools(&self, identity: &Arc<Identity>, request_id: &str) -> Vec<Value> {
        let chain = self.policies.chain();
        let mut out = Vec::new();
        let mut names = HashMap::new();
        for (server, tools) in self.list_every(identity, "tools").await {
            for mut tool in tools {
                let Some(name) = tool.get("name").and_then(Value::as_str).map(str::to_owned) else {
                    continue;
                };
                let q = Question {
                    request_id,
                    principal: &identity.principal,
                    server: &server,
                    tool: &name,
                    arguments: None,
                };
                if let Verdict::Deny(_) = chain.decide(&q)
                    && identity.workspace.enforce
                {
                    continue;
                }
                let exposed = exposed_name(&server, &name);
                tool["name"] = json!(exposed);
                names.insert(exposed, (server.clone(), name));
                out.push(tool);
            }
        }
        lock(&self.aggregates.names)
            .entry(identity.token_id.clone())
            .or_default()
            .tools = names;
        out
    }

    async fn list_named(&self, identity: &Identity, kind: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let (mut prompts, mut resources) = (HashMap::new(), HashMap::new());
        for (server, items) in self.list_every(identity, kind).await {
            if !self.server_wide(identity, &server) {
                continue;
            }
            for mut item in items {
                match kind {
                    "prompts" => {
                        let Some(name) =
                            item.get("name").and_then(Value::as_str).map(str::to_owned)
                        else {
                            continue;
                        };
                        let exposed = exposed_name(&server, &name);
                        item["name"] = json!(exposed);
                        prompts.insert(exposed, (server.clone(), name));
                    }
                    "resources" => {
                        if let Some(uri) = item.get("uri").and_then(Value::as_str) {
                            resources.insert(uri.to_owned(), server.clone());
                        }
                    }
                    _ => {}
                }
                out.push(item);
            }
        }
        let mut all = lock(&self.aggregates.names);
        let names = all.entry(identity.token_id.clone()).or_default();
        match kind {
            "prompts" => names.prompts = prompts,
            "resources" => names.resources = resources,
            _ => {}
        }
        out
    }

    async fn call_tool(
        &self,
        identity: &Arc<Identity>,
        msg: &Message,
        request_id: String,
        call: Option<Arc<Call>>,
    ) -> Response<Body> {
        let exposed = msg.param_str("name").unwrap_or_default().to_owned();
        let target = lock(&self.aggregates.names)
            .get(&identity.token_id)
            .and_then(|n| n.tools.get(&exposed).cloned());
        let unknown = || {
            if let Some(call) = &call {
                call.finish(Status::Denied, Some(code::INVALID_PARAMS.to_string()));
            }
        };
        let Some((server_name, tool)) = target.or_else(|| split_name(&exposed)) else {
            unknown();
            return rpc_error(
                msg.id(),
                code::INVALID_PARAMS,
                &format!("Unknown tool: {exposed}"),
            );
        };
        let Some(server) = identity.workspace.servers.get(&server_name).cloned() else {
            unknown();
            return rpc_error(
                msg.id(),
                code::INVALID_PARAMS,
                &format!("Unknown tool: {exposed}"),
            );
        };
        if let Some(call) = &call {
            call.target(&server_name, &tool);
        }
        let span = tracing::Span::current();
        span.record("server", server_name.as_str());
        span.record("tool", tool.as_str());
        let chain = self.policies.chain();
        let ctx = Context {
            chain: chain.clone(),
            identity: identity.clone(),
            server: server_name.clone(),
            rpc_id: json!(format!("mcpgw-{request_id}")),
            client_id: msg.id().cloned().unwrap_or(Value::Null),
            request_id,
            call,
        };
        let arguments = msg.arguments_json();
        if let Some(refusal) = self.decide_call(&ctx, msg, &tool, &arguments, &exposed) {
            return refusal;
        }
        let relay = if chain.inspects_results() {
            Relay::InspectResult {
                tool: tool.clone(),
                arguments,
            }
        } else {
            Relay::Stream
        };
        let mut body = legacy_body(msg);
        body["params"]["name"] = json!(tool);
        // The upstream session is shared by every client of this token: ids must be the gateway's.
        body["id"] = ctx.rpc_id.clone();
        if let Some(call) = &ctx.call {
            call.upstream_started();
        }
        let resp = match self.upstream_send(identity, &server, &body).await {
            Ok(r) => r,
            Err(e) => {
                if let Some(call) = &ctx.call {
                    let status = match &e {
                        SendError::Upstream(u) => upstream_status(u),
                        SendError::Other(_) => Status::UpstreamError,
                    };
                    call.finish(status, Some(code::INTERNAL_ERROR.to_string()));
                }
                return rpc_error(msg.id(), code::INTERNAL_ERROR, &e.to_string());
            }
        };
        self.relay_aggregated(resp, &server_name, relay, ctx).await
    }

    /// Prompts and resources of a server are for members whose grants cover the whole server
    /// (`server:*`), as on `/mcp/{server}`; with enforcement off, for everyone (would-deny).
    fn server_wide(&self, identity: &Identity, server: &str) -> bool {
        let q = Question {
            request_id: "",
            principal: &identity.principal,
            server,
            tool: "*",
            arguments: None,
        };
        matches!(self.policies.chain().decide(&q), Verdict::Allow) || !identity.workspace.enforce
    }

    /// Forwards a prompt or resource request to `server`, renaming `params.name` when given.
    async fn forward_renamed(
        &self,
        identity: &Identity,
        msg: &Message,
        server_name: &str,
        name: Option<&str>,
    ) -> Response<Body> {
        let Some(server) = identity.workspace.servers.get(server_name).cloned() else {
            return rpc_error(msg.id(), code::INVALID_PARAMS, "unknown server");
        };
        if !self.server_wide(identity, server_name) {
            let why = format!(
                "prompts and resources of {server_name} need a grant covering the whole server ({server_name}:*)"
            );
            return rpc_error(msg.id(), code::INVALID_PARAMS, &why);
        }
        let mut body = legacy_body(msg);
        if let Some(n) = name {
            body["params"]["name"] = json!(n);
        }
        let upstream_id = json!(format!(
            "mcpgw-fwd-{}",
            self.next_request.fetch_add(1, Ordering::Relaxed)
        ));
        body["id"] = upstream_id.clone();
        match self.upstream_send(identity, &server, &body).await {
            Ok(resp) => match self.read_answer(resp, &upstream_id).await {
                Ok(mut answer) => {
                    answer["id"] = msg.id().cloned().unwrap_or(Value::Null);
                    json_response(StatusCode::OK, &answer)
                }
                Err(e) => rpc_error(msg.id(), code::INTERNAL_ERROR, &e),
            },
            Err(e) => rpc_error(msg.id(), code::INTERNAL_ERROR, &e.to_string()),
        }
    }

    /// Streams a tool call's answer back: server-to-client requests get relay ids, the result goes
    /// through the result phase when a module asks.
    async fn relay_aggregated(
        &self,
        resp: Response<Incoming>,
        server: &str,
        relay: Relay,
        ctx: Context,
    ) -> Response<Body> {
        let status = resp.status();
        let mut headers = upstream::response_headers(resp.headers());
        headers.remove(&upstream::MCP_SESSION_ID);
        let sse = upstream::is_event_stream(resp.headers());
        let server = server.to_owned();
        let body: Body = if sse {
            let events = sse::Rewrite::new(resp.into_body(), move |event: &sse::Event<'_>| {
                let Some(mut value) = event
                    .data
                    .as_deref()
                    .and_then(|data| serde_json::from_str::<Value>(data).ok())
                else {
                    return sse::Step::PASS;
                };
                if value.get("method").is_some() && value.get("id").is_some() {
                    let id = value["id"].to_string();
                    value["id"] = json!(format!("{RELAY_ID}{server}~{id}"));
                    sse::Step::replace(event.with_data(&value.to_string()))
                } else if value.get("id") == Some(&ctx.rpc_id) {
                    ctx.rewrite(&relay, &mut value);
                    sse::Step::replace(event.with_data(&value.to_string())).last()
                } else {
                    sse::Step::PASS
                }
            });
            sse::primed(events, sse::FIRST_EVENT_WAIT).await.boxed()
        } else {
            match Limited::new(resp.into_body(), self.limits.max_rewrite_bytes)
                .collect()
                .await
            {
                Ok(c) => match serde_json::from_slice::<Value>(&c.to_bytes()) {
                    Ok(mut v) => {
                        ctx.rewrite(&relay, &mut v);
                        headers.remove(header::CONTENT_LENGTH);
                        full(v.to_string())
                    }
                    Err(e) => {
                        if let Some(call) = &ctx.call {
                            call.finish(Status::UpstreamError, Some("not-json".into()));
                        }
                        return rpc_error(
                            Some(&ctx.client_id),
                            code::INTERNAL_ERROR,
                            &format!("upstream answer is not JSON: {e}"),
                        );
                    }
                },
                Err(e) => {
                    if let Some(call) = &ctx.call {
                        call.finish(Status::UpstreamError, Some("unreadable".into()));
                    }
                    return rpc_error(
                        Some(&ctx.client_id),
                        code::INTERNAL_ERROR,
                        &format!("upstream answer unreadable: {e}"),
                    );
                }
            }
        };
        let mut out = Response::new(body);
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        out
    }

    /// A client's answer to a relayed server-to-client request goes back to its upstream.
    async fn relay_reply(&self, identity: &Identity, msg: &Message) -> Response<Body> {
        let id = msg
            .id()
            .and_then(Value::as_str)
            .and_then(|s| s.strip_prefix(RELAY_ID));
        let Some((server_name, original)) = id.and_then(|s| s.split_once('~')) else {
            return http_error(
                StatusCode::BAD_REQUEST,
                code::INVALID_REQUEST,
                "a response to no request of this gateway",
            );
        };
        let (Some(server), Ok(original)) = (
            identity.workspace.servers.get(server_name).cloned(),
            serde_json::from_str::<Value>(original),
        ) else {
            return http_error(
                StatusCode::BAD_REQUEST,
                code::INVALID_REQUEST,
                "a response to no request of this gateway",
            );
        };
        let mut body = Value::Object(msg.value.clone());
        body["id"] = original;
        match self.upstream_send(identity, &server, &body).await {
            Ok(resp) => {
                let mut out = Response::new(full(Bytes::new()));
                *out.status_mut() = if resp.status().is_success() {
                    StatusCode::ACCEPTED
                } else {
                    resp.status()
                };
                out
            }
            Err(e) => http_error(
                StatusCode::BAD_GATEWAY,
                code::INTERNAL_ERROR,
                &e.to_string(),
            ),
        }
    }
}

/// Why a message could not be sent to an upstream.
#[derive(Debug, thiserror::Error)]
enum SendError {
    /// The request itself failed.
    #[error(transparent)]
    Upstream(upstream::Error),
    /// Opening the upstream session failed.
    #[error("{0}")]
    Other(String),
}

/// The client's message as the upstream session (2025-11-25) expects it: a 2026-07-28 client's
/// per-request protocol metadata is the gateway's business, not the upstream's.
fn legacy_body(msg: &Message) -> Value {
    let mut body = Value::Object(msg.value.clone());
    if let Some(meta) = body
        .pointer_mut("/params/_meta")
        .and_then(Value::as_object_mut)
    {
        meta.retain(|k, _| !k.starts_with("io.modelcontextprotocol/"));
    }
    body
}

/// `server_tool` split at the first `_`.
fn split_name(exposed: &str) -> Option<(String, String)> {
    let (server, tool) = exposed.split_once(SEP)?;
    (!server.is_empty() && !tool.is_empty()).then(|| (server.to_owned(), tool.to_owned()))
}

fn upstream_headers(session: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        "mcp-protocol-version",
        HeaderValue::from_static(UPSTREAM_PROTOCOL),
    );
    if let Some(s) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
        h.insert("mcp-session-id", s);
    }
    h
}

fn capabilities() -> Value {
    json!({"tools": {"listChanged": false}, "prompts": {"listChanged": false}, "resources": {"listChanged": false}})
}

fn discover_result() -> Value {
    json!({
        "resultType": "complete",
        "supportedVersions": SUPPORTED,
        "capabilities": capabilities(),
        "instructions": "Every tool of every server in this workspace, named SERVER_TOOL.",
        // What this member sees depends on their grants: cache per user, and not for long.
        "ttlMs": 60_000,
        "cacheScope": "private",
        "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "mcpgw", "version": env!("CARGO_PKG_VERSION")}},
    })
}

fn rpc_result(id: Option<&Value>, result: Value) -> Response<Body> {
    json_response(
        StatusCode::OK,
        &json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "result": result}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposed_names_are_valid_and_unambiguous() {
        let valid = |s: &str| {
            s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        assert_eq!(exposed_name("db", "query"), "db_query");
        assert_eq!(exposed_name("db", "run_query"), "db_run_query");
        assert_eq!(
            split_name("db_run_query"),
            Some(("db".into(), "run_query".into()))
        );
        for (server, tool) in [
            ("db", "fs.read"),
            ("db", "a/b c"),
            ("search", &*"x".repeat(100)),
            ("s", "ü"),
        ] {
            let e = exposed_name(server, tool);
            assert!(valid(&e), "{e}");
            assert!(e.starts_with(&format!("{server}_")), "{e}");
        }
        assert_ne!(exposed_name("db", "a.b"), exposed_name("db", "a-b"));
        assert_ne!(
            exposed_name("s", &"x".repeat(100)),
            exposed_name("s", &"x".repeat(101))
        );
    }
}

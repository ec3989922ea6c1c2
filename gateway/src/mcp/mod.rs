//! The MCP endpoint: `/mcp/{server}`, a transparent Streamable HTTP proxy to one upstream of the
//! caller's workspace, with authentication and policy on the way.
//!
//! One function per request, in the order of the stages: route → authenticate → read and check the
//! message → decide (`tools/call`) → forward → relay (filtering `tools/list`, inspecting results
//! when a module asks). Bodies stream; only a `tools/list` result, or a tool result a module wants
//! to read, is held, and only that one event. Both protocol revisions pass through: 2025-11-25
//! (initialize, `Mcp-Session-Id`, GET stream, DELETE, server-to-client requests, `Last-Event-ID`)
//! and 2026-07-28 (stateless POST, `Mcp-Method`/`Mcp-Name` checked against the body).

mod aggregate;
pub mod jsonrpc;
pub mod sse;

use crate::identity::{AuthError, Directory, Identity, ServerView};
use crate::policy::{Denial, PolicyChain, PolicySet, Question, Verdict};
use crate::upstream::{self, Upstream};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited, combinators::BoxBody};
use hyper::body::Incoming;
use jsonrpc::{Kind, Message, code};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tracing::Instrument as _;

/// The body type of every response.
pub type Body = BoxBody<Bytes, sse::BoxError>;

/// Request limits of the MCP endpoint.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body; more is refused with 413.
    pub max_body_bytes: usize,
    /// Longest request URI; more is refused with 414.
    pub max_uri_bytes: usize,
    /// Largest `tools/list` or inspected tool result the gateway holds to rewrite.
    pub max_rewrite_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 4 * 1024 * 1024,
            max_uri_bytes: 8 * 1024,
            max_rewrite_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Which token a session belongs to: a session id obtained with one token is refused for another.
#[derive(Default)]
struct Sessions {
    owners: Mutex<HashMap<String, String>>,
}

/// Bound on remembered sessions; the oldest half is forgotten past it (they re-bind on next use).
const MAX_SESSIONS: usize = 100_000;

impl Sessions {
    fn key(server: &ServerView, workspace: &str, session: &str) -> String {
        format!("{workspace}\u{1f}{}\u{1f}{session}", server.name)
    }

    /// True when `token` may use the session (binding it if nobody has).
    fn admit(&self, key: String, token: &str) -> bool {
        let Ok(mut owners) = self.owners.lock() else {
            return false;
        };
        if owners.len() >= MAX_SESSIONS {
            let drop: Vec<String> = owners.keys().take(MAX_SESSIONS / 2).cloned().collect();
            for k in drop {
                owners.remove(&k);
            }
        }
        owners.entry(key).or_insert_with(|| token.to_owned()) == token
    }

    fn forget(&self, key: &str) {
        if let Ok(mut owners) = self.owners.lock() {
            owners.remove(key);
        }
    }
}

/// The MCP endpoint's state.
pub struct Proxy {
    directory: Arc<Directory>,
    policies: Arc<PolicySet>,
    upstream: Upstream,
    limits: Limits,
    sessions: Sessions,
    aggregates: aggregate::Aggregates,
    next_request: AtomicU64,
    request_prefix: String,
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A JSON-RPC error as the answer to a request (HTTP 200, so the client's pending call gets it).
fn rpc_error(id: Option<&Value>, code: i64, message: &str) -> Response<Body> {
    json_response(StatusCode::OK, &jsonrpc::error_response(id, code, message))
}

/// A JSON-RPC error with an HTTP error status (the request could not be taken at all).
fn http_error(status: StatusCode, code: i64, message: &str) -> Response<Body> {
    json_response(status, &jsonrpc::error_response(None, code, message))
}

/// `=?base64?…?=` header values (2026-07-28) decoded; plain values as they are.
fn header_text(headers: &HeaderMap, name: &str) -> Option<Result<String, ()>> {
    let raw = headers.get(name)?.to_str().map_err(|_| ());
    Some(raw.and_then(|v| {
        match v
            .strip_prefix("=?base64?")
            .and_then(|r| r.strip_suffix("?="))
        {
            Some(b64) => base64_decode(b64).and_then(|b| String::from_utf8(b).map_err(|_| ())),
            None => Ok(v.to_owned()),
        }
    }))
}

fn base64_decode(s: &str) -> Result<Vec<u8>, ()> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return Err(()),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// True when the request speaks the stateless revision (2026-07-28 or later).
fn is_modern(headers: &HeaderMap) -> bool {
    headers
        .get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v >= "2026-07-28")
}

/// Checks `Mcp-Method` / `Mcp-Name` against the body. Policy is decided on the body; a header
/// that says otherwise is refused rather than trusted.
fn check_routing_headers(headers: &HeaderMap, msg: &Message) -> Result<(), String> {
    let method = msg.method().unwrap_or_default();
    match header_text(headers, "mcp-method") {
        Some(Ok(h)) if h == method => {}
        Some(Ok(h)) => {
            return Err(format!(
                "Mcp-Method header {h:?} does not match the body's method {method:?}"
            ));
        }
        Some(Err(())) => return Err("Mcp-Method header is not valid".into()),
        None if is_modern(headers) && msg.kind != Kind::Notification => {
            return Err("Mcp-Method header is required".into());
        }
        None => {}
    }
    let name_field = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return Ok(()),
    };
    let body_name = msg.param_str(name_field).unwrap_or_default();
    match header_text(headers, "mcp-name") {
        Some(Ok(h)) if h == body_name => Ok(()),
        Some(Ok(h)) => Err(format!(
            "Mcp-Name header {h:?} does not match the body's {name_field} {body_name:?}"
        )),
        Some(Err(())) => Err("Mcp-Name header is not valid".into()),
        None if is_modern(headers) => Err("Mcp-Name header is required".into()),
        None => Ok(()),
    }
}

/// What to do with the upstream's answer.
enum Relay {
    /// Pass it through untouched.
    Stream,
    /// Filter `result.tools` of the response to this request id.
    FilterTools,
    /// Run the result phase on the response to this `tools/call`.
    InspectResult { tool: String, arguments: String },
}

/// Everything the relay needs to rewrite an answer.
struct Context {
    chain: Arc<PolicyChain>,
    identity: Arc<Identity>,
    server: String,
    request_id: String,
    rpc_id: Value,
}

impl Context {
    fn question<'a>(&'a self, tool: &'a str, arguments: Option<&'a str>) -> Question<'a> {
        Question {
            request_id: &self.request_id,
            principal: &self.identity.principal,
            server: &self.server,
            tool,
            arguments,
        }
    }

    fn enforced(&self) -> bool {
        self.identity.workspace.enforce
    }

    /// Drops tools the caller may not see (when enforcement is on) from a `tools/list` response.
    fn filter_tools(&self, response: &mut Value) {
        let Some(tools) = response
            .pointer_mut("/result/tools")
            .and_then(Value::as_array_mut)
        else {
            return;
        };
        let before = tools.len();
        tools.retain(|t| {
            let name = t.get("name").and_then(Value::as_str).unwrap_or_default();
            match self.chain.decide(&self.question(name, None)) {
                Verdict::Allow => true,
                Verdict::Deny(_) => !self.enforced(),
            }
        });
        tracing::debug!(
            listed = before,
            visible = tools.len(),
            "tools/list filtered"
        );
    }

    /// Replaces a tool result a module refuses (when enforcement is on).
    fn inspect(&self, response: &mut Value, tool: &str, arguments: &str) {
        let Some(result) = response.get("result") else {
            return;
        };
        let verdict = self
            .chain
            .inspect_result(&self.question(tool, Some(arguments)), &result.to_string());
        if let Verdict::Deny(d) = verdict {
            log_denial("result", &d, self.enforced());
            if self.enforced() {
                *response = jsonrpc::tool_error_result(Some(&self.rpc_id), &denial_text(&d));
            }
        }
    }

    fn rewrite(&self, relay: &Relay, response: &mut Value) {
        if response.get("id") != Some(&self.rpc_id) {
            return;
        }
        match relay {
            Relay::FilterTools => self.filter_tools(response),
            Relay::InspectResult { tool, arguments } => self.inspect(response, tool, arguments),
            Relay::Stream => {}
        }
    }
}

fn denial_text(d: &Denial) -> String {
    format!("Denied by policy {} ({}): {}", d.module, d.code, d.reason)
}

fn log_denial(phase: &str, d: &Denial, enforced: bool) {
    let decision = if enforced { "deny" } else { "would-deny" };
    tracing::info!(phase, decision, module = %d.module, code = %d.code, fault = d.fault, "policy denial");
}

impl Proxy {
    /// The endpoint over this identity snapshot, policy chain and upstream client.
    pub fn new(
        directory: Arc<Directory>,
        policies: Arc<PolicySet>,
        upstream: Upstream,
        limits: Limits,
    ) -> Proxy {
        let mut seed = [0u8; 4];
        let _ = getrandom::fill(&mut seed);
        Proxy {
            directory,
            policies,
            upstream,
            limits,
            sessions: Sessions::default(),
            aggregates: aggregate::Aggregates::default(),
            next_request: AtomicU64::new(1),
            request_prefix: hex::encode(seed),
        }
    }

    /// Serves one HTTP request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let request_id = format!(
            "{}-{}",
            self.request_prefix,
            self.next_request.fetch_add(1, Ordering::Relaxed)
        );
        let span = tracing::info_span!("mcp", request_id = %request_id, workspace = tracing::field::Empty,
            member = tracing::field::Empty, server = tracing::field::Empty, method = tracing::field::Empty,
            tool = tracing::field::Empty, decision = tracing::field::Empty);
        let resp = self.route(req, request_id).instrument(span).await;
        Ok(resp)
    }

    async fn route(&self, req: Request<Incoming>, request_id: String) -> Response<Body> {
        let path = req.uri().path().to_owned();
        if path.starts_with("/.well-known/oauth-protected-resource") {
            return self.resource_metadata(&req, &path);
        }
        if req.uri().to_string().len() > self.limits.max_uri_bytes {
            return http_error(
                StatusCode::URI_TOO_LONG,
                code::INVALID_REQUEST,
                "request URI too long",
            );
        }
        let aggregated = path == "/mcp" || path == "/mcp/";
        let server_name = match path
            .strip_prefix("/mcp/")
            .filter(|s| !s.is_empty() && !s.contains('/'))
        {
            Some(s) => s.to_owned(),
            None if aggregated => String::new(),
            None => {
                return http_error(
                    StatusCode::NOT_FOUND,
                    code::INVALID_REQUEST,
                    "not found: MCP endpoints are /mcp (every server) and /mcp/{server}",
                );
            }
        };
        let query = req.uri().query().unwrap_or("");
        if query.split('&').any(|kv| {
            let k = kv.split('=').next().unwrap_or("");
            matches!(k, "access_token" | "token" | "api_key" | "key" | "auth")
        }) {
            return http_error(
                StatusCode::BAD_REQUEST,
                code::INVALID_REQUEST,
                "tokens in query strings are refused; use Authorization: Bearer",
            );
        }
        let identity = match self.authenticate(req.headers()) {
            Ok(id) => id,
            Err(e) => return self.unauthorized(&req, &path, e),
        };
        let span = tracing::Span::current();
        span.record("workspace", identity.principal.workspace.as_str());
        span.record(
            "member",
            identity
                .principal
                .member
                .as_deref()
                .unwrap_or("(workspace token)"),
        );
        if aggregated {
            return self.aggregate(req, identity, request_id).await;
        }
        span.record("server", server_name.as_str());
        let Some(server) = identity.workspace.servers.get(&server_name).cloned() else {
            return http_error(
                StatusCode::NOT_FOUND,
                code::INVALID_REQUEST,
                &format!("unknown server {server_name:?} in this workspace"),
            );
        };
        let session_key = req
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(|s| Sessions::key(&server, &identity.principal.workspace, s));
        if let Some(key) = &session_key
            && !self.sessions.admit(key.clone(), &identity.token_id)
        {
            return http_error(
                StatusCode::NOT_FOUND,
                code::INVALID_REQUEST,
                "session not found",
            );
        }
        match *req.method() {
            Method::GET | Method::DELETE => {
                let method = req.method().clone();
                let headers = req.headers().clone();
                let resp = self
                    .forward(
                        &server,
                        method.clone(),
                        &headers,
                        Bytes::new(),
                        &identity,
                        None,
                        Relay::Stream,
                        None,
                    )
                    .await;
                if method == Method::DELETE
                    && resp.status().is_success()
                    && let Some(key) = &session_key
                {
                    self.sessions.forget(key);
                }
                resp
            }
            Method::POST => self.post(req, server, identity, request_id).await,
            _ => {
                let mut resp = http_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    code::INVALID_REQUEST,
                    "use POST, GET or DELETE",
                );
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
                resp
            }
        }
    }

    fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Identity>, AuthError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or(AuthError::Missing)?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or(AuthError::Missing)?;
        self.directory.authenticate(token.trim())
    }

    fn base_url(req: &Request<Incoming>) -> String {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        format!("http://{host}")
    }

    fn unauthorized(&self, req: &Request<Incoming>, path: &str, e: AuthError) -> Response<Body> {
        let metadata = format!(
            "{}/.well-known/oauth-protected-resource{path}",
            Self::base_url(req)
        );
        let challenge = match e {
            AuthError::Missing => format!("Bearer resource_metadata=\"{metadata}\""),
            _ => format!("Bearer resource_metadata=\"{metadata}\", error=\"invalid_token\""),
        };
        tracing::info!(error = %e, "authentication failed");
        let mut resp = http_error(
            StatusCode::UNAUTHORIZED,
            code::INVALID_REQUEST,
            &e.to_string(),
        );
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        resp
    }

    /// RFC 9728 protected-resource metadata. mcpgw issues its own tokens (no authorization server).
    fn resource_metadata(&self, req: &Request<Incoming>, path: &str) -> Response<Body> {
        let resource_path = path
            .strip_prefix("/.well-known/oauth-protected-resource")
            .unwrap_or("");
        let base = Self::base_url(req);
        let resource = if resource_path.is_empty() {
            format!("{base}/mcp")
        } else {
            format!("{base}{resource_path}")
        };
        json_response(
            StatusCode::OK,
            &json!({
                "resource": resource,
                "authorization_servers": [],
                "bearer_methods_supported": ["header"],
                "resource_name": "mcpgw",
                "resource_documentation": "Ask your workspace admin for a token: mcpgw token issue WORKSPACE MEMBER",
            }),
        )
    }

    /// Reads (bounded) and parses the body, and checks `Mcp-Method`/`Mcp-Name` against it.
    async fn read_message(
        &self,
        req: Request<Incoming>,
    ) -> Result<(http::request::Parts, Bytes, Message), Response<Body>> {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, self.limits.max_body_bytes)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                let msg = format!("request body over {} bytes", self.limits.max_body_bytes);
                return Err(http_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    code::INVALID_REQUEST,
                    &msg,
                ));
            }
            Err(e) => {
                return Err(http_error(
                    StatusCode::BAD_REQUEST,
                    code::PARSE_ERROR,
                    &format!("could not read the body: {e}"),
                ));
            }
        };
        let msg = match Message::parse(&body) {
            Ok(m) => m,
            Err(e) => {
                return Err(http_error(
                    StatusCode::BAD_REQUEST,
                    e.code(),
                    &e.to_string(),
                ));
            }
        };
        if let Err(why) = check_routing_headers(&parts.headers, &msg) {
            let body = jsonrpc::error_response(msg.id(), code::HEADER_MISMATCH, &why);
            return Err(json_response(StatusCode::BAD_REQUEST, &body));
        }
        Ok((parts, body, msg))
    }

    async fn post(
        &self,
        req: Request<Incoming>,
        server: ServerView,
        identity: Arc<Identity>,
        request_id: String,
    ) -> Response<Body> {
        let (parts, body, msg) = match self.read_message(req).await {
            Ok(read) => read,
            Err(refusal) => return refusal,
        };
        let span = tracing::Span::current();
        if let Some(m) = msg.method() {
            span.record("method", m);
        }
        let chain = self.policies.chain();
        let ctx = Context {
            chain: chain.clone(),
            identity: identity.clone(),
            server: server.name.clone(),
            request_id,
            rpc_id: msg.id().cloned().unwrap_or(Value::Null),
        };
        let relay = match (msg.kind.clone(), msg.method()) {
            (Kind::Request, Some("tools/list")) => Relay::FilterTools,
            (Kind::Request, Some("tools/call")) => {
                let tool = msg.param_str("name").unwrap_or_default().to_owned();
                span.record("tool", tool.as_str());
                let arguments = msg.arguments_json();
                if let Some(refusal) = self.decide_call(&ctx, &msg, &tool, &arguments, &tool) {
                    return refusal;
                }
                if chain.inspects_results() {
                    Relay::InspectResult { tool, arguments }
                } else {
                    Relay::Stream
                }
            }
            _ => Relay::Stream,
        };
        self.forward(
            &server,
            Method::POST,
            &parts.headers,
            body,
            &identity,
            Some(&msg),
            relay,
            Some(ctx),
        )
        .await
    }

    /// Policy for a `tools/call`: visibility first (a hidden tool is an unknown tool), then the call
    /// with its arguments (a refusal is a tool error the model can read). `None` lets it proceed.
    fn decide_call(
        &self,
        ctx: &Context,
        msg: &Message,
        tool: &str,
        arguments: &str,
        shown_as: &str,
    ) -> Option<Response<Body>> {
        let span = tracing::Span::current();
        let mut decision = "allow";
        if let Verdict::Deny(d) = ctx.chain.decide(&ctx.question(tool, None)) {
            log_denial("list", &d, ctx.enforced());
            if ctx.enforced() {
                span.record("decision", "deny");
                return Some(rpc_error(
                    msg.id(),
                    code::INVALID_PARAMS,
                    &format!("Unknown tool: {shown_as}"),
                ));
            }
            decision = "would-deny";
        }
        if let Verdict::Deny(d) = ctx.chain.decide(&ctx.question(tool, Some(arguments))) {
            log_denial("call", &d, ctx.enforced());
            if ctx.enforced() {
                span.record("decision", "deny");
                return Some(json_response(
                    StatusCode::OK,
                    &jsonrpc::tool_error_result(msg.id(), &denial_text(&d)),
                ));
            }
            decision = "would-deny";
        }
        span.record("decision", decision);
        tracing::info!(decision, "tools/call forwarded");
        None
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        server: &ServerView,
        method: Method,
        headers: &HeaderMap,
        body: Bytes,
        identity: &Identity,
        msg: Option<&Message>,
        relay: Relay,
        ctx: Option<Context>,
    ) -> Response<Body> {
        let id = msg.and_then(Message::id);
        let upstream = match self.upstream.forward(server, method, headers, body).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "upstream failed");
                return match msg.map(|m| &m.kind) {
                    Some(Kind::Request) => rpc_error(id, code::INTERNAL_ERROR, &e.to_string()),
                    _ => http_error(
                        StatusCode::BAD_GATEWAY,
                        code::INTERNAL_ERROR,
                        &e.to_string(),
                    ),
                };
            }
        };
        let status = upstream.status();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            // The upstream refused the gateway's own credentials; the client cannot fix that, and
            // the upstream's OAuth challenge must not send it to another authorization server.
            tracing::error!(
                status = status.as_u16(),
                "upstream refused the gateway's credentials"
            );
            let message = format!(
                "upstream {} refused the gateway's credentials ({status})",
                server.name
            );
            return match msg.map(|m| &m.kind) {
                Some(Kind::Request) => rpc_error(id, code::INTERNAL_ERROR, &message),
                _ => http_error(StatusCode::BAD_GATEWAY, code::INTERNAL_ERROR, &message),
            };
        }
        let mut out_headers = upstream::response_headers(upstream.headers());
        if let Some(session) = out_headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            let key = Sessions::key(server, &identity.principal.workspace, session);
            self.sessions.admit(key, &identity.token_id);
        }
        let sse = upstream::is_event_stream(upstream.headers());
        let body = upstream.into_body();
        let body: Body = match (relay, ctx) {
            (Relay::Stream, _) | (_, None) => body.map_err(Into::into).boxed(),
            (relay, Some(ctx)) if sse => sse::Rewrite::new(body, move |event: &sse::Event<'_>| {
                let data = event.data.as_deref()?;
                let mut value: Value = serde_json::from_str(data).ok()?;
                if value.get("id") != Some(&ctx.rpc_id) {
                    return None;
                }
                ctx.rewrite(&relay, &mut value);
                Some(event.with_data(&value.to_string()))
            })
            .boxed(),
            (relay, Some(ctx)) => {
                // A JSON answer: hold it (bounded), rewrite, send.
                match Limited::new(body, self.limits.max_rewrite_bytes)
                    .collect()
                    .await
                {
                    Ok(collected) => {
                        let bytes = collected.to_bytes();
                        match serde_json::from_slice::<Value>(&bytes) {
                            Ok(mut value) => {
                                ctx.rewrite(&relay, &mut value);
                                out_headers.remove(header::CONTENT_LENGTH);
                                full(value.to_string())
                            }
                            Err(_) => full(bytes),
                        }
                    }
                    Err(e) => {
                        let message = format!("upstream {} answer unreadable: {e}", server.name);
                        return rpc_error(id, code::INTERNAL_ERROR, &message);
                    }
                }
            }
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        *resp.headers_mut() = out_headers;
        if sse {
            resp.headers_mut()
                .insert("x-accel-buffering", HeaderValue::from_static("no"));
        }
        resp
    }
}

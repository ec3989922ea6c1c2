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

use crate::audit::{self, Audit, Call, CallStart, Status};
use crate::identity::{AuthError, Directory, Identity, ServerView};
use crate::policy::{Denial, PolicyChain, PolicySet, Question, Verdict};
use crate::upstream::{self, Upstream};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited, combinators::BoxBody};
use hyper::body::Incoming;
use jsonrpc::{Kind, Message, code};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
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

/// Which token a session belongs to. Only session ids an upstream issued (in the response to the
/// request that opened the session) are bound; a request naming any other id gets 404, the
/// specified signal for a client to open a new session. Oldest bindings go first past the bound.
#[derive(Default)]
struct Sessions {
    inner: Mutex<SessionMap>,
}

#[derive(Default)]
struct SessionMap {
    owners: HashMap<String, String>,
    order: std::collections::VecDeque<String>,
}

/// Bound on remembered sessions.
const MAX_SESSIONS: usize = 100_000;
/// Longest session id accepted (the spec allows visible ASCII; real ids are UUIDs or hashes).
const MAX_SESSION_ID: usize = 128;

/// Whether a request may use the session it names.
#[derive(Debug, PartialEq, Eq)]
enum SessionCheck {
    /// This token opened it.
    Owned,
    /// Unknown here, or another token's.
    Refused,
}

impl Sessions {
    fn key(server: &str, workspace: &str, session: &str) -> String {
        format!("{workspace}\u{1f}{server}\u{1f}{session}")
    }

    fn check(&self, key: &str, token: &str) -> SessionCheck {
        let map = lock(&self.inner);
        match map.owners.get(key) {
            Some(owner) if owner == token => SessionCheck::Owned,
            _ => SessionCheck::Refused,
        }
    }

    /// Binds an id the upstream just issued to the token that opened it.
    fn bind(&self, key: String, token: &str) {
        let mut map = lock(&self.inner);
        if map.owners.contains_key(&key) {
            return;
        }
        while map.owners.len() >= MAX_SESSIONS {
            let Some(oldest) = map.order.pop_front() else {
                break;
            };
            map.owners.remove(&oldest);
        }
        map.order.push_back(key.clone());
        map.owners.insert(key, token.to_owned());
    }

    fn forget(&self, key: &str) {
        let mut map = lock(&self.inner);
        map.owners.remove(key);
        map.order.retain(|k| k != key);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
    audit: Arc<Audit>,
    metrics: Arc<crate::metrics::Metrics>,
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
fn header_text(headers: &HeaderMap, name: &HeaderName) -> Option<Result<String, ()>> {
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

/// The length of `uri` as written (scheme, authority, path and query), without writing it.
fn uri_len(uri: &http::Uri) -> usize {
    uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |pq| pq.as_str().len())
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
        .get(&upstream::MCP_PROTOCOL_VERSION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v >= "2026-07-28")
}

/// Checks `Mcp-Method` / `Mcp-Name` against the body. Policy is decided on the body; a header
/// that says otherwise is refused rather than trusted.
fn check_routing_headers(headers: &HeaderMap, msg: &Message) -> Result<(), String> {
    for name in [
        &upstream::MCP_METHOD,
        &upstream::MCP_NAME,
        &upstream::MCP_PROTOCOL_VERSION,
    ] {
        if headers.get_all(name).iter().count() > 1 {
            return Err(format!("{name} header given more than once"));
        }
    }
    let method = msg.method().unwrap_or_default();
    match header_text(headers, &upstream::MCP_METHOD) {
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
    match header_text(headers, &upstream::MCP_NAME) {
        Some(Ok(h)) if h == body_name => Ok(()),
        Some(Ok(h)) => Err(format!(
            "Mcp-Name header {h:?} does not match the body's {name_field} {body_name:?}"
        )),
        Some(Err(())) => Err("Mcp-Name header is not valid".into()),
        None if is_modern(headers) => Err("Mcp-Name header is required".into()),
        None => Ok(()),
    }
}

/// The id the upstream sees for a request whose answer the gateway rewrites: unique, and carrying
/// the client's id so that an answer replayed later can be given back its own.
fn gateway_id(request_id: &str, client_id: &Value) -> String {
    format!("mcpgw-{request_id}~{client_id}")
}

/// The client's id inside a [`gateway_id`].
fn client_id_from_gateway_id(id: &str) -> Option<Value> {
    let rest = id.strip_prefix("mcpgw-")?;
    serde_json::from_str(rest.split_once('~')?.1).ok()
}

/// Methods that touch a server's prompts, resources, completions, tasks or anything unknown, and so
/// need a server-wide grant; tools and the protocol's own plumbing do not.
fn needs_server_grant(method: &str) -> bool {
    !matches!(
        method,
        "initialize"
            | "ping"
            | "tools/list"
            | "tools/call"
            | "server/discover"
            | "logging/setLevel"
            | "subscriptions/listen"
    )
}

/// What to do with the upstream's answer.
enum Relay {
    /// Pass it through untouched.
    Stream,
    /// Filter `result.tools` of the response to this request id.
    FilterTools,
    /// Run the result phase on the response to this `tools/call`.
    InspectResult { tool: String, arguments: String },
    /// A GET stream: answers replayed on it get the same filtering, or are withheld when they
    /// cannot be attributed to a call the result phase could inspect.
    Resumed,
}

/// Everything the relay needs to rewrite an answer.
struct Context {
    chain: Arc<PolicyChain>,
    identity: Arc<Identity>,
    server: String,
    request_id: String,
    /// The id the upstream sees: the gateway's own whenever the answer must be rewritten, so that
    /// matching the answer never depends on how an upstream re-encodes a client's id.
    rpc_id: Value,
    /// The client's id, restored on the answer.
    client_id: Value,
    /// The audit record of a `tools/call`.
    call: Option<Arc<Call>>,
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
            if let Some(call) = &self.call {
                call.denied(&d, self.enforced());
            }
            if self.enforced() {
                *response = jsonrpc::tool_error_result(Some(&self.client_id), &denial_text(&d));
            }
        }
    }

    /// Rewrites the answer to this request (and gives it back the client's id).
    fn rewrite(&self, relay: &Relay, response: &mut Value) {
        if response.get("id") != Some(&self.rpc_id) {
            return;
        }
        match relay {
            Relay::FilterTools => self.filter_tools(response),
            Relay::InspectResult { tool, arguments } => self.inspect(response, tool, arguments),
            Relay::Stream | Relay::Resumed => {}
        }
        if let Some(call) = &self.call {
            call.answered(&jsonrpc::Outcome::of_value(response));
        }
        response["id"] = self.client_id.clone();
    }

    /// Reads a message passing through untouched for the outcome of the call it may answer (for
    /// the audit record): true when it is that answer, an error when it is not JSON.
    fn watch(&self, text: &[u8]) -> Result<bool, serde_json::Error> {
        let answer = jsonrpc::Answer::read(text)?;
        if answer.id.as_ref() != Some(&self.rpc_id) {
            return Ok(false);
        }
        if let Some(call) = &self.call {
            call.answered(&answer.outcome);
        }
        Ok(true)
    }

    /// An answer replayed on a GET stream: tool lists are filtered, tool results withheld when a
    /// module inspects results (the gateway no longer knows which call they answer), and the
    /// gateway's ids turned back into the client's.
    fn rewrite_resumed(&self, response: &mut Value) -> bool {
        if response.get("method").is_some() || response.get("id").is_none() {
            return false;
        }
        if let Some(client_id) = response["id"].as_str().and_then(client_id_from_gateway_id) {
            response["id"] = client_id;
        }
        if response.pointer("/result/tools").is_some() {
            self.filter_tools(response);
        } else if response.get("result").is_some() && self.chain.inspects_results() {
            let why = "a replayed result cannot be inspected by the gateway's policy; call the tool again";
            *response = jsonrpc::error_response(response.get("id"), code::INTERNAL_ERROR, why);
        }
        true
    }
}

/// The status of a call whose upstream request failed.
fn upstream_status(e: &upstream::Error) -> Status {
    match e {
        upstream::Error::Timeout { .. } => Status::Timeout,
        _ => Status::UpstreamError,
    }
}

/// Holds a call's audit record open until its response body is done with.
fn tracked(resp: Response<Body>, call: Option<Arc<Call>>) -> Response<Body> {
    match call {
        Some(call) => resp.map(|b| audit::Tracked::new(b, call).boxed()),
        None => resp,
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
        audit: Arc<Audit>,
        metrics: Arc<crate::metrics::Metrics>,
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
            audit,
            metrics,
        }
    }

    /// Serves one HTTP request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let received = Instant::now();
        let request_id = format!(
            "{}-{}",
            self.request_prefix,
            self.next_request.fetch_add(1, Ordering::Relaxed)
        );
        let span = tracing::info_span!("mcp", request_id = %request_id, workspace = tracing::field::Empty,
            member = tracing::field::Empty, server = tracing::field::Empty, method = tracing::field::Empty,
            tool = tracing::field::Empty, decision = tracing::field::Empty);
        let path = req.uri().path();
        let endpoint = if path == "/mcp" || path == "/mcp/" {
            "mcp"
        } else if path.starts_with("/mcp/") {
            "mcp_server"
        } else if path.starts_with("/.well-known/") {
            "metadata"
        } else {
            "other"
        };
        let resp = self.route(req, request_id, received).instrument(span).await;
        self.metrics.request(endpoint, resp.status().as_u16());
        Ok(resp)
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        request_id: String,
        received: Instant,
    ) -> Response<Body> {
        let path = req.uri().path().to_owned();
        if path.starts_with("/.well-known/oauth-protected-resource") {
            return self.resource_metadata(&req, &path);
        }
        if uri_len(req.uri()) > self.limits.max_uri_bytes {
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
            Err(e) => {
                let why = match e {
                    AuthError::Missing => "missing-token",
                    AuthError::Invalid => "invalid-token",
                    AuthError::Expired => "expired-token",
                };
                self.audit
                    .auth_failure(&server_name, why, &request_id, received);
                return self.unauthorized(&req, &path, e);
            }
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
            return self.aggregate(req, identity, request_id, received).await;
        }
        span.record("server", server_name.as_str());
        let Some(server) = identity.workspace.servers.get(&server_name).cloned() else {
            return http_error(
                StatusCode::NOT_FOUND,
                code::INVALID_REQUEST,
                &format!("unknown server {server_name:?} in this workspace"),
            );
        };
        let session_id = match req
            .headers()
            .get_all(&upstream::MCP_SESSION_ID)
            .iter()
            .collect::<Vec<_>>()
            .as_slice()
        {
            [] => None,
            [one] => match one.to_str() {
                Ok(id)
                    if !id.is_empty()
                        && id.len() <= MAX_SESSION_ID
                        && id.bytes().all(|b| (0x21..=0x7e).contains(&b)) =>
                {
                    Some(id.to_owned())
                }
                _ => {
                    return http_error(
                        StatusCode::BAD_REQUEST,
                        code::INVALID_REQUEST,
                        "invalid Mcp-Session-Id",
                    );
                }
            },
            _ => {
                return http_error(
                    StatusCode::BAD_REQUEST,
                    code::INVALID_REQUEST,
                    "more than one Mcp-Session-Id",
                );
            }
        };
        let session_key =
            session_id.map(|s| Sessions::key(&server.name, &identity.principal.workspace, &s));
        if let Some(key) = &session_key
            && self.sessions.check(key, &identity.token_id) == SessionCheck::Refused
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
                // A GET stream can replay answers (Last-Event-ID): they get the same treatment.
                let ctx = Context {
                    chain: self.policies.chain(),
                    identity: identity.clone(),
                    server: server.name.clone(),
                    request_id,
                    rpc_id: Value::Null,
                    client_id: Value::Null,
                    call: None,
                };
                let relay = if method == Method::GET {
                    Relay::Resumed
                } else {
                    Relay::Stream
                };
                let resp = self
                    .forward(
                        &server,
                        method.clone(),
                        &headers,
                        Bytes::new(),
                        &identity,
                        None,
                        relay,
                        Some(ctx),
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
            Method::POST => self.post(req, server, identity, request_id, received).await,
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
        if msg.kind == Kind::Notification
            && !msg
                .method()
                .unwrap_or_default()
                .starts_with("notifications/")
        {
            // A request without an id would skip every decision made on requests.
            return Err(http_error(
                StatusCode::BAD_REQUEST,
                code::INVALID_REQUEST,
                "a message without an id must be a notifications/* method",
            ));
        }
        if let Err(why) = check_routing_headers(&parts.headers, &msg) {
            let body = jsonrpc::error_response(msg.id(), code::HEADER_MISMATCH, &why);
            return Err(json_response(StatusCode::BAD_REQUEST, &body));
        }
        Ok((parts, body, msg))
    }

    async fn post(
        &self,
        req: Request<Incoming>,
        server: Arc<ServerView>,
        identity: Arc<Identity>,
        request_id: String,
        received: Instant,
    ) -> Response<Body> {
        let (parts, _raw, msg) = match self.read_message(req).await {
            Ok(read) => read,
            Err(refusal) => return refusal,
        };
        let span = tracing::Span::current();
        if let Some(m) = msg.method() {
            span.record("method", m);
        }
        let call = if msg.kind == Kind::Request && msg.method() == Some("tools/call") {
            let session = parts
                .headers
                .get(&upstream::MCP_SESSION_ID)
                .and_then(|v| v.to_str().ok());
            let start = CallStart {
                workspace: &identity.principal.workspace,
                member: identity.principal.member.as_deref(),
                token_id: &identity.token_id,
                server: &server.name,
                tool: msg.param_str("name").unwrap_or_default(),
                request_id: &request_id,
                session_id: session,
                received,
            };
            match self.audit.begin_call(&start) {
                Ok(call) => call,
                Err(full) => return rpc_error(msg.id(), code::INTERNAL_ERROR, &full.to_string()),
            }
        } else {
            None
        };
        let resp = self
            .post_message(parts, msg, server, identity, request_id, call.clone())
            .await;
        tracked(resp, call)
    }

    async fn post_message(
        &self,
        parts: http::request::Parts,
        msg: Message,
        server: Arc<ServerView>,
        identity: Arc<Identity>,
        request_id: String,
        call: Option<Arc<Call>>,
    ) -> Response<Body> {
        let span = tracing::Span::current();
        let chain = self.policies.chain();
        let ctx = Context {
            chain: chain.clone(),
            identity: identity.clone(),
            server: server.name.clone(),
            request_id,
            rpc_id: msg.id().cloned().unwrap_or(Value::Null),
            client_id: msg.id().cloned().unwrap_or(Value::Null),
            call,
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
                    if msg
                        .value
                        .get("params")
                        .is_some_and(|p| p.get("task").is_some())
                    {
                        // A task's result arrives later through tasks/result, out of reach of
                        // the result phase: refuse rather than let it bypass inspection.
                        let why =
                            "task-augmented tool calls are refused while a policy inspects results";
                        if let Some(call) = &ctx.call {
                            call.finish(Status::Denied, Some(code::INVALID_PARAMS.to_string()));
                        }
                        return rpc_error(msg.id(), code::INVALID_PARAMS, why);
                    }
                    Relay::InspectResult { tool, arguments }
                } else {
                    Relay::Stream
                }
            }
            (Kind::Request, Some(method)) if needs_server_grant(method) => {
                if let Some(refusal) = self.decide_server_wide(&ctx, &msg, method) {
                    return refusal;
                }
                Relay::Stream
            }
            _ => Relay::Stream,
        };
        // Forward exactly what was decided on: the parsed message, re-serialized (duplicate keys,
        // whitespace and number spellings cannot differ between the gateway's reading and the
        // upstream's). Answers the gateway rewrites are matched by an id of its own.
        let mut ctx = ctx;
        let body = if msg.kind == Kind::Request && !matches!(relay, Relay::Stream) {
            ctx.rpc_id = json!(gateway_id(&ctx.request_id, &ctx.client_id));
            msg.to_json(Some(&ctx.rpc_id))
        } else {
            msg.to_json(None)
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

    /// Methods other than tools (prompts, resources, completions, tasks, anything else) reach a
    /// server only for a member whose grants cover the whole server (`server:*`): grants name
    /// tools, so nothing narrower can say a prompt or resource is allowed.
    fn decide_server_wide(
        &self,
        ctx: &Context,
        msg: &Message,
        method: &str,
    ) -> Option<Response<Body>> {
        let Verdict::Deny(d) = ctx.chain.decide(&ctx.question("*", None)) else {
            return None;
        };
        log_denial("server", &d, ctx.enforced());
        if !ctx.enforced() {
            return None;
        }
        tracing::Span::current().record("decision", "deny");
        let why = format!(
            "{method} on {} needs a grant covering the whole server ({}:*)",
            ctx.server, ctx.server
        );
        Some(rpc_error(msg.id(), code::INVALID_PARAMS, &why))
    }

    /// Policy for a `tools/call`: visibility first (a hidden tool is an unknown tool), then the
    /// call-phase modules with its arguments, any of which may refuse (a refusal is a tool error the
    /// model can read). `None` lets it proceed.
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
            if let Some(call) = &ctx.call {
                call.denied(&d, ctx.enforced());
            }
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
        if let Verdict::Deny(d) = ctx.chain.veto(&ctx.question(tool, Some(arguments))) {
            log_denial("call", &d, ctx.enforced());
            if let Some(call) = &ctx.call {
                call.denied(&d, ctx.enforced());
            }
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
        let call = ctx.as_ref().and_then(|c| c.call.clone());
        if let Some(call) = &call {
            call.upstream_started();
        }
        let upstream = match self.upstream.forward(server, method, headers, body).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "upstream failed");
                if let Some(call) = &call {
                    call.finish(upstream_status(&e), Some(code::INTERNAL_ERROR.to_string()));
                }
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
            if let Some(call) = &call {
                call.finish(Status::UpstreamError, Some(status.as_u16().to_string()));
            }
            return match msg.map(|m| &m.kind) {
                Some(Kind::Request) => rpc_error(id, code::INTERNAL_ERROR, &message),
                _ => http_error(StatusCode::BAD_GATEWAY, code::INTERNAL_ERROR, &message),
            };
        }
        let out_headers = upstream::response_headers(upstream.headers());
        if let Some(session) = out_headers
            .get(&upstream::MCP_SESSION_ID)
            .and_then(|v| v.to_str().ok())
        {
            let key = Sessions::key(&server.name, &identity.principal.workspace, session);
            self.sessions.bind(key, &identity.token_id);
        }
        let sse = upstream::is_event_stream(upstream.headers());
        let body = upstream.into_body();
        // A tool call's answer is watched for, and ends its stream; other requests' answers pass
        // untouched and unbounded (a large resource, say). A JSON answer is held only when it is
        // read for an audit record.
        let tool_call =
            msg.is_some_and(|m| m.kind == Kind::Request && m.method() == Some("tools/call"));
        // Streams that end with the answer the gateway watches for; their headers wait for the
        // first event.
        let answer_stream = sse
            && match relay {
                Relay::Resumed => false,
                Relay::Stream => tool_call,
                Relay::FilterTools | Relay::InspectResult { .. } => true,
            };
        let body: Body = match (relay, ctx) {
            (Relay::Stream, Some(ctx)) if !tool_call || (!sse && ctx.call.is_none()) => {
                body.map_err(Into::into).boxed()
            }
            (_, None) => body.map_err(Into::into).boxed(),
            (Relay::Resumed, Some(ctx)) if sse => {
                sse::Rewrite::new(body, move |event: &sse::Event<'_>| {
                    let rewritten = || {
                        let mut value: Value = serde_json::from_str(event.data.as_deref()?).ok()?;
                        ctx.rewrite_resumed(&mut value)
                            .then(|| event.with_data(&value.to_string()))
                    };
                    rewritten().into()
                })
                .boxed()
            }
            (Relay::Resumed, Some(_)) => body.map_err(Into::into).boxed(),
            // A tool call whose answer passes untouched: the answer is read for its id (and its
            // outcome, for the audit record), goes out as it came, and ends the stream.
            (Relay::Stream, Some(ctx)) if sse => {
                sse::Rewrite::new(body, move |event: &sse::Event<'_>| {
                    // An event that is not JSON is not the answer; it passes as it came.
                    let answer = event
                        .data
                        .as_deref()
                        .is_some_and(|data| ctx.watch(data.as_bytes()).unwrap_or(false));
                    sse::Step {
                        last: answer,
                        ..sse::Step::PASS
                    }
                })
                .boxed()
            }
            (relay, Some(ctx)) if sse => sse::Rewrite::new(body, move |event: &sse::Event<'_>| {
                let Some(mut value) = event
                    .data
                    .as_deref()
                    .and_then(|data| serde_json::from_str::<Value>(data).ok())
                    .filter(|value| value.get("id") == Some(&ctx.rpc_id))
                else {
                    return sse::Step::PASS;
                };
                ctx.rewrite(&relay, &mut value);
                sse::Step::replace(event.with_data(&value.to_string())).last()
            })
            .boxed(),
            (relay, Some(ctx)) => {
                // A JSON answer: held (bounded), then rewritten, or only read for its outcome
                // and sent unchanged. What cannot be read fails closed: it cannot be filtered,
                // inspected or audited.
                let bytes = match Limited::new(body, self.limits.max_rewrite_bytes)
                    .collect()
                    .await
                {
                    Ok(collected) => collected.to_bytes(),
                    Err(e) => {
                        if let Some(call) = &ctx.call {
                            call.finish(Status::UpstreamError, Some("unreadable".into()));
                        }
                        let message = format!("upstream {} answer unreadable: {e}", server.name);
                        return rpc_error(id, code::INTERNAL_ERROR, &message);
                    }
                };
                let answer = match relay {
                    Relay::Stream => ctx.watch(&bytes).map(|_| bytes),
                    relay => serde_json::from_slice::<Value>(&bytes).map(|mut value| {
                        ctx.rewrite(&relay, &mut value);
                        Bytes::from(value.to_string())
                    }),
                };
                match answer {
                    Ok(answer) => full(answer),
                    Err(e) => {
                        if let Some(call) = &ctx.call {
                            call.finish(Status::UpstreamError, Some("not-json".into()));
                        }
                        let message = format!("upstream {} answer is not JSON: {e}", server.name);
                        return rpc_error(Some(&ctx.client_id), code::INTERNAL_ERROR, &message);
                    }
                }
            }
        };
        let body = if answer_stream {
            let primed = sse::primed(body, sse::FIRST_EVENT_WAIT).await;
            if let Some(e) = primed.failed() {
                if let Some(call) = &call {
                    call.finish(Status::UpstreamError, Some("stream-error".into()));
                }
                let message = format!("upstream {} stream failed: {e}", server.name);
                return rpc_error(id, code::INTERNAL_ERROR, &message);
            }
            primed.boxed()
        } else {
            body
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        *resp.headers_mut() = out_headers;
        if sse {
            resp.headers_mut().insert(
                upstream::X_ACCEL_BUFFERING.clone(),
                HeaderValue::from_static("no"),
            );
        }
        resp
    }
}

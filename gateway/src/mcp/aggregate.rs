//! `/mcp`: one endpoint per workspace exposing every server's tools, prompts and resources.
//!
//! Here the gateway is the MCP server the client talks to, in either revision: it answers
//! `initialize` (2025-11-25, with a session of its own) and `server/discover` itself, fans lists
//! out to every server, and routes each other request to the server that owns the name, through
//! [`upstream::client`] (the gateway as an MCP client). Every result it builds or relays carries
//! what the client's revision requires (`resultType`; `ttlMs` and `cacheScope` on cacheable
//! results; lists it filters per member are private).
//!
//! Naming: a tool or prompt `t` of server `s` is exposed as the server's prefix followed by `t`
//! (prefix `s_` unless the server says otherwise; `''` exposes names unchanged). A name that would
//! break the strictest client rule `^[a-zA-Z0-9_-]{1,64}$` is made to fit: characters outside the
//! rule become `-`, and a name over 64 characters is cut and ends in `-` plus 8 hex digits of the
//! SHA-256 of the original, so it stays unique. When two servers would expose the same name, the
//! server first in name order keeps it and the other's is hidden (and logged), never merged.
//! Resources keep their URIs. Server-to-client requests relayed during a call get ids
//! `mcpgw~{server}~{id}`, so the client's answer finds its way back to the right upstream.

use super::jsonrpc::{self, Kind, Message};
use super::relay::{self, Context, Relay, complete_result, make_private};
use super::server::{decide_call, decide_server_wide};
use super::session::{self, Sessions, lock};
use super::{Body, Error, Proxy, finish, full, request, sse};
use crate::audit::Call;
use crate::identity::{Identity, ServerView};
use crate::policy::{Question, Verdict};
use crate::upstream::{self, client::Revision};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Open `/mcp` sessions one token may hold; opening more forgets its oldest.
const SESSIONS_PER_TOKEN: usize = 64;
/// What the gateway tells a client about itself.
const INSTRUCTIONS: &str =
    "Every tool of every server in this workspace, each under its server's prefix.";

/// The state of the aggregated endpoint.
pub(super) struct Aggregates {
    /// The gateway's own 2025-11-25 sessions → token id.
    client_sessions: Sessions,
    /// Token id → exposed names → (server, original name).
    names: Mutex<HashMap<String, Names>>,
    /// The gateway as a client of the upstreams.
    pub(super) client: upstream::client::Client,
}

#[derive(Default)]
struct Names {
    tools: HashMap<String, (String, String)>,
    prompts: HashMap<String, (String, String)>,
    resources: HashMap<String, String>,
}

impl Aggregates {
    pub(super) fn new(client: upstream::client::Client) -> Aggregates {
        Aggregates {
            client_sessions: Sessions::new(session::MAX_SESSIONS, SESSIONS_PER_TOKEN),
            names: Mutex::new(HashMap::new()),
            client,
        }
    }
}

/// The exposed name of `name` on a server whose prefix is `prefix`.
pub fn exposed_name(prefix: &str, name: &str) -> String {
    let candidate = format!("{prefix}{name}");
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
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
    // Cleaning may collide with a real name; the hash keeps it apart.
    let hash = hex::encode(&Sha256::digest(name.as_bytes())[..4]);
    if cleaned.len() + 9 <= 64 {
        return format!("{cleaned}-{hash}");
    }
    let mut cut = 55;
    while !cleaned.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{hash}", &cleaned[..cut])
}

/// What one request on `/mcp` is about, read once.
struct Req<'a> {
    identity: &'a Arc<Identity>,
    msg: &'a Message,
    headers: &'a HeaderMap,
    revision: Revision,
    request_id: String,
    /// The flow: the gateway's session (2025-11-25), else the token.
    flow_key: String,
}

impl Req<'_> {
    fn id(&self) -> Option<&Value> {
        self.msg.id()
    }

    /// The client's `_meta` (2026-07-28: its version and capabilities travel with each request).
    fn meta(&self) -> Option<&Value> {
        self.msg.value.get("params")?.get("_meta")
    }

    /// A result of the gateway's own, complete for the client's revision.
    fn result(&self, mut result: Map<String, Value>) -> Response<Body> {
        if self.revision == Revision::Modern {
            complete_result(&mut result);
            result.insert(
                "_meta".into(),
                json!({"io.modelcontextprotocol/serverInfo": server_info()}),
            );
        }
        super::error::json(
            StatusCode::OK,
            &json!({"jsonrpc": "2.0", "id": self.id().cloned().unwrap_or(Value::Null), "result": result}),
        )
    }
}

fn server_info() -> Value {
    json!({"name": "mcpgw", "version": env!("CARGO_PKG_VERSION")})
}

/// The revision a request speaks, and for 2026-07-28 its `_meta` checked: version and
/// capabilities present (else -32602), the version the header's and one the gateway speaks.
fn revision_of(headers: &HeaderMap, msg: &Message) -> Result<Revision, Error> {
    let meta_version = msg
        .value
        .get("params")
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get("io.modelcontextprotocol/protocolVersion"));
    if !request::is_modern(headers) && meta_version.is_none() {
        return Ok(Revision::Legacy);
    }
    if msg.kind != Kind::Request {
        return Ok(Revision::Modern);
    }
    let meta = msg
        .value
        .get("params")
        .and_then(|p| p.get("_meta"))
        .and_then(Value::as_object)
        .ok_or_else(|| Error::InvalidMeta("params._meta is required".into()))?;
    let version = meta
        .get("io.modelcontextprotocol/protocolVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            Error::InvalidMeta("io.modelcontextprotocol/protocolVersion must be a string".into())
        })?;
    if !meta
        .get("io.modelcontextprotocol/clientCapabilities")
        .is_some_and(Value::is_object)
    {
        return Err(Error::InvalidMeta(
            "io.modelcontextprotocol/clientCapabilities must be an object".into(),
        ));
    }
    let header = headers
        .get(&upstream::MCP_PROTOCOL_VERSION)
        .and_then(|v| v.to_str().ok());
    if header.is_some_and(|h| h != version) {
        return Err(Error::HeaderMismatch(format!(
            "MCP-Protocol-Version header {header:?} does not match _meta's {version:?}"
        )));
    }
    if version < request::MODERN || !request::SUPPORTED.contains(&version) {
        return Err(Error::UnsupportedVersion(
            version.chars().take(32).collect(),
        ));
    }
    Ok(Revision::Modern)
}

impl Proxy {
    /// One request to `/mcp`.
    pub(super) async fn aggregate(
        &self,
        req: Request<Incoming>,
        identity: Arc<Identity>,
        request_id: String,
        received: Instant,
    ) -> Response<Body> {
        let session = match request::session_id(req.headers()) {
            Ok(s) => s,
            Err(e) => return finish(Err(e), None, None, false),
        };
        if let Some(s) = &session
            && !self
                .aggregates
                .client_sessions
                .owned_by(s, &identity.token_id)
        {
            return finish(Err(Error::SessionNotFound), None, None, false);
        }
        match *req.method() {
            Method::POST => {}
            Method::DELETE => {
                if let Some(s) = &session {
                    self.aggregates.client_sessions.forget(s);
                }
                return super::error::json(StatusCode::OK, &json!({}));
            }
            Method::GET if session.is_some() => return self.listen_legacy(&identity).await,
            _ => {
                return finish(
                    Err(Error::MethodNotAllowed("POST, DELETE")),
                    None,
                    None,
                    false,
                );
            }
        }
        let (parts, msg) = match request::read_message(req, &self.limits).await {
            Ok(read) => read,
            Err(e) => return finish(Err(e), None, None, false),
        };
        if let Some(m) = msg.method() {
            tracing::Span::current().record("method", m);
        }
        let is_request = msg.kind == Kind::Request;
        let revision = match revision_of(&parts.headers, &msg) {
            Ok(r) => r,
            Err(e) => return finish(Err(e), None, msg.id(), false),
        };
        let flow_key = crate::flow::key(
            &identity.principal.workspace,
            session.as_deref(),
            &identity.token_id,
        );
        if revision == Revision::Modern
            && let Some(info) = msg
                .value
                .get("params")
                .and_then(|p| p.get("_meta"))
                .and_then(|m| m.get("io.modelcontextprotocol/clientInfo"))
                .and_then(super::client_info_of)
        {
            self.flows.set_client(&flow_key, info);
        }
        let r = Req {
            identity: &identity,
            msg: &msg,
            headers: &parts.headers,
            revision,
            request_id,
            flow_key,
        };
        // On /mcp the server is not known until the exposed name is resolved (`Call::target`).
        let call = match self.begin_call(
            &msg,
            &identity,
            "",
            &r.request_id,
            session.as_deref(),
            received,
        ) {
            Ok(call) => call,
            Err(e) => return finish(Err(e), None, msg.id(), true),
        };
        let result = self.dispatch(&r, call.clone()).await;
        finish(result, call, msg.id(), is_request)
    }

    /// One message on `/mcp`, by what it asks.
    async fn dispatch(
        &self,
        r: &Req<'_>,
        call: Option<Arc<Call>>,
    ) -> Result<Response<Body>, Error> {
        let method = match (&r.msg.kind, r.msg.method()) {
            (Kind::Notification, _) => {
                let mut resp = Response::new(full(bytes::Bytes::new()));
                *resp.status_mut() = StatusCode::ACCEPTED;
                return Ok(resp);
            }
            (Kind::Response, _) => return self.relay_reply(r).await,
            (Kind::Request, Some(m)) => m,
            (Kind::Request, None) => {
                return Err(Error::Message(jsonrpc::Error::Invalid("missing method")));
            }
        };
        let mut empty = Map::new();
        if r.revision == Revision::Modern
            && matches!(method, "initialize" | "ping" | "logging/setLevel")
        {
            // Removed in 2026-07-28: a modern client gets what any unknown method gets.
            return Err(Error::NoSuchMethod(method.to_owned()));
        }
        match method {
            "initialize" => self.initialize(r),
            "server/discover" => Ok(r.result(discover_result())),
            "ping" => Ok(r.result(Map::new())),
            "logging/setLevel" => {
                // Every server gets the level; the gateway's own answer is empty.
                self.broadcast(r).await;
                Ok(r.result(Map::new()))
            }
            "tools/list" => {
                let (tools, ttl) = self.list_tools(r).await;
                empty.insert("tools".into(), Value::Array(tools));
                Ok(r.result(list_result(empty, ttl)))
            }
            "prompts/list" | "resources/list" | "resources/templates/list" => {
                let field = match method {
                    "prompts/list" => "prompts",
                    "resources/list" => "resources",
                    _ => "resourceTemplates",
                };
                let (items, ttl) = self.list_named(r, method, field).await;
                empty.insert(field.into(), Value::Array(items));
                Ok(r.result(list_result(empty, ttl)))
            }
            "tools/call" => self.call_tool(r, call).await,
            "prompts/get" => {
                let name = r.msg.param_str("name").unwrap_or_default();
                let (server, prompt) = self
                    .resolve(r, name, |n| &n.prompts, "prompts/list", "prompts")
                    .await
                    .ok_or_else(|| Error::UnknownPrompt(name.to_owned()))?;
                self.forward_to(r, &server, Some(&prompt)).await
            }
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                let uri = r.msg.param_str("uri").unwrap_or_default();
                let server = self
                    .resource_server(r, uri)
                    .await
                    .ok_or_else(|| Error::UnknownResource(uri.to_owned()))?;
                self.forward_to(r, &server, None).await
            }
            "completion/complete" => {
                let reference = r.msg.value.get("params").and_then(|p| p.get("ref"));
                let kind = reference
                    .and_then(|v| v.get("type"))
                    .and_then(Value::as_str);
                match kind {
                    Some("ref/prompt") => {
                        let name = reference
                            .and_then(|v| v.get("name"))
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        let (server, prompt) = self
                            .resolve(r, name, |n| &n.prompts, "prompts/list", "prompts")
                            .await
                            .ok_or_else(|| Error::UnknownPrompt(name.to_owned()))?;
                        self.forward_completion(r, &server, &prompt).await
                    }
                    _ => {
                        let uri = reference
                            .and_then(|v| v.get("uri"))
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        let server = self
                            .resource_server(r, uri)
                            .await
                            .ok_or_else(|| Error::UnknownResource(uri.to_owned()))?;
                        self.forward_to(r, &server, None).await
                    }
                }
            }
            "subscriptions/listen" => self.listen_modern(r).await,
            other if r.revision == Revision::Modern => Err(Error::NoSuchMethod(other.to_owned())),
            other => Err(Error::MethodNotFound(other.to_owned())),
        }
    }

    fn initialize(&self, r: &Req<'_>) -> Result<Response<Body>, Error> {
        let asked = r
            .msg
            .value
            .get("params")
            .and_then(|p| p.get("protocolVersion"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let version = if request::SUPPORTED[1..].contains(&asked) {
            asked
        } else {
            upstream::client::LEGACY
        };
        if self.aggregates.client_sessions.len() >= session::MAX_SESSIONS {
            return Err(Error::TooManySessions);
        }
        let mut seed = [0u8; 16];
        let _ = getrandom::fill(&mut seed);
        let session = hex::encode(seed);
        self.aggregates
            .client_sessions
            .bind(session.clone(), &r.identity.token_id);
        if let Some(info) = Proxy::client_info(r.msg) {
            let key = crate::flow::key(
                &r.identity.principal.workspace,
                Some(&session),
                &r.identity.token_id,
            );
            self.flows.set_client(&key, info);
        }
        let mut result = Map::new();
        result.insert("protocolVersion".into(), json!(version));
        result.insert("capabilities".into(), capabilities());
        result.insert("serverInfo".into(), server_info());
        result.insert("instructions".into(), json!(INSTRUCTIONS));
        let mut resp = r.result(result);
        if let Ok(v) = HeaderValue::from_str(&session) {
            resp.headers_mut()
                .insert(upstream::MCP_SESSION_ID.clone(), v);
        }
        Ok(resp)
    }

    /// The workspace's servers in name order.
    fn servers<'a>(&self, r: &'a Req<'_>) -> BTreeMap<&'a str, &'a Arc<ServerView>> {
        r.identity
            .workspace
            .servers
            .iter()
            .map(|(name, s)| (name.as_str(), s))
            .collect()
    }

    /// `method` (a list) on every server concurrently, in server-name order, with the smallest
    /// TTL any gave. A server that fails is left out (and logged): one broken upstream must not
    /// hide the others.
    async fn list_every(
        &self,
        r: &Req<'_>,
        method: &str,
        field: &str,
    ) -> (Vec<(Arc<ServerView>, Vec<Value>)>, Option<u64>) {
        let servers = self.servers(r);
        let lists = futures_util::future::join_all(servers.values().map(|s| async {
            let revision = self.aggregates.client.revision(s, r.revision).await;
            self.aggregates
                .client
                .list(&r.identity.token_id, s, method, field, revision, r.meta())
                .await
        }))
        .await;
        let mut ttl: Option<u64> = None;
        let mut out = Vec::new();
        for (server, list) in servers.values().zip(lists) {
            match list {
                Ok(listed) => {
                    if let Some(t) = listed.ttl_ms {
                        ttl = Some(ttl.map_or(t, |m| m.min(t)));
                    }
                    out.push(((*server).clone(), listed.items));
                }
                Err(e) => {
                    tracing::warn!(server = %server.name, error = %e, "left out of the aggregated list");
                }
            }
        }
        (out, ttl)
    }

    async fn list_tools(&self, r: &Req<'_>) -> (Vec<Value>, Option<u64>) {
        let chain = self.policies.chain();
        let mut out = Vec::new();
        let mut names: HashMap<String, (String, String)> = HashMap::new();
        let ws = &r.identity.principal.workspace;
        self.catalog.ensure_loaded(ws).await;
        let flow = relay::Flow::of(&self.flows, r.flow_key.clone());
        let (lists, ttl) = self.list_every(r, "tools/list", "tools").await;
        for (server, tools) in lists {
            for mut tool in tools {
                let Some(name) = tool.get("name").and_then(Value::as_str).map(str::to_owned) else {
                    continue;
                };
                let (facts, trust) = self.catalog.observe(ws, &server.name, &tool);
                if !self.catalog.usable(trust) {
                    tracing::debug!(server = %server.name, tool = %name, ?trust, "hidden: definition not the pinned one");
                    continue;
                }
                let q = Question {
                    request_id: &r.request_id,
                    principal: &r.identity.principal,
                    server: &server.name,
                    tool: &name,
                    arguments: None,
                    facts: Some(&facts),
                    client: flow.client.as_deref(),
                    labels: &flow.labels,
                };
                if let Verdict::Deny(_) = chain.decide(&q)
                    && r.identity.workspace.enforce
                {
                    continue;
                }
                let exposed = exposed_name(&server.prefix, &name);
                if let Some((other, _)) = names.get(&exposed) {
                    tracing::warn!(name = %exposed, kept = %other, hidden = %server.name, "two servers expose the same name; the later is hidden");
                    continue;
                }
                tool["name"] = json!(exposed);
                names.insert(exposed, (server.name.clone(), name));
                out.push(tool);
            }
        }
        lock(&self.aggregates.names)
            .entry(r.identity.token_id.clone())
            .or_default()
            .tools = names;
        (out, ttl)
    }

    async fn list_named(
        &self,
        r: &Req<'_>,
        method: &str,
        field: &str,
    ) -> (Vec<Value>, Option<u64>) {
        let mut out = Vec::new();
        let (mut prompts, mut resources) = (HashMap::new(), HashMap::new());
        let (lists, ttl) = self.list_every(r, method, field).await;
        for (server, items) in lists {
            if !self.server_wide(r.identity, &server.name) {
                continue;
            }
            for mut item in items {
                match field {
                    "prompts" => {
                        let Some(name) =
                            item.get("name").and_then(Value::as_str).map(str::to_owned)
                        else {
                            continue;
                        };
                        let exposed = exposed_name(&server.prefix, &name);
                        if prompts.contains_key(&exposed) {
                            tracing::warn!(name = %exposed, hidden = %server.name, "two servers expose the same prompt name; the later is hidden");
                            continue;
                        }
                        item["name"] = json!(exposed);
                        prompts.insert(exposed, (server.name.clone(), name));
                    }
                    "resources" => {
                        if let Some(uri) = item.get("uri").and_then(Value::as_str) {
                            resources
                                .entry(uri.to_owned())
                                .or_insert_with(|| server.name.clone());
                        }
                    }
                    _ => {}
                }
                out.push(item);
            }
        }
        let mut all = lock(&self.aggregates.names);
        let names = all.entry(r.identity.token_id.clone()).or_default();
        match field {
            "prompts" => names.prompts = prompts,
            "resources" => names.resources = resources,
            _ => {}
        }
        (out, ttl)
    }

    /// The server and name behind an exposed tool or prompt name: from the caller's last
    /// listing, else from the servers' prefixes (the longest that fits; the one server without
    /// a prefix), else by listing afresh (a stateless client may never have listed here).
    async fn resolve(
        &self,
        r: &Req<'_>,
        exposed: &str,
        table: fn(&Names) -> &HashMap<String, (String, String)>,
        method: &str,
        field: &str,
    ) -> Option<(String, String)> {
        let known = |this: &Self| {
            lock(&this.aggregates.names)
                .get(&r.identity.token_id)
                .and_then(|n| table(n).get(exposed).cloned())
        };
        if let Some(hit) = known(self) {
            return Some(hit);
        }
        let servers = self.servers(r);
        let prefixed = servers
            .values()
            .filter(|s| {
                !s.prefix.is_empty()
                    && exposed.len() > s.prefix.len()
                    && exposed.starts_with(&s.prefix)
            })
            .max_by_key(|s| s.prefix.len());
        if let Some(s) = prefixed {
            return Some((s.name.clone(), exposed[s.prefix.len()..].to_owned()));
        }
        // Listing on a miss only for a caller that has not listed here: otherwise every call of
        // a made-up name would cost a fan-out to every server.
        if self.has_listed(r, |n| !table(n).is_empty()) {
            return None;
        }
        match field {
            "tools" => {
                self.list_tools(r).await;
            }
            _ => {
                self.list_named(r, method, field).await;
            }
        }
        known(self)
    }

    /// Whether this caller's names say it has listed (`what` of its tables).
    fn has_listed(&self, r: &Req<'_>, what: impl Fn(&Names) -> bool) -> bool {
        lock(&self.aggregates.names)
            .get(&r.identity.token_id)
            .is_some_and(what)
    }

    /// The server that listed `uri`; listing afresh when this caller has not listed it.
    async fn resource_server(&self, r: &Req<'_>, uri: &str) -> Option<String> {
        let known = |this: &Self| {
            lock(&this.aggregates.names)
                .get(&r.identity.token_id)
                .and_then(|n| n.resources.get(uri).cloned())
        };
        if let Some(s) = known(self) {
            return Some(s);
        }
        let servers = self.servers(r);
        if servers.len() == 1 {
            return servers.keys().next().map(|s| (*s).to_owned());
        }
        if self.has_listed(r, |n| !n.resources.is_empty()) {
            return None;
        }
        self.list_named(r, "resources/list", "resources").await;
        known(self)
    }

    /// Decide → forward → relay, for a `tools/call`.
    async fn call_tool(
        &self,
        r: &Req<'_>,
        call: Option<Arc<Call>>,
    ) -> Result<Response<Body>, Error> {
        let exposed = r.msg.param_str("name").unwrap_or_default().to_owned();
        let (server_name, tool) = self
            .resolve(r, &exposed, |n| &n.tools, "tools/list", "tools")
            .await
            .ok_or_else(|| Error::UnknownTool(exposed.clone()))?;
        let server = r
            .identity
            .workspace
            .servers
            .get(&server_name)
            .cloned()
            .ok_or_else(|| Error::UnknownTool(exposed.clone()))?;
        if let Some(call) = &call {
            call.target(&server_name, &tool);
        }
        let span = tracing::Span::current();
        span.record("server", server_name.as_str());
        span.record("tool", tool.as_str());
        let mut ctx = self.aggregated_context(r, &server, call);
        let arguments = r.msg.arguments_json();
        self.check_tool(&mut ctx, &server, &tool, &exposed, r.revision, r.meta())
            .await?;
        decide_call(&mut ctx, &tool, &arguments, &exposed)?;
        let relay = if ctx.chain.inspects_results() {
            Relay::InspectResult {
                tool: tool.clone(),
                arguments,
            }
        } else {
            Relay::Stream
        };
        self.send(r, &server, Some(&tool), relay, ctx, true).await
    }

    fn aggregated_context(
        &self,
        r: &Req<'_>,
        server: &ServerView,
        call: Option<Arc<Call>>,
    ) -> Context {
        let rpc_id = relay::gateway_id(&r.request_id, r.id().unwrap_or(&Value::Null));
        Context {
            chain: self.policies.chain(),
            identity: r.identity.clone(),
            server: server.name.clone(),
            request_id: r.request_id.clone(),
            rpc_id,
            client_id: r.id().cloned().unwrap_or(Value::Null),
            call,
            aggregated: true,
            flow: relay::Flow::of(&self.flows, r.flow_key.clone()),
            facts: None,
            catalog: self.catalog.clone(),
            limiter: self.limiter.clone(),
        }
    }

    /// The client's message, renamed to what `server` knows (`params.name`, when given), sent in
    /// the revision the server speaks, and its answer relayed.
    async fn send(
        &self,
        r: &Req<'_>,
        server: &ServerView,
        name: Option<&str>,
        relay: Relay,
        ctx: Context,
        tool_call: bool,
    ) -> Result<Response<Body>, Error> {
        let revision = self.aggregates.client.revision(server, r.revision).await;
        let mut body = Value::Object(r.msg.value.clone());
        if revision == Revision::Legacy {
            // A 2026-07-28 client's per-request metadata is the gateway's business, not a
            // session upstream's.
            if let Some(meta) = body
                .pointer_mut("/params/_meta")
                .and_then(Value::as_object_mut)
            {
                meta.retain(|k, _| !k.starts_with("io.modelcontextprotocol/"));
            }
        }
        if let Some(n) = name {
            body["params"]["name"] = json!(n);
        }
        // The upstream session is shared by every client of this token: ids must be the gateway's.
        body["id"] = ctx.rpc_id.clone();
        if let Some(call) = &ctx.call {
            call.upstream_started();
        }
        let resp = self
            .aggregates
            .client
            .send(&r.identity.token_id, server, &body, revision, r.headers)
            .await
            .inspect_err(|e| relay::log_upstream_failure(&ctx, e))?;
        relay::relay(
            &server.name,
            resp,
            relay,
            ctx,
            tool_call,
            self.limits.max_rewrite_bytes,
        )
        .await
    }

    /// A prompt, resource or completion request to the server that owns it, for members whose
    /// grants cover the whole server.
    async fn forward_to(
        &self,
        r: &Req<'_>,
        server_name: &str,
        name: Option<&str>,
    ) -> Result<Response<Body>, Error> {
        let server = r
            .identity
            .workspace
            .servers
            .get(server_name)
            .cloned()
            .ok_or_else(|| Error::UnknownServer(server_name.to_owned()))?;
        let ctx = self.aggregated_context(r, &server, None);
        decide_server_wide(&ctx, r.msg.method().unwrap_or_default())?;
        self.send(r, &server, name, Relay::Stream, ctx, false).await
    }

    /// `completion/complete` for a prompt: `params.ref.name` renamed.
    async fn forward_completion(
        &self,
        r: &Req<'_>,
        server_name: &str,
        prompt: &str,
    ) -> Result<Response<Body>, Error> {
        let mut msg = r.msg.clone();
        if let Some(reference) = msg
            .value
            .get_mut("params")
            .and_then(|p| p.get_mut("ref"))
            .and_then(Value::as_object_mut)
        {
            reference.insert("name".into(), json!(prompt));
        }
        let renamed = Req {
            identity: r.identity,
            msg: &msg,
            headers: r.headers,
            revision: r.revision,
            request_id: r.request_id.clone(),
            flow_key: r.flow_key.clone(),
        };
        self.forward_to(&renamed, server_name, None).await
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
            facts: None,
            client: None,
            labels: &[],
        };
        matches!(self.policies.chain().decide(&q), Verdict::Allow) || !identity.workspace.enforce
    }

    /// Sends the client's message (a notification-like request such as `logging/setLevel`) to
    /// every server; failures are logged.
    async fn broadcast(&self, r: &Req<'_>) {
        let servers = self.servers(r);
        futures_util::future::join_all(servers.values().map(|s| async {
            let revision = self.aggregates.client.revision(s, r.revision).await;
            let id = self.aggregates.client.next_id("fwd");
            let mut body = Value::Object(r.msg.value.clone());
            body["id"] = id.clone();
            let sent = self
                .aggregates
                .client
                .send(&r.identity.token_id, s, &body, revision, &HeaderMap::new())
                .await;
            let answer = match sent {
                Ok(resp) => self
                    .aggregates
                    .client
                    .read_answer(resp, &id, s)
                    .await
                    .map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = answer {
                tracing::warn!(server = %s.name, error = %e, "not forwarded");
            }
        }))
        .await;
    }

    /// A client's answer to a relayed server-to-client request goes back to its upstream.
    async fn relay_reply(&self, r: &Req<'_>) -> Result<Response<Body>, Error> {
        let id = r
            .id()
            .and_then(Value::as_str)
            .and_then(|s| s.strip_prefix(relay::RELAY_ID));
        let (server_name, original) = id
            .and_then(|s| s.split_once('~'))
            .ok_or(Error::StrayResponse)?;
        let (Some(server), Ok(original)) = (
            r.identity.workspace.servers.get(server_name).cloned(),
            serde_json::from_str::<Value>(original),
        ) else {
            return Err(Error::StrayResponse);
        };
        let mut body = Value::Object(r.msg.value.clone());
        body["id"] = original;
        let resp = self
            .aggregates
            .client
            .send(
                &r.identity.token_id,
                &server,
                &body,
                Revision::Legacy,
                &HeaderMap::new(),
            )
            .await?;
        let mut out = Response::new(full(bytes::Bytes::new()));
        *out.status_mut() = if resp.status().is_success() {
            StatusCode::ACCEPTED
        } else {
            resp.status()
        };
        Ok(out)
    }
}

impl Proxy {
    /// `subscriptions/listen` (2026-07-28): one stream of the opted-in change notifications of
    /// every server that speaks the revision, acknowledged by the gateway first and tagged with
    /// the client's subscription id.
    async fn listen_modern(&self, r: &Req<'_>) -> Result<Response<Body>, Error> {
        let id = r.id().cloned().unwrap_or(Value::Null);
        let filter = r
            .msg
            .value
            .get("params")
            .and_then(|p| p.get("notifications"))
            .cloned()
            .unwrap_or_else(|| json!({}));
        let ack = json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
            "params": {"_meta": {"io.modelcontextprotocol/subscriptionId": id}, "notifications": filter}});
        let mut streams = Vec::new();
        for server in self.servers(r).values() {
            if self.aggregates.client.revision(server, r.revision).await != Revision::Modern {
                continue;
            }
            let mut body = Value::Object(r.msg.value.clone());
            body["id"] = self.aggregates.client.next_id("listen");
            match self
                .aggregates
                .client
                .send(
                    &r.identity.token_id,
                    server,
                    &body,
                    Revision::Modern,
                    r.headers,
                )
                .await
            {
                Ok(resp) if upstream::is_event_stream(resp.headers()) => {
                    let id = id.clone();
                    streams.push(
                        sse::Rewrite::new(resp.into_body(), move |event: &sse::Event<'_>| {
                            retag(event, &id)
                        })
                        .boxed(),
                    );
                }
                Ok(resp) => {
                    tracing::warn!(server = %server.name, status = %resp.status(), "subscriptions/listen not streamed")
                }
                Err(e) => {
                    tracing::warn!(server = %server.name, error = %e, "subscriptions/listen failed")
                }
            }
        }
        Ok(event_stream(&ack, streams))
    }

    /// The GET stream of a 2025-11-25 session on `/mcp`: every server's stream for this token's
    /// upstream session, merged; server-to-client requests renamed so replies route back.
    async fn listen_legacy(&self, identity: &Arc<Identity>) -> Response<Body> {
        let mut streams = Vec::new();
        let mut servers: Vec<_> = identity.workspace.servers.values().cloned().collect();
        servers.sort_by(|a, b| a.name.cmp(&b.name));
        for server in servers {
            match self
                .aggregates
                .client
                .get_stream(&identity.token_id, &server)
                .await
            {
                Ok(resp) if upstream::is_event_stream(resp.headers()) => {
                    let name = server.name.clone();
                    streams.push(
                        sse::Rewrite::new(resp.into_body(), move |event: &sse::Event<'_>| {
                            let Some(mut value) = event
                                .data
                                .as_deref()
                                .and_then(|d| serde_json::from_str::<Value>(d).ok())
                                .filter(|v| v.get("method").is_some() && v.get("id").is_some())
                            else {
                                return sse::Step::PASS;
                            };
                            let id = value["id"].to_string();
                            value["id"] = json!(format!("{}{name}~{id}", relay::RELAY_ID));
                            sse::Step::replace(event.with_data(&value.to_string()))
                        })
                        .boxed(),
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(server = %server.name, error = %e, "no GET stream"),
            }
        }
        event_stream(&Value::Null, streams)
    }
}

/// A notification of an upstream's `subscriptions/listen` stream, for the client's: the
/// upstream's acknowledgment and final answer are the gateway's business; the rest carry the
/// client's subscription id.
fn retag(event: &sse::Event<'_>, id: &Value) -> sse::Step {
    let Some(mut value) = event
        .data
        .as_deref()
        .and_then(|d| serde_json::from_str::<Value>(d).ok())
    else {
        return sse::Step::PASS;
    };
    let method = value.get("method").and_then(Value::as_str).unwrap_or("");
    if method.is_empty() || method == "notifications/subscriptions/acknowledged" {
        return sse::Step::replace(bytes::Bytes::new());
    }
    if let Some(params) = value.get_mut("params").and_then(Value::as_object_mut) {
        let meta = params.entry("_meta").or_insert_with(|| json!({}));
        meta["io.modelcontextprotocol/subscriptionId"] = id.clone();
    }
    sse::Step::replace(event.with_data(&value.to_string()))
}

/// An SSE response: `first` (unless null), then the events of `streams` as they come.
fn event_stream(first: &Value, streams: Vec<Body>) -> Response<Body> {
    use futures_util::StreamExt as _;
    let head = (!first.is_null()).then(|| {
        Ok(http_body::Frame::data(bytes::Bytes::from(format!(
            "event: message\ndata: {first}\n\n"
        ))))
    });
    let merged =
        futures_util::stream::select_all(streams.into_iter().map(http_body_util::BodyStream::new));
    let all = futures_util::stream::iter(head).chain(merged);
    let mut resp = Response::new(BodyExt::boxed(http_body_util::StreamBody::new(all)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    resp
}

/// A list result: private (filtered per member), with the smallest upstream TTL.
fn list_result(mut result: Map<String, Value>, ttl: Option<u64>) -> Map<String, Value> {
    if let Some(t) = ttl {
        result.insert("ttlMs".into(), json!(t));
    }
    make_private(&mut result);
    result
}

fn capabilities() -> Value {
    // Change notifications of every upstream reach the client (subscriptions/listen, GET stream).
    json!({"tools": {"listChanged": true}, "prompts": {"listChanged": true},
           "resources": {"listChanged": true, "subscribe": true}, "completions": {}, "logging": {}})
}

fn discover_result() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("supportedVersions".into(), json!(request::SUPPORTED));
    m.insert("capabilities".into(), capabilities());
    m.insert("instructions".into(), json!(INSTRUCTIONS));
    // What this member sees depends on their grants: cache per user, and not for long.
    m.insert("ttlMs".into(), json!(60_000));
    m.insert("cacheScope".into(), json!("private"));
    m
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
        assert_eq!(exposed_name("db_", "query"), "db_query");
        assert_eq!(exposed_name("db_", "run_query"), "db_run_query");
        assert_eq!(exposed_name("", "run_query"), "run_query");
        assert_eq!(
            exposed_name("x.", "q"),
            format!("x-q-{}", hex::encode(&Sha256::digest(b"q")[..4]))
        );
        for (prefix, tool) in [
            ("db_", "fs.read"),
            ("db_", "a/b c"),
            ("search_", &*"x".repeat(100)),
            ("s_", "ü"),
            ("", "ü".repeat(40).as_str()),
        ] {
            let e = exposed_name(prefix, tool);
            assert!(valid(&e), "{e}");
            assert!(e.starts_with(prefix), "{e}");
        }
        assert_ne!(exposed_name("db_", "a.b"), exposed_name("db_", "a-b"));
        assert_ne!(
            exposed_name("s_", &"x".repeat(100)),
            exposed_name("s_", &"x".repeat(101))
        );
    }
}

//! The gateway as an MCP client of its upstreams, for `/mcp`: it sends messages of its own
//! making (lists it fans out, calls it routes to the server that owns a name) and reads answers.
//!
//! Per server it speaks the client's revision where the server can: a 2026-07-28 request goes out
//! stateless (the client's `_meta` carries version and capabilities; `Mcp-Method`/`Mcp-Name`
//! set from the body) to a server whose `server/discover` lists 2026-07-28; anything else goes
//! through a 2025-11-25 session, one per token and server, opened on first use and re-opened
//! once when the upstream forgets it (404). Which revisions a server speaks is asked once and
//! remembered for [`DISCOVER_TTL`].

use super::{
    Error, MCP_METHOD, MCP_NAME, MCP_PROTOCOL_VERSION, MCP_SESSION_ID, Upstream, UpstreamResponse,
};
use crate::identity::ServerView;
use crate::mcp::sse;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The session revision.
pub const LEGACY: &str = "2025-11-25";
/// The stateless revision.
pub const MODERN: &str = "2026-07-28";
/// Time an upstream gets to finish an answer the gateway reads whole (lists, prompts, resources).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Pages of a paginated upstream list the gateway follows.
const MAX_PAGES: usize = 20;
/// How long what a server said of its revisions is believed.
pub const DISCOVER_TTL: Duration = Duration::from_secs(300);
/// Upstream sessions held in all (one per token and server).
const MAX_UPSTREAM_SESSIONS: usize = 100_000;

/// The revision a message is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revision {
    /// 2025-11-25 and earlier: through a session.
    Legacy,
    /// 2026-07-28: stateless.
    Modern,
}

/// A list fetched from one server: its items and the TTL it gave (2026-07-28).
pub struct Listed {
    /// Every page's items.
    pub items: Vec<Value>,
    /// The smallest `ttlMs` of its pages, when given.
    pub ttl_ms: Option<u64>,
}

/// The client side of `/mcp`.
pub struct Client {
    http: Upstream,
    /// (owner, server) → upstream session id (`None`: the upstream is stateless).
    sessions: Mutex<HashMap<(String, String), Option<String>>>,
    /// Server URL → (speaks 2026-07-28, when asked).
    revisions: Mutex<HashMap<String, (bool, Instant)>>,
    next_id: AtomicU64,
    max_answer: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A header value as 2026-07-28 writes it: plain when it is visible ASCII without edge spaces,
/// else `=?base64?…?=`.
fn header_value(text: &str) -> Option<HeaderValue> {
    let plain = !text.starts_with(' ')
        && !text.ends_with(' ')
        && !text.starts_with("=?base64?")
        && text.bytes().all(|b| (0x20..0x7f).contains(&b));
    if plain {
        return HeaderValue::from_str(text).ok();
    }
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::from("=?base64?");
    for chunk in text.as_bytes().chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out.push_str("?=");
    HeaderValue::from_str(&out).ok()
}

impl Client {
    /// A client over the gateway's HTTP upstream connection pool.
    pub fn new(http: Upstream, max_answer: usize) -> Client {
        Client {
            http,
            sessions: Mutex::new(HashMap::new()),
            revisions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            max_answer,
        }
    }

    /// A fresh id for a message of the gateway's own.
    pub fn next_id(&self, what: &str) -> Value {
        json!(format!(
            "mcpgw-{what}-{}",
            self.next_id.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// The revision to speak to `server` for a client speaking `client`.
    pub async fn revision(&self, server: &ServerView, client: Revision) -> Revision {
        if client == Revision::Legacy {
            return Revision::Legacy;
        }
        if let Some((modern, at)) = lock(&self.revisions).get(&server.url).copied()
            && at.elapsed() < DISCOVER_TTL
        {
            return if modern {
                Revision::Modern
            } else {
                Revision::Legacy
            };
        }
        let id = self.next_id("discover");
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "server/discover", "params": {
            "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                      "io.modelcontextprotocol/clientCapabilities": {}}}});
        let modern = match self.send_modern(server, &body, &HeaderMap::new()).await {
            Ok(resp) if resp.status().is_success() => self
                .read_answer(resp, &id, server)
                .await
                .ok()
                .and_then(|a| a.pointer("/result/supportedVersions").cloned())
                .and_then(|v| v.as_array().cloned())
                .is_some_and(|v| v.iter().any(|v| v == MODERN)),
            _ => false,
        };
        tracing::debug!(server = %server.name, modern, "upstream revision");
        lock(&self.revisions).insert(server.url.clone(), (modern, Instant::now()));
        if modern {
            Revision::Modern
        } else {
            Revision::Legacy
        }
    }

    /// Sends `body` to `server` in `revision`: stateless, or in `owner`'s session (opened, or
    /// re-opened once when the upstream says 404, as needed). `client_headers`: the client's
    /// headers that travel with its message (`Mcp-Param-*`).
    pub async fn send(
        &self,
        owner: &str,
        server: &ServerView,
        body: &Value,
        revision: Revision,
        client_headers: &HeaderMap,
    ) -> Result<UpstreamResponse, Error> {
        if revision == Revision::Modern {
            return self.send_modern(server, body, client_headers).await;
        }
        let key = (owner.to_owned(), server.name.clone());
        for attempt in 0..2 {
            let session = self.session(&key, server).await?;
            let resp = self
                .http
                .forward(
                    server,
                    Method::POST,
                    &legacy_headers(session.as_deref()),
                    Bytes::from(body.to_string()),
                )
                .await?;
            if resp.status() == StatusCode::NOT_FOUND && session.is_some() && attempt == 0 {
                lock(&self.sessions).remove(&key);
                continue;
            }
            return Ok(resp);
        }
        Err(Error::Session {
            server: server.name.clone(),
            reason: "the upstream keeps losing its session".into(),
        })
    }

    /// The GET stream of `owner`'s session with `server` (2025-11-25), opening the session if
    /// needed.
    pub async fn get_stream(
        &self,
        owner: &str,
        server: &ServerView,
    ) -> Result<UpstreamResponse, Error> {
        let key = (owner.to_owned(), server.name.clone());
        let session = self.session(&key, server).await?;
        let mut headers = legacy_headers(session.as_deref());
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        self.http
            .forward(server, Method::GET, &headers, Bytes::new())
            .await
    }

    async fn send_modern(
        &self,
        server: &ServerView,
        body: &Value,
        client_headers: &HeaderMap,
    ) -> Result<UpstreamResponse, Error> {
        let mut h = headers(MODERN);
        let method = body.get("method").and_then(Value::as_str).unwrap_or("");
        if let Some(v) = header_value(method) {
            h.insert(MCP_METHOD.clone(), v);
        }
        let name = match method {
            "tools/call" | "prompts/get" => body.pointer("/params/name"),
            "resources/read" => body.pointer("/params/uri"),
            _ => None,
        };
        if let Some(v) = name.and_then(Value::as_str).and_then(header_value) {
            h.insert(MCP_NAME.clone(), v);
        }
        for (k, v) in client_headers {
            if k.as_str().starts_with("mcp-param-") {
                h.append(k.clone(), v.clone());
            }
        }
        self.http
            .forward(server, Method::POST, &h, Bytes::from(body.to_string()))
            .await
    }

    /// `key`'s session with `server`, opened if there is none. Past the bound every session is
    /// forgotten (each is re-opened on its next use; an upstream ends forgotten ones by itself).
    async fn session(
        &self,
        key: &(String, String),
        server: &ServerView,
    ) -> Result<Option<String>, Error> {
        if let Some(s) = lock(&self.sessions).get(key) {
            return Ok(s.clone());
        }
        let s = self.open(server).await?;
        let mut sessions = lock(&self.sessions);
        if sessions.len() >= MAX_UPSTREAM_SESSIONS {
            sessions.clear();
        }
        sessions.insert(key.clone(), s.clone());
        Ok(s)
    }

    async fn open(&self, server: &ServerView) -> Result<Option<String>, Error> {
        let session_error = |reason: String| Error::Session {
            server: server.name.clone(),
            reason,
        };
        let id = json!("mcpgw-init");
        let init = json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
            "protocolVersion": LEGACY, "capabilities": {"sampling": {}, "elicitation": {}, "roots": {}},
            "clientInfo": {"name": "mcpgw", "version": env!("CARGO_PKG_VERSION")}}});
        let resp = self
            .http
            .forward(
                server,
                Method::POST,
                &legacy_headers(None),
                Bytes::from(init.to_string()),
            )
            .await?;
        if !resp.status().is_success() {
            return Err(session_error(format!(
                "initialize refused ({})",
                resp.status()
            )));
        }
        let session = resp
            .headers()
            .get(&MCP_SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let answer = self.read_answer(resp, &id, server).await?;
        if let Some(e) = answer.get("error") {
            return Err(session_error(format!("initialize refused: {e}")));
        }
        let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        self.http
            .forward(
                server,
                Method::POST,
                &legacy_headers(session.as_deref()),
                Bytes::from(done.to_string()),
            )
            .await?;
        Ok(session)
    }

    /// The JSON-RPC response with `id` from a JSON or SSE answer (bounded in size and time).
    pub async fn read_answer(
        &self,
        resp: UpstreamResponse,
        id: &Value,
        server: &ServerView,
    ) -> Result<Value, Error> {
        let answer_error = |reason: String| Error::Answer {
            server: server.name.clone(),
            reason,
        };
        let sse = super::is_event_stream(resp.headers());
        let collect = Limited::new(resp.into_body(), self.max_answer).collect();
        let bytes = tokio::time::timeout(ANSWER_TIMEOUT, collect)
            .await
            .map_err(|_| answer_error(format!("not complete within {ANSWER_TIMEOUT:?}")))?
            .map_err(|e| answer_error(format!("unreadable: {e}")))?
            .to_bytes();
        if !sse {
            return serde_json::from_slice(&bytes)
                .map_err(|e| answer_error(format!("not JSON: {e}")));
        }
        sse::events(&bytes)
            .filter_map(|e| serde_json::from_str::<Value>(e.data.as_deref()?).ok())
            .find(|v| v.get("id") == Some(id) && v.get("method").is_none())
            .ok_or_else(|| answer_error("the stream ended without an answer".into()))
    }

    /// Every page of `method` (a `*/list`) from one server; `field` names the items, `meta` is
    /// the `_meta` a 2026-07-28 request carries.
    pub async fn list(
        &self,
        owner: &str,
        server: &ServerView,
        method: &str,
        field: &str,
        revision: Revision,
        meta: Option<&Value>,
    ) -> Result<Listed, Error> {
        let mut listed = Listed {
            items: Vec::new(),
            ttl_ms: None,
        };
        let mut cursor: Option<Value> = None;
        for _ in 0..MAX_PAGES {
            let id = self.next_id("list");
            let mut req = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {}});
            if let Some(c) = &cursor {
                req["params"]["cursor"] = c.clone();
            }
            if let (Revision::Modern, Some(meta)) = (revision, meta) {
                req["params"]["_meta"] = meta.clone();
            }
            let resp = self
                .send(owner, server, &req, revision, &HeaderMap::new())
                .await?;
            let answer = self.read_answer(resp, &id, server).await?;
            if let Some(e) = answer.get("error") {
                // A server without prompts or resources says method-not-found: nothing to list.
                if e.get("code").and_then(Value::as_i64) == Some(-32601) {
                    return Ok(listed);
                }
                return Err(Error::Answer {
                    server: server.name.clone(),
                    reason: format!("{method} failed: {e}"),
                });
            }
            if let Some(list) = answer
                .pointer(&format!("/result/{field}"))
                .and_then(Value::as_array)
            {
                listed.items.extend(list.iter().cloned());
            }
            if let Some(ttl) = answer.pointer("/result/ttlMs").and_then(Value::as_u64) {
                listed.ttl_ms = Some(listed.ttl_ms.map_or(ttl, |t| t.min(ttl)));
            }
            match answer.pointer("/result/nextCursor") {
                Some(c) if !c.is_null() => cursor = Some(c.clone()),
                _ => break,
            }
        }
        Ok(listed)
    }
}

/// The headers of a POST the gateway makes in `version`.
fn headers(version: &'static str) -> HeaderMap {
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
        MCP_PROTOCOL_VERSION.clone(),
        HeaderValue::from_static(version),
    );
    h
}

/// The headers of a POST in a 2025-11-25 session.
fn legacy_headers(session: Option<&str>) -> HeaderMap {
    let mut h = headers(LEGACY);
    if let Some(s) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
        h.insert(MCP_SESSION_ID.clone(), s);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_plain_or_base64() {
        assert_eq!(header_value("tools/call").unwrap(), "tools/call");
        assert_eq!(
            header_value("Hello, 世界").unwrap(),
            "=?base64?SGVsbG8sIOS4lueVjA==?="
        );
        assert_eq!(header_value(" padded ").unwrap(), "=?base64?IHBhZGRlZCA=?=");
        assert_eq!(
            header_value("=?base64?literal?=").unwrap(),
            "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="
        );
    }
}

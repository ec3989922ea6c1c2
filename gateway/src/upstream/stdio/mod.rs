//! stdio upstreams: MCP servers the gateway runs as local processes (`npx …`, `uvx …`, a binary)
//! and reaches over their stdin/stdout.
//!
//! To the rest of the gateway a stdio server looks exactly like a Streamable HTTP server:
//! [`Stdio::forward`] takes the same (method, headers, body) and answers an HTTP response, so the
//! relay, the policy chain, the audit and the aggregated endpoint serve it unchanged.
//!
//! **Process model.** One process per (workspace, server), shared by every member, started on
//! first use and `initialize`d once (2025-11-25, declaring roots, sampling and elicitation).
//! Per-client state lives in the gateway, not in the process: each 2025-11-25 client gets a
//! session of the gateway's (`Mcp-Session-Id`, its capabilities, its subscriptions, its GET
//! stream); a 2026-07-28 client is stateless. Every request is re-numbered with an id of the
//! gateway's (and its progress token with one of the gateway's), so answers and progress go back
//! to the request that caused them. A question of the process (`sampling/createMessage`,
//! `elicitation/create`, `roots/list`) goes to the newest request in flight whose client
//! declared the capability — as an SSE event for a 2025-11-25 client, as an `input_required`
//! result for a 2026-07-28 client, whose retry (`requestState`, `inputResponses`) answers the
//! process and resumes the same call — else to a session's GET stream, else it is refused.
//! Log messages of the process go to the gateway's log (they cannot be attributed to one member).
//! See docs/architecture.md for the reasoning and the bounds ([`limits`]).

mod body;
mod process;

pub use body::StdioBody;

use super::{Error, UpstreamResponse};
use crate::identity::ServerView;
use crate::store::StdioSpec;
use crate::upstream::fence::FenceReport;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use process::Child;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The session revision (what the process is spoken to in).
pub const LEGACY: &str = "2025-11-25";
/// The stateless revision.
pub const MODERN: &str = "2026-07-28";
/// Revisions a 2025-11-25-style client may ask for in `initialize`.
const SESSION_REVISIONS: [&str; 4] = [LEGACY, "2025-06-18", "2025-03-26", "2024-11-05"];

/// The bounds of the stdio layer.
pub mod limits {
    use std::time::Duration;
    /// Requests in flight to one process.
    pub const MAX_IN_FLIGHT: usize = 1024;
    /// Messages queued for one process's stdin.
    pub const STDIN_QUEUE: usize = 1024;
    /// Messages queued for one request's response stream (notifications past it are dropped).
    pub const EVENTS_PER_REQUEST: usize = 64;
    /// Messages queued for one session's GET stream (past it they are dropped).
    pub const SESSION_STREAM: usize = 256;
    /// One line (one message) from a process; longer ends the process.
    pub const MAX_LINE: usize = 8 << 20;
    /// One stderr line logged (longer lines are cut).
    pub const STDERR_LINE: usize = 4 << 10;
    /// 2025-11-25 client sessions per server (the least recently used goes first).
    pub const MAX_SESSIONS: usize = 10_000;
    /// `input_required` results awaiting their retry, per server.
    pub const MAX_RESUMES: usize = 10_000;
    /// How long an `input_required` result can be retried.
    pub const RESUME_TTL: Duration = Duration::from_secs(300);
    /// Time a process gets to start and answer `initialize` (`npx` may download first).
    pub const START_TIMEOUT: Duration = Duration::from_secs(60);
    /// Time a process gets to exit after its stdin closes, before its group is killed.
    pub const STOP_GRACE: Duration = Duration::from_secs(2);
    /// Consecutive crashes after which restarts wait for the next use.
    pub const EAGER_RESTARTS: u32 = 5;
    /// The longest wait before a restart.
    pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
    /// A process that ran this long before crashing starts a fresh backoff.
    pub const STABLE_AFTER: Duration = Duration::from_secs(60);
    /// A 2025-11-25 session without an open GET stream unused this long is forgotten.
    pub const SESSION_IDLE: Duration = Duration::from_secs(3600);
    /// A subscribed resource URI.
    pub const MAX_URI: usize = 2048;
}

/// Settings of the stdio layer.
#[derive(Debug, Clone)]
pub struct StdioSettings {
    /// Under it each server gets its home directory: `<home_root>/<workspace>/<server>`.
    pub home_root: PathBuf,
    /// A process without requests, streams or sessions in use this long is stopped.
    pub idle_timeout: Duration,
    /// Time to the first message of an answer before the response turns into an SSE stream.
    pub response_timeout: Duration,
}

impl Default for StdioSettings {
    fn default() -> Self {
        StdioSettings {
            home_root: std::env::temp_dir().join("mcpgw-stdio"),
            idle_timeout: Duration::from_secs(600),
            response_timeout: Duration::from_secs(30),
        }
    }
}

/// What `mcpgw server status` shows of one stdio server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessStatus {
    /// Workspace.
    pub workspace: String,
    /// Server name.
    pub server: String,
    /// `running`, `stopped`, `restarting` (waiting out a backoff) or `failed` (waits for use).
    pub state: String,
    /// The running process's pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Seconds it has been running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_s: Option<u64>,
    /// When it was started (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<i64>,
    /// The revision it answered `initialize` with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// Times it was restarted after a crash.
    pub restarts: u64,
    /// How the last process ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// Requests in flight.
    pub in_flight: usize,
    /// 2025-11-25 client sessions the gateway holds for it.
    pub sessions: usize,
    /// The fence of the running (or last) process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<FenceReport>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A 128-bit random identifier in hex.
fn random_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Never a predictable id: fall back to the clock and a counter mixed by SHA-256.
        use sha2::Digest as _;
        static N: AtomicU64 = AtomicU64::new(0);
        let seed = format!(
            "{:?}{}",
            std::time::SystemTime::now(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        bytes.copy_from_slice(&sha2::Sha256::digest(seed.as_bytes())[..16]);
    }
    hex::encode(bytes)
}

/// The stdio servers of the gateway, each with its process.
pub struct Stdio {
    settings: StdioSettings,
    servers: Mutex<HashMap<String, Arc<Server>>>,
    janitor: std::sync::Once,
    closed: AtomicBool,
}

impl Stdio {
    /// A layer with these settings; nothing runs until a server is used.
    pub fn new(settings: StdioSettings) -> Arc<Stdio> {
        Arc::new(Stdio {
            settings,
            servers: Mutex::new(HashMap::new()),
            janitor: std::sync::Once::new(),
            closed: AtomicBool::new(false),
        })
    }

    fn server(self: &Arc<Self>, view: &ServerView, spec: &StdioSpec) -> Result<Arc<Server>, Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Process {
                server: view.name.clone(),
                reason: "the gateway is shutting down".into(),
            });
        }
        self.janitor.call_once(|| {
            tokio::spawn(janitor(Arc::downgrade(self)));
        });
        let key = format!("{}/{}", view.workspace, view.name);
        let mut servers = lock(&self.servers);
        // Checked again under the lock `shutdown` drains: no server is added after it.
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Process {
                server: view.name.clone(),
                reason: "the gateway is shutting down".into(),
            });
        }
        if let Some(s) = servers.get(&key) {
            if s.spec == *spec {
                return Ok(s.clone());
            }
            // The spec changed (removed and re-added, or edited): the old process goes.
            let old = s.clone();
            tokio::spawn(async move { old.stop().await });
        }
        let server = Arc::new(Server {
            key: key.clone(),
            workspace: view.workspace.clone(),
            name: view.name.clone(),
            spec: spec.clone(),
            home: self
                .settings
                .home_root
                .join(&view.workspace)
                .join(&view.name),
            response_timeout: self.settings.response_timeout,
            state: Mutex::new(State::default()),
            starting: tokio::sync::Mutex::new(()),
            sessions: Mutex::new(HashMap::new()),
            resumes: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
            last_used: Mutex::new(Instant::now()),
        });
        servers.insert(key, server.clone());
        Ok(server)
    }

    /// Handles one HTTP exchange with stdio server `view` as if it were a Streamable HTTP
    /// server.
    pub async fn forward(
        self: &Arc<Self>,
        view: &ServerView,
        spec: &StdioSpec,
        method: Method,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<UpstreamResponse, Error> {
        let server = self.server(view, spec)?;
        *lock(&server.last_used) = Instant::now();
        match method {
            Method::POST => server.post(headers, &body).await,
            Method::GET => Ok(server.get(headers)),
            Method::DELETE => Ok(server.delete(headers)),
            _ => Ok(plain(StatusCode::METHOD_NOT_ALLOWED)),
        }
    }

    /// Every stdio server of `workspace` the gateway has used, with its process.
    pub fn status(&self, workspace: &str) -> Vec<ProcessStatus> {
        let servers: Vec<Arc<Server>> = lock(&self.servers)
            .values()
            .filter(|s| s.workspace == workspace)
            .cloned()
            .collect();
        let mut out: Vec<ProcessStatus> = servers.iter().map(|s| s.status()).collect();
        out.sort_by(|a, b| a.server.cmp(&b.server));
        out
    }

    /// Stops every process (stdin closed, then the group killed) and refuses new work.
    pub async fn shutdown(&self) {
        let servers: Vec<Arc<Server>> = {
            let mut servers = lock(&self.servers);
            self.closed.store(true, Ordering::Release);
            servers.drain().map(|(_, s)| s).collect()
        };
        futures_util::future::join_all(servers.iter().map(|s| s.stop())).await;
    }
}

/// Stops idle processes and forgets expired `input_required` states.
async fn janitor(stdio: std::sync::Weak<Stdio>) {
    let mut tick = tokio::time::interval(Duration::from_secs(15));
    loop {
        tick.tick().await;
        let Some(stdio) = stdio.upgrade() else { return };
        let servers: Vec<Arc<Server>> = lock(&stdio.servers).values().cloned().collect();
        for server in servers {
            server.sweep_resumes();
            server.sweep_questions();
            server.sweep_sessions();
            if server.idle(stdio.settings.idle_timeout) {
                tracing::info!(server = %server.key, "stdio server idle; stopping it");
                server.stop_child().await;
            }
        }
    }
}

/// The lifecycle of one server's process.
#[derive(Default)]
struct State {
    child: Option<Arc<Child>>,
    /// Restarts after a crash.
    restarts: u64,
    /// Crashes in a row.
    crashes: u32,
    last_exit: Option<String>,
    last_fence: Option<FenceReport>,
    /// No start before this (a backoff after a crash).
    retry_at: Option<Instant>,
    stopped: bool,
}

/// A 2025-11-25 client's session with a stdio server, held by the gateway.
pub(crate) struct Session {
    capabilities: Value,
    stream: Mutex<Option<mpsc::Sender<Value>>>,
    subscriptions: Mutex<HashSet<String>>,
    last_used: Mutex<Instant>,
}

/// A request sent to the process, awaiting its answer.
pub(super) struct Pending {
    tx: mpsc::Sender<Value>,
    /// The client's capabilities.
    capabilities: Value,
    /// The 2025-11-25 session it came in (for `notifications/cancelled`).
    session: Option<Arc<Session>>,
    /// The id the client gave it.
    client_id: Value,
    /// Order of arrival (questions go to the newest).
    seq: u64,
    /// The progress token the gateway gave it.
    progress: Option<String>,
    /// Waiting for the retry of an `input_required` result: no new question goes to it.
    parked: bool,
}

impl Pending {
    fn internal(tx: mpsc::Sender<Value>) -> Pending {
        Pending {
            tx,
            capabilities: Value::Null,
            session: None,
            client_id: Value::Null,
            seq: 0,
            progress: None,
            parked: false,
        }
    }
}

/// An `input_required` result awaiting its retry: the process is still working on the call,
/// blocked on the questions it asked.
struct Resume {
    child: Arc<Child>,
    rx: mpsc::Receiver<Value>,
    guard: PendingGuard,
    /// The gateway's ids of the questions → the process's ids.
    asked: Vec<(String, Value)>,
    method: String,
    name: Option<String>,
    expires: Instant,
}

/// Cancels a request at the process when its client goes away before the answer.
pub(super) struct PendingGuard {
    child: Option<Arc<Child>>,
    id: u64,
}

impl PendingGuard {
    fn disarm(&mut self) {
        self.child = None;
    }

    fn take(&mut self) -> PendingGuard {
        PendingGuard {
            child: self.child.take(),
            id: self.id,
        }
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let Some(child) = self.child.take() else {
            return;
        };
        let pending = child.routes().pending.remove(&self.id);
        if let Some(p) = pending {
            if let Some(t) = &p.progress {
                child.routes().progress.remove(t);
            }
            let _ = child.send(
                &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": self.id, "reason": "the client went away"}}),
            );
        }
    }
}

/// What turns the process's messages for one request into the client's.
pub(super) struct Answering {
    server: Arc<Server>,
    child: Arc<Child>,
    client_id: Value,
    modern: bool,
    method: String,
    name: Option<String>,
}

/// What one message of the process becomes for the client.
pub(super) enum Translated {
    /// A message on the way (progress, a question).
    Event(Value),
    /// The last message: the answer.
    Last(Value),
    /// Nothing for the client (a question it cannot be asked was refused).
    Skip,
}

/// The methods a 2026-07-28 server may answer with `input_required`.
const MRTR_METHODS: [&str; 3] = ["tools/call", "prompts/get", "resources/read"];

impl Answering {
    /// `message` as the client sees it.
    fn translate(
        &self,
        mut message: Value,
        rx: &mut mpsc::Receiver<Value>,
        guard: &mut PendingGuard,
    ) -> Translated {
        let is_answer = message.get("method").is_none();
        if is_answer {
            message["id"] = self.client_id.clone();
            if self.modern
                && let Some(result) = message.get_mut("result").and_then(Value::as_object_mut)
            {
                result
                    .entry("resultType")
                    .or_insert_with(|| json!("complete"));
                // What this gateway serves of a shared process is not for caches to share.
                if self.method.ends_with("/list") {
                    result.entry("ttlMs").or_insert_with(|| json!(0));
                    result
                        .entry("cacheScope")
                        .or_insert_with(|| json!("private"));
                }
            }
            return Translated::Last(message);
        }
        if self.modern && message.get("id").is_some() {
            if !MRTR_METHODS.contains(&self.method.as_str()) {
                // 2026-07-28 allows input_required only on these: the process is told no.
                self.refuse_question(&message, "the client cannot be asked during this request");
                return Translated::Skip;
            }
            // 2026-07-28 has no server-to-client requests: the question becomes an
            // input_required result, and the process keeps waiting for the retry.
            let (_, dummy) = mpsc::channel(1);
            let rx = std::mem::replace(rx, dummy);
            return Translated::Last(self.input_required(message, rx, guard.take()));
        }
        Translated::Event(message)
    }

    /// Answers a question of the process routed to this request with an error.
    fn refuse_question(&self, question: &Value, why: &str) {
        let child_id = question
            .get("id")
            .and_then(Value::as_str)
            .and_then(|id| self.child.routes().asked.remove(id));
        if let Some((child_id, _)) = child_id {
            self.child
                .send_answer(&json!({"jsonrpc": "2.0", "id": child_id,
                "error": {"code": -32603, "message": why}}));
        }
    }

    fn input_required(
        &self,
        question: Value,
        rx: mpsc::Receiver<Value>,
        guard: PendingGuard,
    ) -> Value {
        // One question per round: anything the process sends after it (another question, the
        // answer) stays queued and is read when the retry resumes the call.
        let mut asked = Vec::new();
        let mut requests = Map::new();
        if let Some(id) = question.get("id").and_then(Value::as_str) {
            let child_id = self.child.routes().asked.remove(id);
            if let Some((child_id, _)) = child_id {
                asked.push((id.to_owned(), child_id));
                let mut r = json!({"method": question["method"]});
                if let Some(p) = question.get("params") {
                    r["params"] = p.clone();
                }
                requests.insert(id.to_owned(), r);
            }
        }
        if let Some(p) = self.child.routes().pending.get_mut(&guard.id) {
            p.parked = true;
        }
        let state = random_id();
        let resume = Resume {
            child: self.child.clone(),
            rx,
            guard,
            asked,
            method: self.method.clone(),
            name: self.name.clone(),
            expires: Instant::now() + limits::RESUME_TTL,
        };
        {
            let mut resumes = lock(&self.server.resumes);
            if resumes.len() >= limits::MAX_RESUMES {
                // Refused rather than grown: the call fails, the process is told.
                drop(resumes);
                resume.abandon("too many unanswered questions");
                return self.failure("too many calls await input; try again later");
            }
            resumes.insert(state.clone(), resume);
        }
        json!({"jsonrpc": "2.0", "id": self.client_id, "result": {
            "resultType": "input_required", "inputRequests": requests, "requestState": state}})
    }

    /// An error answer for the client.
    fn failure(&self, why: &str) -> Value {
        json!({"jsonrpc": "2.0", "id": self.client_id, "error": {"code": -32603,
            "message": format!("upstream {}: {why}", self.server.name)}})
    }
}

impl Resume {
    /// Gives up: the process's questions are answered with an error (the call then ends on its
    /// own; the guard cancels it if not).
    fn abandon(self, why: &str) {
        for (_, child_id) in &self.asked {
            self.child.send_answer(&json!({"jsonrpc": "2.0", "id": child_id,
                "error": {"code": -32603, "message": format!("the client did not answer: {why}")}}));
        }
    }
}

/// One stdio server and its process.
pub(crate) struct Server {
    key: String,
    workspace: String,
    name: String,
    spec: StdioSpec,
    home: PathBuf,
    response_timeout: Duration,
    state: Mutex<State>,
    starting: tokio::sync::Mutex<()>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    resumes: Mutex<HashMap<String, Resume>>,
    seq: AtomicU64,
    last_used: Mutex<Instant>,
}

fn json_response(status: StatusCode, message: &Value, session: Option<&str>) -> UpstreamResponse {
    let mut resp = Response::new(super::UpstreamBody::Stdio(StdioBody::Full(Some(
        Bytes::from(message.to_string()),
    ))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(s) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
        resp.headers_mut().insert(super::MCP_SESSION_ID.clone(), s);
    }
    resp
}

fn sse_response(body: StdioBody) -> UpstreamResponse {
    let mut resp = Response::new(super::UpstreamBody::Stdio(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn plain(status: StatusCode) -> UpstreamResponse {
    let mut resp = Response::new(super::UpstreamBody::Stdio(StdioBody::Full(None)));
    *resp.status_mut() = status;
    resp
}

fn rpc_error(status: StatusCode, id: &Value, code: i64, message: &str) -> UpstreamResponse {
    json_response(
        status,
        &json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}),
        None,
    )
}

/// The capability a question of the process needs from the client.
fn capability_for(method: &str) -> Option<&'static str> {
    match method {
        "sampling/createMessage" => Some("sampling"),
        "elicitation/create" => Some("elicitation"),
        "roots/list" => Some("roots"),
        _ => None,
    }
}

/// The capabilities a question can need, as `{"sampling": {}, ...}` with only those declared.
fn capability_flags(declared: Option<&Value>) -> Value {
    let mut out = Map::new();
    for c in ["sampling", "elicitation", "roots"] {
        if declared
            .and_then(|d| d.get(c))
            .is_some_and(|v| !v.is_null())
        {
            out.insert(c.to_owned(), json!({}));
        }
    }
    Value::Object(out)
}

fn has_capability(capabilities: &Value, method: &str) -> bool {
    match capability_for(method) {
        Some(c) => capabilities.get(c).is_some_and(|v| !v.is_null()),
        None => true,
    }
}

impl Server {
    fn process_error(&self, reason: impl Into<String>) -> Error {
        Error::Process {
            server: self.name.clone(),
            reason: reason.into(),
        }
    }

    /// The running process, started if there is none (once at a time; not during a backoff).
    async fn child(self: &Arc<Self>) -> Result<Arc<Child>, Error> {
        if let Some(c) = lock(&self.state).child.clone().filter(|c| c.alive()) {
            return Ok(c);
        }
        let _starting = self.starting.lock().await;
        {
            let state = lock(&self.state);
            if let Some(c) = state.child.clone().filter(|c| c.alive()) {
                return Ok(c);
            }
            if state.stopped {
                return Err(self.process_error("the gateway is shutting down"));
            }
            if let Some(at) = state.retry_at
                && at > Instant::now()
            {
                let exit = state.last_exit.clone().unwrap_or_default();
                return Err(self.process_error(format!(
                    "exited ({exit}); restarting in {}s",
                    at.saturating_duration_since(Instant::now()).as_secs() + 1
                )));
            }
        }
        let child = process::start(self, &self.spec, self.home.clone()).await;
        let late = {
            let mut state = lock(&self.state);
            match child {
                // Stopped (shutdown, a changed spec) while it was starting: it goes too.
                Ok(c) if state.stopped => c,
                Ok(c) => {
                    state.last_fence = Some(c.fence.clone());
                    state.child = Some(c.clone());
                    state.retry_at = None;
                    return Ok(c);
                }
                Err(e) => {
                    state.crashes += 1;
                    state.last_exit = Some(e.to_string());
                    state.retry_at = Some(Instant::now() + backoff(state.crashes));
                    return Err(e);
                }
            }
        };
        late.stop().await;
        Err(self.process_error("the gateway is shutting down"))
    }

    /// A message from the process.
    fn on_message(self: &Arc<Self>, child: &Arc<Child>, mut message: Value) {
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let id = message.get("id").cloned();
        match (method, id) {
            (None, Some(id)) => {
                let Some(n) = id.as_u64() else {
                    tracing::debug!(server = %self.key, "answer with an id the gateway never gave; dropped");
                    return;
                };
                let pending = {
                    let mut routes = child.routes();
                    let p = routes.pending.remove(&n);
                    if let Some(t) = p.as_ref().and_then(|p| p.progress.as_ref()) {
                        routes.progress.remove(t);
                    }
                    p
                };
                if let Some(p) = pending {
                    deliver(&p.tx, message);
                }
            }
            (Some(method), Some(id)) => self.question(child, method, id, message),
            (Some(method), None) => self.notification(child, &method, &mut message),
            (None, None) => {}
        }
    }

    /// A request of the process to a client.
    fn question(
        self: &Arc<Self>,
        child: &Arc<Child>,
        method: String,
        id: Value,
        mut message: Value,
    ) {
        if method == "ping" {
            let _ = child.send(&json!({"jsonrpc": "2.0", "id": id, "result": {}}));
            return;
        }
        let gateway_id = format!("mcpgw-q-{}", random_id());
        message["id"] = json!(gateway_id);
        // The process is shared and stdio carries no link from a question to the request that
        // caused it: a question goes to a client only when that is unambiguous — every request
        // in flight that could answer it comes from one caller — so one member never sees
        // another's question (or answers it). Else the process gets an error.
        let target = {
            let mut routes = child.routes();
            let eligible: Vec<&Pending> = routes
                .pending
                .values()
                .filter(|p| p.seq > 0 && !p.parked && has_capability(&p.capabilities, &method))
                .collect();
            let newest = eligible.iter().max_by_key(|p| p.seq).copied();
            let one_caller = newest.is_some_and(|n| {
                eligible.len() == 1
                    || eligible.iter().all(|p| match (&p.session, &n.session) {
                        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                        _ => false,
                    })
            });
            let busy = !eligible.is_empty();
            let tx = if one_caller {
                newest.map(|p| p.tx.clone())
            } else {
                if busy {
                    tracing::warn!(server = %self.key, method = %method, in_flight = eligible.len(),
                        "a question of the server could come from several members' calls; refused");
                }
                None
            };
            if tx.is_some() {
                routes
                    .asked
                    .insert(gateway_id.clone(), (id.clone(), Instant::now()));
            }
            (tx, busy)
        };
        match target {
            (Some(tx), _) => {
                deliver(&tx, message);
                return;
            }
            (None, true) => {
                child.send_answer(&json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603,
                    "message": format!("the gateway cannot tell which client's call asked {method}")}}));
                return;
            }
            (None, false) => {}
        }
        // No call in flight: the one session with an open GET stream that can answer, if there
        // is exactly one.
        let streams: Vec<mpsc::Sender<Value>> = lock(&self.sessions)
            .values()
            .filter(|s| has_capability(&s.capabilities, &method))
            .filter_map(|s| lock(&s.stream).clone().filter(|tx| !tx.is_closed()))
            .collect();
        if let [tx] = streams.as_slice() {
            child
                .routes()
                .asked
                .insert(gateway_id.clone(), (id.clone(), Instant::now()));
            if tx.try_send(message).is_ok() {
                return;
            }
            child.routes().asked.remove(&gateway_id);
        }
        tracing::debug!(server = %self.key, method = %method, "no client can answer the server's request");
        child.send_answer(
            &json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601,
            "message": format!("no connected client can answer {method}")}}),
        );
    }

    /// A notification of the process.
    fn notification(&self, child: &Arc<Child>, method: &str, message: &mut Value) {
        match method {
            "notifications/progress" => {
                let token = message.pointer("/params/progressToken").cloned();
                let route = token
                    .as_ref()
                    .and_then(Value::as_str)
                    .and_then(|t| child.routes().progress.get(t).cloned());
                let Some((request, original)) = route else {
                    return;
                };
                message["params"]["progressToken"] = original;
                let tx = child.routes().pending.get(&request).map(|p| p.tx.clone());
                if let Some(tx) = tx {
                    // Progress is advisory: past the bound it is dropped, never awaited.
                    let _ = tx.try_send(message.take());
                }
            }
            "notifications/message" => {
                let level = message
                    .pointer("/params/level")
                    .and_then(Value::as_str)
                    .unwrap_or("info");
                let data = message.pointer("/params/data").cloned().unwrap_or_default();
                let data = data.to_string();
                let data = &data[..data.floor_char_boundary(limits::STDERR_LINE)];
                match level {
                    "debug" => {
                        tracing::debug!(target: "mcpgw::stdio::log", server = %self.key, "{data}")
                    }
                    "info" | "notice" => {
                        tracing::info!(target: "mcpgw::stdio::log", server = %self.key, "{data}")
                    }
                    "warning" => {
                        tracing::warn!(target: "mcpgw::stdio::log", server = %self.key, "{data}")
                    }
                    _ => tracing::error!(target: "mcpgw::stdio::log", server = %self.key, "{data}"),
                }
            }
            "notifications/resources/updated" => {
                let uri = message.pointer("/params/uri").and_then(Value::as_str);
                for s in lock(&self.sessions).values() {
                    if uri.is_some_and(|u| lock(&s.subscriptions).contains(u))
                        && let Some(tx) = lock(&s.stream).as_ref()
                    {
                        let _ = tx.try_send(message.clone());
                    }
                }
            }
            m if m.ends_with("/list_changed") => {
                for s in lock(&self.sessions).values() {
                    if let Some(tx) = lock(&s.stream).as_ref() {
                        let _ = tx.try_send(message.clone());
                    }
                }
            }
            _ => tracing::debug!(server = %self.key, method, "notification of the server dropped"),
        }
    }

    /// The process ended.
    fn on_exit(self: &Arc<Self>, child: &Arc<Child>, exit: &str) {
        // Every request in flight gets an error naming the server; nothing waits forever.
        let pending: Vec<Pending> = {
            let mut routes = child.routes();
            routes.progress.clear();
            routes.asked.clear();
            routes.pending.drain().map(|(_, p)| p).collect()
        };
        for p in pending {
            deliver(
                &p.tx,
                json!({"jsonrpc": "2.0", "id": 0, "error": {"code": -32603,
                    "message": format!("upstream {} exited ({exit})", self.name)}}),
            );
        }
        let restart_in = {
            let mut state = lock(&self.state);
            let current = state.child.as_ref().is_some_and(|c| Arc::ptr_eq(c, child));
            if current {
                state.child = None;
            }
            state.last_exit = Some(exit.to_owned());
            if child.stopping.load(Ordering::Acquire) || state.stopped || !current {
                None
            } else {
                if child.started.elapsed() >= limits::STABLE_AFTER {
                    state.crashes = 0;
                }
                state.crashes += 1;
                let delay = backoff(state.crashes);
                state.retry_at = Some(Instant::now() + delay);
                (state.crashes <= limits::EAGER_RESTARTS).then_some(delay)
            }
        };
        if let Some(delay) = restart_in {
            tracing::warn!(server = %self.key, delay_ms = delay.as_millis() as u64, "restarting stdio server after a crash");
            let server = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if lock(&server.state).stopped {
                    return;
                }
                match server.child().await {
                    Ok(_) => lock(&server.state).restarts += 1,
                    Err(e) => tracing::warn!(server = %server.key, error = %e, "restart failed"),
                }
            });
        }
    }

    fn status(&self) -> ProcessStatus {
        let state = lock(&self.state);
        let child = state.child.as_ref().filter(|c| c.alive());
        let phase = match (child, state.retry_at) {
            (Some(_), _) => "running",
            (None, Some(at)) if at > Instant::now() && state.crashes <= limits::EAGER_RESTARTS => {
                "restarting"
            }
            (None, Some(_)) if state.crashes > limits::EAGER_RESTARTS => "failed",
            _ => "stopped",
        };
        ProcessStatus {
            workspace: self.workspace.clone(),
            server: self.name.clone(),
            state: phase.into(),
            pid: child.map(|c| c.pid),
            uptime_s: child.map(|c| c.started.elapsed().as_secs()),
            started_ms: child.map(|c| c.started_ms),
            protocol_version: child
                .and_then(|c| c.init.get())
                .map(|i| i.protocol_version.clone()),
            restarts: state.restarts,
            last_exit: state.last_exit.clone(),
            in_flight: child.map_or(0, |c| {
                c.routes().pending.values().filter(|p| p.seq > 0).count()
            }),
            sessions: lock(&self.sessions).len(),
            fence: child
                .map(|c| c.fence.clone())
                .or_else(|| state.last_fence.clone()),
        }
    }

    fn idle(&self, after: Duration) -> bool {
        let Some(child) = lock(&self.state).child.clone() else {
            return false;
        };
        if lock(&self.last_used).elapsed() < after || !child.routes().pending.is_empty() {
            return false;
        }
        !lock(&self.sessions)
            .values()
            .any(|s| lock(&s.stream).as_ref().is_some_and(|tx| !tx.is_closed()))
    }

    /// Questions sent to a 2025-11-25 client that never answered: the process gets an error
    /// instead of waiting forever.
    fn sweep_questions(&self) {
        let Some(child) = lock(&self.state).child.clone() else {
            return;
        };
        let expired: Vec<Value> = {
            let mut routes = child.routes();
            let old: Vec<String> = routes
                .asked
                .iter()
                .filter(|(_, (_, at))| at.elapsed() >= limits::RESUME_TTL)
                .map(|(k, _)| k.clone())
                .collect();
            old.iter()
                .filter_map(|k| routes.asked.remove(k).map(|(id, _)| id))
                .collect()
        };
        for id in expired {
            child.send_answer(
                &json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603,
                "message": "the client did not answer in time"}}),
            );
        }
    }

    /// Sessions unused for an hour without an open GET stream are forgotten.
    fn sweep_sessions(&self) {
        lock(&self.sessions).retain(|_, s| {
            lock(&s.stream).as_ref().is_some_and(|tx| !tx.is_closed())
                || lock(&s.last_used).elapsed() < limits::SESSION_IDLE
        });
    }

    fn sweep_resumes(&self) {
        let now = Instant::now();
        let expired: Vec<Resume> = {
            let mut resumes = lock(&self.resumes);
            let keys: Vec<String> = resumes
                .iter()
                .filter(|(_, r)| r.expires <= now)
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| resumes.remove(k)).collect()
        };
        for r in expired {
            r.abandon("no retry within the time allowed");
        }
    }

    /// Stops the process (if any); the server can start again on next use.
    async fn stop_child(&self) {
        let child = lock(&self.state).child.take();
        if let Some(c) = child {
            c.stop().await;
        }
    }

    /// Stops the process for good.
    async fn stop(&self) {
        lock(&self.state).stopped = true;
        let resumes: Vec<Resume> = lock(&self.resumes).drain().map(|(_, r)| r).collect();
        drop(resumes);
        self.stop_child().await;
        // Session streams end.
        lock(&self.sessions).clear();
    }

    fn session(&self, headers: &HeaderMap) -> Result<Arc<Session>, Box<UpstreamResponse>> {
        let Some(id) = headers
            .get(&super::MCP_SESSION_ID)
            .and_then(|v| v.to_str().ok())
        else {
            return Err(Box::new(rpc_error(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                -32600,
                "Bad Request: Mcp-Session-Id header is required",
            )));
        };
        match lock(&self.sessions).get(id) {
            Some(s) => {
                *lock(&s.last_used) = Instant::now();
                Ok(s.clone())
            }
            None => Err(Box::new(rpc_error(
                StatusCode::NOT_FOUND,
                &Value::Null,
                -32001,
                "Session not found",
            ))),
        }
    }

    fn get(&self, headers: &HeaderMap) -> UpstreamResponse {
        if is_modern(headers, None) {
            return plain(StatusCode::METHOD_NOT_ALLOWED);
        }
        let session = match self.session(headers) {
            Ok(s) => s,
            Err(resp) => return *resp,
        };
        let (tx, rx) = mpsc::channel(limits::SESSION_STREAM);
        // One GET stream per session: a new one replaces (and ends) the old.
        *lock(&session.stream) = Some(tx);
        sse_response(StdioBody::Session(rx))
    }

    fn delete(&self, headers: &HeaderMap) -> UpstreamResponse {
        if is_modern(headers, None) {
            return plain(StatusCode::METHOD_NOT_ALLOWED);
        }
        let Some(id) = headers
            .get(&super::MCP_SESSION_ID)
            .and_then(|v| v.to_str().ok())
        else {
            return plain(StatusCode::BAD_REQUEST);
        };
        match lock(&self.sessions).remove(id) {
            Some(_) => plain(StatusCode::OK),
            None => plain(StatusCode::NOT_FOUND),
        }
    }

    async fn post(
        self: &Arc<Self>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<UpstreamResponse, Error> {
        let message: Value = match serde_json::from_slice(body) {
            Ok(Value::Object(m)) => Value::Object(m),
            Ok(_) => {
                return Ok(rpc_error(
                    StatusCode::BAD_REQUEST,
                    &Value::Null,
                    -32600,
                    "Invalid Request: one JSON-RPC message per POST",
                ));
            }
            Err(_) => {
                return Ok(rpc_error(
                    StatusCode::BAD_REQUEST,
                    &Value::Null,
                    -32700,
                    "Parse error",
                ));
            }
        };
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let id = message.get("id").cloned();
        let modern = is_modern(headers, Some(&message));
        match (method.as_deref(), id) {
            (Some("initialize"), Some(id)) if !modern => self.initialize(&message, id).await,
            (Some("server/discover"), Some(id)) => self.discover(id).await,
            // Tasks are not offered (see process.rs): one member's task is not another's.
            (Some(m), Some(id)) if m.starts_with("tasks/") => Ok(rpc_error(
                if modern {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::OK
                },
                &id,
                -32601,
                &format!("Method not found: {m}"),
            )),
            (
                Some(m @ ("initialize" | "ping" | "logging/setLevel" | "subscriptions/listen")),
                Some(id),
            ) if modern => Ok(rpc_error(
                StatusCode::NOT_FOUND,
                &id,
                -32601,
                &format!("Method not found: {m}"),
            )),
            (Some(_), Some(id)) if modern => self.request(message, id, None, true).await,
            (Some(method), id) => {
                let session = match self.session(headers) {
                    Ok(s) => s,
                    Err(resp) => return Ok(*resp),
                };
                match (method, id) {
                    ("ping", Some(id)) => Ok(json_response(
                        StatusCode::OK,
                        &json!({"jsonrpc": "2.0", "id": id, "result": {}}),
                        None,
                    )),
                    // The process is shared: its log level is not one client's to set. Its log
                    // goes to the gateway's log.
                    ("logging/setLevel", Some(id)) => Ok(json_response(
                        StatusCode::OK,
                        &json!({"jsonrpc": "2.0", "id": id, "result": {}}),
                        None,
                    )),
                    ("resources/unsubscribe", Some(id)) => {
                        if let Some(uri) = message.pointer("/params/uri").and_then(Value::as_str) {
                            lock(&session.subscriptions).remove(uri);
                        }
                        Ok(json_response(
                            StatusCode::OK,
                            &json!({"jsonrpc": "2.0", "id": id, "result": {}}),
                            None,
                        ))
                    }
                    ("resources/subscribe", Some(id)) => {
                        let uri = message
                            .pointer("/params/uri")
                            .and_then(Value::as_str)
                            .map(str::to_owned);
                        let resp = self
                            .request(message, id, Some(session.clone()), false)
                            .await?;
                        if let Some(uri) = uri.filter(|u| u.len() <= limits::MAX_URI) {
                            let mut subs = lock(&session.subscriptions);
                            if subs.len() < limits::SESSION_STREAM {
                                subs.insert(uri);
                            }
                        }
                        Ok(resp)
                    }
                    (_, Some(id)) => self.request(message, id, Some(session), false).await,
                    (method, None) => self.client_notification(method, &message, &session),
                }
            }
            (None, Some(id)) => Ok(self.client_answer(id, &message)),
            (None, None) => Ok(rpc_error(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                -32600,
                "Invalid Request",
            )),
        }
    }

    async fn initialize(
        self: &Arc<Self>,
        message: &Value,
        id: Value,
    ) -> Result<UpstreamResponse, Error> {
        let child = self.child().await?;
        let Some(init) = child.init.get() else {
            return Err(self.process_error("not initialized"));
        };
        let asked = message
            .pointer("/params/protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(LEGACY);
        let version = if SESSION_REVISIONS.contains(&asked) {
            asked
        } else {
            LEGACY
        };
        let session_id = random_id();
        let session = Arc::new(Session {
            // Only what routing needs is kept, not whatever else the client sent.
            capabilities: capability_flags(message.pointer("/params/capabilities")),
            stream: Mutex::new(None),
            subscriptions: Mutex::new(HashSet::new()),
            last_used: Mutex::new(Instant::now()),
        });
        {
            let mut sessions = lock(&self.sessions);
            if sessions.len() >= limits::MAX_SESSIONS {
                // The least recently used without an open GET stream goes first.
                let oldest = sessions
                    .iter()
                    .min_by_key(|(_, s)| {
                        let streaming = lock(&s.stream).as_ref().is_some_and(|tx| !tx.is_closed());
                        (streaming, *lock(&s.last_used))
                    })
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    sessions.remove(&k);
                }
            }
            sessions.insert(session_id.clone(), session);
        }
        let mut result = json!({"protocolVersion": version, "capabilities": init.capabilities,
            "serverInfo": init.server_info});
        if let Some(i) = &init.instructions {
            result["instructions"] = i.clone();
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Some(&session_id),
        ))
    }

    async fn discover(self: &Arc<Self>, id: Value) -> Result<UpstreamResponse, Error> {
        let child = self.child().await?;
        let Some(init) = child.init.get() else {
            return Err(self.process_error("not initialized"));
        };
        let mut result = json!({"resultType": "complete",
            "supportedVersions": [MODERN, LEGACY],
            "capabilities": init.capabilities,
            "_meta": {"io.modelcontextprotocol/serverInfo": init.server_info}});
        if let Some(i) = &init.instructions {
            result["instructions"] = i.clone();
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({"jsonrpc": "2.0", "id": id, "result": result}),
            None,
        ))
    }

    /// A client's answer to a question of the process.
    fn client_answer(&self, id: Value, message: &Value) -> UpstreamResponse {
        let child = lock(&self.state).child.clone();
        let child_id = id
            .as_str()
            .zip(child.as_ref())
            .and_then(|(id, c)| c.routes().asked.remove(id));
        if let (Some(child), Some((child_id, _))) = (child, child_id) {
            let mut answer = message.clone();
            answer["id"] = child_id;
            child.send_answer(&answer);
        }
        plain(StatusCode::ACCEPTED)
    }

    fn client_notification(
        &self,
        method: &str,
        message: &Value,
        session: &Arc<Session>,
    ) -> Result<UpstreamResponse, Error> {
        let child = lock(&self.state).child.clone().filter(|c| c.alive());
        match (method, child) {
            ("notifications/cancelled", Some(child)) => {
                let request = message.pointer("/params/requestId");
                let ours = child
                    .routes()
                    .pending
                    .iter()
                    .find(|(_, p)| {
                        Some(&p.client_id) == request
                            && p.session.as_ref().is_some_and(|s| Arc::ptr_eq(s, session))
                    })
                    .map(|(id, _)| *id);
                if let Some(ours) = ours {
                    let mut m = message.clone();
                    m["params"]["requestId"] = json!(ours);
                    let _ = child.send(&m);
                }
            }
            ("notifications/roots/list_changed", Some(child)) => {
                let _ = child.send(message);
            }
            _ => {}
        }
        Ok(plain(StatusCode::ACCEPTED))
    }

    /// A request for the process: re-numbered, sent, and answered as JSON or as an SSE stream.
    async fn request(
        self: &Arc<Self>,
        mut message: Value,
        client_id: Value,
        session: Option<Arc<Session>>,
        modern: bool,
    ) -> Result<UpstreamResponse, Error> {
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let name = message
            .pointer("/params/name")
            .or_else(|| message.pointer("/params/uri"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let mut capabilities = session
            .as_ref()
            .map_or(Value::Null, |s| s.capabilities.clone());
        if modern {
            if let Some(meta) = message
                .pointer_mut("/params/_meta")
                .and_then(Value::as_object_mut)
            {
                if let Some(c) = meta.remove("io.modelcontextprotocol/clientCapabilities") {
                    capabilities = capability_flags(Some(&c));
                }
                meta.retain(|k, _| !k.starts_with("io.modelcontextprotocol/"));
                if meta.is_empty()
                    && let Some(p) = message.get_mut("params").and_then(Value::as_object_mut)
                {
                    p.remove("_meta");
                }
            }
            if let Some(state) = message
                .pointer("/params/requestState")
                .and_then(Value::as_str)
                .map(str::to_owned)
            {
                return Ok(self
                    .resume(&state, &message, client_id, &method, name)
                    .await);
            }
        }
        let child = self.child().await?;
        let id = child.next_id();
        message["id"] = json!(id);
        let progress = message
            .pointer("/params/_meta/progressToken")
            .cloned()
            .map(|original| (format!("mcpgw-p-{id}"), original));
        if let Some((ours, _)) = &progress {
            message["params"]["_meta"]["progressToken"] = json!(ours);
        }
        let (tx, rx) = mpsc::channel(limits::EVENTS_PER_REQUEST);
        {
            let mut routes = child.routes();
            if routes.pending.len() >= limits::MAX_IN_FLIGHT {
                return Err(self.process_error(format!(
                    "{} requests already in flight; try again later",
                    limits::MAX_IN_FLIGHT
                )));
            }
            if let Some((ours, original)) = &progress {
                routes.progress.insert(ours.clone(), (id, original.clone()));
            }
            routes.pending.insert(
                id,
                Pending {
                    tx,
                    capabilities,
                    session,
                    client_id: client_id.clone(),
                    seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
                    progress: progress.map(|(ours, _)| ours),
                    parked: false,
                },
            );
        }
        let guard = PendingGuard {
            child: Some(child.clone()),
            id,
        };
        if let Err(e) = child.send(&message) {
            drop(guard);
            return Err(self.process_error(format!("request not sent: {e}")));
        }
        let answering = Answering {
            server: self.clone(),
            child,
            client_id,
            modern,
            method,
            name,
        };
        Ok(self.respond(rx, answering, guard).await)
    }

    /// Waits for the first message of an answer: the answer itself is sent as JSON; anything
    /// else (progress, a question) or a long wait turns the response into an SSE stream.
    async fn respond(
        &self,
        mut rx: mpsc::Receiver<Value>,
        answering: Answering,
        mut guard: PendingGuard,
    ) -> UpstreamResponse {
        let deadline = tokio::time::Instant::now() + self.response_timeout;
        loop {
            let m = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(m)) => m,
                Ok(None) => {
                    guard.disarm();
                    return json_response(
                        StatusCode::OK,
                        &answering.failure("the process ended without answering"),
                        None,
                    );
                }
                // A long call: its answer will come on a stream.
                Err(_) => {
                    return sse_response(StdioBody::Request(Box::new(body::RequestStream {
                        rx,
                        answering,
                        guard,
                        first: None,
                        done: false,
                    })));
                }
            };
            match answering.translate(m, &mut rx, &mut guard) {
                Translated::Skip => continue,
                Translated::Last(out) => {
                    guard.disarm();
                    return json_response(StatusCode::OK, &out, None);
                }
                Translated::Event(first) => {
                    return sse_response(StdioBody::Request(Box::new(body::RequestStream {
                        rx,
                        answering,
                        guard,
                        first: Some(first),
                        done: false,
                    })));
                }
            }
        }
    }

    /// The retry of a call that got `input_required`: the client's answers go to the process,
    /// and the same call continues. The state is spent before the first await.
    async fn resume(
        self: &Arc<Self>,
        state: &str,
        message: &Value,
        client_id: Value,
        method: &str,
        name: Option<String>,
    ) -> UpstreamResponse {
        // Spent on use: a requestState answers once.
        let resume = lock(&self.resumes).remove(state);
        let Some(resume) = resume.filter(|r| r.expires > Instant::now() && r.child.alive()) else {
            return rpc_error(
                StatusCode::OK,
                &client_id,
                -32602,
                "Invalid params: unknown, expired or already used requestState",
            );
        };
        if resume.method != method || resume.name != name {
            resume.abandon("the retry was a different request");
            return rpc_error(
                StatusCode::OK,
                &client_id,
                -32602,
                "Invalid params: requestState belongs to another request",
            );
        }
        let responses = message.pointer("/params/inputResponses");
        let Resume {
            child,
            rx,
            guard,
            asked,
            ..
        } = resume;
        if let Some(p) = child.routes().pending.get_mut(&guard.id) {
            p.parked = false;
        }
        for (ours, child_id) in &asked {
            let answer = match responses.and_then(|r| r.get(ours)) {
                Some(result) => json!({"jsonrpc": "2.0", "id": child_id, "result": result}),
                None => json!({"jsonrpc": "2.0", "id": child_id, "error": {"code": -32603,
                    "message": "the client did not answer"}}),
            };
            child.send_answer(&answer);
        }
        let answering = Answering {
            server: self.clone(),
            child,
            client_id,
            modern: true,
            method: method.to_owned(),
            name,
        };
        self.respond(rx, answering, guard).await
    }
}

/// Sends `message` to a request's stream; an answer is never dropped (it waits for room).
fn deliver(tx: &mpsc::Sender<Value>, message: Value) {
    match tx.try_send(message) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
        Err(mpsc::error::TrySendError::Full(message)) => {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(message).await;
            });
        }
    }
}

/// Whether a message is in the 2026-07-28 revision: its header says so, or its `_meta` does.
fn is_modern(headers: &HeaderMap, message: Option<&Value>) -> bool {
    if headers
        .get(&super::MCP_PROTOCOL_VERSION)
        .is_some_and(|v| v.as_bytes() == MODERN.as_bytes())
    {
        return true;
    }
    message
        .and_then(|m| m.pointer("/params/_meta/io.modelcontextprotocol~1protocolVersion"))
        .is_some()
}

/// The wait before restart number `crashes`: 1 s, 2 s, 4 s … up to 30 s.
fn backoff(crashes: u32) -> Duration {
    let secs = 1u64 << crashes.saturating_sub(1).min(5);
    Duration::from_secs(secs).min(limits::MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_thirty_seconds() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(6), Duration::from_secs(30));
        assert_eq!(backoff(60), Duration::from_secs(30));
    }

    #[test]
    fn revision_comes_from_header_or_meta() {
        let mut h = HeaderMap::new();
        assert!(!is_modern(&h, None));
        let m = json!({"params": {"_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}}});
        assert!(is_modern(&h, Some(&m)));
        h.insert(
            super::super::MCP_PROTOCOL_VERSION.clone(),
            HeaderValue::from_static(MODERN),
        );
        assert!(is_modern(&h, None));
    }

    #[tokio::test]
    async fn lines_are_bounded() {
        let input: &[u8] = b"short\nthis line is long\nend";
        let mut r = tokio::io::BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        assert!(matches!(
            process::read_line(&mut r, &mut buf, 8).await.unwrap(),
            process::Line::Complete
        ));
        assert_eq!(buf, b"short");
        buf.clear();
        assert!(matches!(
            process::read_line(&mut r, &mut buf, 8).await.unwrap(),
            process::Line::Truncated
        ));
        assert_eq!(buf, b"this lin");
        buf.clear();
        assert!(matches!(
            process::read_line(&mut r, &mut buf, 8).await.unwrap(),
            process::Line::Complete
        ));
        assert_eq!(buf, b"end");
        buf.clear();
        assert!(matches!(
            process::read_line(&mut r, &mut buf, 8).await.unwrap(),
            process::Line::Eof
        ));
    }
}

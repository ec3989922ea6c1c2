//! The audit trail: one record per `tools/call` (and per failed authentication), never a payload.
//!
//! A call reserves its record's place in a bounded queue before anything runs ([`Audit::begin_call`]),
//! so a full queue (a stalled or unreachable store) refuses new calls instead of letting one run
//! unrecorded; `when_full = "drop"` trades that for availability, counting every record dropped. The
//! reservation is a [`Call`] shared by the stages of the request: policy marks the decision,
//! the relay marks the answer, and the record is sent when the last holder lets go, which is when
//! the response body is finished or abandoned. A body dropped before its answer was sent is a
//! client cancel. One writer task drains the queue in batches ([`store::Appender`]), chaining each
//! workspace's records by hash.
//!
//! What a record holds is fixed here, and it is metadata only: names, decision, status, codes,
//! timings, ids. Arguments, results, tokens and denial reasons (a module may quote arguments in
//! them) never reach it.

pub mod store;

use crate::policy::Denial;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

pub use store::{Broken, ChainHead, Filter, Pruned, VerifyReport};

/// Hash before the first record of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Record kind of a tool call.
pub const KIND_CALL: &str = "tools/call";
/// Record kind of a failed authentication.
pub const KIND_AUTH: &str = "auth";
/// Record kind of an upstream tool whose definition changed since it was pinned.
pub const KIND_TOOL_CHANGED: &str = "tool-changed";
/// Record kind of an admin's approval of a changed tool definition.
pub const KIND_TOOL_APPROVED: &str = "tool-approved";

/// What policy concluded about a call, in rising order of severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Decision {
    /// Every phase allowed it.
    Allow,
    /// A module denied it, but the workspace does not enforce.
    WouldDeny,
    /// A module denied it and the call was refused.
    Deny,
    /// A module failed (trap, timeout, bad output): the call was refused when enforcing.
    Error,
}

impl Decision {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::WouldDeny => "would-deny",
            Decision::Deny => "deny",
            Decision::Error => "error",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Decision> {
        [
            Decision::Allow,
            Decision::WouldDeny,
            Decision::Deny,
            Decision::Error,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

/// Every decision, in [`Decision`] order.
pub const DECISIONS: [Decision; 4] = [
    Decision::Allow,
    Decision::WouldDeny,
    Decision::Deny,
    Decision::Error,
];

/// Every status, in [`Status`] order.
pub const STATUSES: [Status; 6] = [
    Status::Success,
    Status::ToolError,
    Status::Denied,
    Status::UpstreamError,
    Status::Timeout,
    Status::Cancelled,
];

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The tool answered with a result.
    Success,
    /// The tool answered with `isError: true`.
    ToolError,
    /// The gateway refused it (policy, or an unknown tool).
    Denied,
    /// The upstream failed: unreachable, a JSON-RPC error, a broken stream.
    UpstreamError,
    /// The upstream did not answer in time.
    Timeout,
    /// The client went away, or cancelled, before the answer.
    Cancelled,
}

impl Status {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::ToolError => "tool-error",
            Status::Denied => "denied",
            Status::UpstreamError => "upstream-error",
            Status::Timeout => "timeout",
            Status::Cancelled => "cancelled",
        }
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The header line of the CSV export (`mcpgw audit export --format csv`, the console).
pub const CSV_HEADER: &str = "id,workspace,seq,ts_ms,kind,member,token_id,server,tool,decision,module,module_digest,status,error_code,latency_us,upstream_latency_us,request_id,session_id,prev_hash,hash";

/// One record as a CSV line (RFC 4180 quoting), in [`CSV_HEADER`]'s order.
pub fn csv_line(r: &Record) -> String {
    let opt = |o: &Option<String>| o.as_deref().map(csv_field).unwrap_or_default();
    [
        r.id.to_string(),
        csv_field(&r.workspace),
        r.seq.to_string(),
        r.ts_ms.to_string(),
        csv_field(&r.kind),
        opt(&r.member),
        opt(&r.token_id),
        csv_field(&r.server),
        csv_field(&r.tool),
        csv_field(&r.decision),
        opt(&r.module),
        opt(&r.module_digest),
        csv_field(&r.status),
        opt(&r.error_code),
        r.latency_us.to_string(),
        r.upstream_latency_us
            .map(|v| v.to_string())
            .unwrap_or_default(),
        csv_field(&r.request_id),
        opt(&r.session_id),
        r.prev_hash.clone(),
        r.hash.clone(),
    ]
    .join(",")
}

/// One audit record, as stored and listed.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    /// Row id (assigned by the database; 0 before).
    pub id: i64,
    /// Workspace name; empty for a failed authentication.
    pub workspace: String,
    /// Position in the workspace's chain, from 1.
    pub seq: i64,
    /// Gateway receipt time, Unix ms (UTC).
    pub ts_ms: i64,
    /// [`KIND_CALL`] or [`KIND_AUTH`].
    pub kind: String,
    /// Member name; `None` for the workspace token and for failed authentication.
    pub member: Option<String>,
    /// Token id (`tok_…`), never the token.
    pub token_id: Option<String>,
    /// Server name.
    pub server: String,
    /// Tool name as the upstream knows it.
    pub tool: String,
    /// [`Decision`] spelling.
    pub decision: String,
    /// The deciding module, when the decision is not allow.
    pub module: Option<String>,
    /// Hex SHA-256 of the deciding module.
    pub module_digest: Option<String>,
    /// [`Status`] spelling.
    pub status: String,
    /// A policy denial's code, a JSON-RPC error code, or why authentication failed.
    pub error_code: Option<String>,
    /// Receipt to last byte sent, in microseconds.
    pub latency_us: i64,
    /// Request sent upstream to answer received, in microseconds.
    pub upstream_latency_us: Option<i64>,
    /// The gateway's request id (also in its logs).
    pub request_id: String,
    /// `Mcp-Session-Id`, when the client named one.
    pub session_id: Option<String>,
    /// Hash of the previous record of this chain ([`GENESIS`] for the first).
    pub prev_hash: String,
    /// SHA-256 of this record's canonical form.
    pub hash: String,
    /// For an identity-provider token: its subject (`sub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// For an identity-provider token: its issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The flow labels the call's policy applied to its session, sorted, comma-separated
    /// (names only, never content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<String>,
}

impl Record {
    /// The canonical form that is hashed: every field but `id` and `hash`, in a fixed order, as a
    /// JSON array. Changing it breaks every stored chain.
    pub fn canonical(&self) -> String {
        let head = (
            &self.workspace,
            self.seq,
            self.ts_ms,
            &self.kind,
            &self.member,
            &self.token_id,
            &self.server,
            &self.tool,
            &self.decision,
        );
        let tail = (
            &self.module,
            &self.module_digest,
            &self.status,
            &self.error_code,
            self.latency_us,
            self.upstream_latency_us,
            &self.request_id,
            &self.session_id,
            &self.prev_hash,
        );
        // Subject and issuer join the hashed form only when present, so records written before
        // they existed keep their hashes.
        // Labels, likewise, only when some were applied.
        match (&self.subject, &self.issuer, &self.labels) {
            (None, None, None) => serde_json::to_string(&(head, tail)).unwrap_or_default(),
            (_, _, None) => serde_json::to_string(&(head, tail, (&self.subject, &self.issuer)))
                .unwrap_or_default(),
            (_, _, Some(labels)) => {
                serde_json::to_string(&(head, tail, (&self.subject, &self.issuer), labels))
                    .unwrap_or_default()
            }
        }
    }

    /// SHA-256 (hex) of [`Record::canonical`].
    pub fn compute_hash(&self) -> String {
        // Into a buffer: `hex::encode` collects chars one by one, as long as the digest itself.
        let mut hex = [0u8; 64];
        // 32 bytes always fit 64 hex digits.
        let _ = hex::encode_to_slice(Sha256::digest(self.canonical().as_bytes()), &mut hex);
        String::from_utf8_lossy(&hex).into_owned()
    }
}

/// Longest name kept in a record; longer client-supplied names are cut.
const MAX_NAME: usize = 256;

/// Whose credential was refused, when the credential itself was good (a disabled member's).
#[derive(Debug, Clone, Copy)]
pub struct Refused<'a> {
    /// The credential's workspace.
    pub workspace: &'a str,
    /// Its member; `None` for the workspace token.
    pub member: Option<&'a str>,
    /// The token id.
    pub token_id: &'a str,
    /// An identity-provider token's subject.
    pub subject: Option<&'a str>,
    /// An identity-provider token's issuer.
    pub issuer: Option<&'a str>,
}

/// A client-supplied string made safe to store: control characters (NUL, which PostgreSQL refuses
/// in text, among them) replaced, length bounded.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_NAME));
    for c in s.chars() {
        if out.len() + c.len_utf8() > MAX_NAME {
            break;
        }
        out.push(if c.is_control() { '\u{fffd}' } else { c });
    }
    out
}

/// What to do when the queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenFull {
    /// Refuse new calls with a JSON-RPC error (the default: no call runs without its record).
    #[default]
    Refuse,
    /// Let calls run and drop their records, counting each drop.
    Drop,
}

/// Audit settings.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    /// Off turns the trail off entirely (no records, no refusals).
    pub enabled: bool,
    /// Records that may wait for the writer (calls in flight hold a place too).
    pub queue_capacity: usize,
    /// Most records written in one transaction.
    pub batch_size: usize,
    /// Refuse or drop when the queue is full.
    pub when_full: WhenFull,
    /// Longest the shutdown waits for the queue to drain.
    pub drain_timeout: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            queue_capacity: 10_000,
            batch_size: 1_000,
            when_full: WhenFull::Refuse,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Counters of the trail, for metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records committed to the store.
    pub written: AtomicU64,
    /// Records dropped because the queue was full (`when_full = "drop"`, and failed
    /// authentications, which never wait).
    pub dropped: AtomicU64,
    /// Calls refused because the queue was full.
    pub refused: AtomicU64,
    /// Failed attempts to write a batch (each is retried).
    pub write_errors: AtomicU64,
    /// Calls recorded, by decision and status.
    calls: [[AtomicU64; STATUSES.len()]; DECISIONS.len()],
}

impl Stats {
    /// Calls recorded with `DECISIONS[decision]` and `STATUSES[status]`.
    pub fn call_count(&self, decision: usize, status: usize) -> u64 {
        self.calls
            .get(decision)
            .and_then(|row| row.get(status))
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }
}

/// Why reading or writing the trail failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store refused: a query failed, or the input is invalid (a time, a filter).
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// The writer's own SQLite connection failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The writer's blocking thread failed.
    #[error("audit writer: {0}")]
    Writer(String),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Error {
        Error::Store(e.into())
    }
}

/// The queue is full: the call must not run.
#[derive(Debug, thiserror::Error)]
#[error(
    "the audit trail is not keeping up (its store is stalled or unreachable); the call was refused so that no call runs unrecorded"
)]
pub struct QueueFull;

/// The audit trail of one gateway process: the queue's sending side and its writer.
pub struct Audit {
    tx: Option<mpsc::Sender<Record>>,
    capacity: usize,
    when_full: WhenFull,
    drain_timeout: Duration,
    stats: Arc<Stats>,
    writer: Mutex<Option<(tokio::task::JoinHandle<()>, oneshot::Sender<()>)>>,
}

/// Who is calling, and where: the fixed part of a record.
pub struct CallStart<'a> {
    /// Workspace name.
    pub workspace: &'a str,
    /// Member, `None` for the workspace token.
    pub member: Option<&'a str>,
    /// Token id.
    pub token_id: &'a str,
    /// Server name.
    pub server: &'a str,
    /// Tool name.
    pub tool: &'a str,
    /// Gateway request id.
    pub request_id: &'a str,
    /// Client's `Mcp-Session-Id`.
    pub session_id: Option<&'a str>,
    /// An identity-provider token's subject.
    pub subject: Option<&'a str>,
    /// An identity-provider token's issuer.
    pub issuer: Option<&'a str>,
    /// When the gateway received the request.
    pub received: Instant,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Audit {
    /// A trail writing to `store`, with its writer task started.
    pub fn start(store: crate::store::Store, config: &AuditConfig) -> Arc<Audit> {
        if !config.enabled {
            return Arc::new(Audit::disabled());
        }
        let capacity = config.queue_capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let stats = Arc::new(Stats::default());
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(writer(
            store,
            rx,
            config.batch_size.max(1),
            stats.clone(),
            stop_rx,
        ));
        Arc::new(Audit {
            tx: Some(tx),
            capacity,
            when_full: config.when_full,
            drain_timeout: config.drain_timeout,
            stats,
            writer: Mutex::new(Some((task, stop_tx))),
        })
    }

    /// A trail whose records are received and discarded: the request-path cost of auditing
    /// without a store, for benchmarks.
    #[doc(hidden)]
    pub fn discarding(capacity: usize) -> Arc<Audit> {
        let (tx, mut rx) = mpsc::channel::<Record>(capacity);
        let stats = Arc::new(Stats::default());
        let written = stats.clone();
        let task = tokio::spawn(async move {
            let mut buf = Vec::with_capacity(1024);
            while rx.recv_many(&mut buf, 1024).await > 0 {
                written
                    .written
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                buf.clear();
            }
        });
        let (stop_tx, _) = oneshot::channel();
        Arc::new(Audit {
            tx: Some(tx),
            capacity,
            when_full: WhenFull::Refuse,
            drain_timeout: Duration::from_secs(1),
            stats,
            writer: Mutex::new(Some((task, stop_tx))),
        })
    }

    /// No trail at all.
    pub fn disabled() -> Audit {
        Audit {
            tx: None,
            capacity: 0,
            when_full: WhenFull::Drop,
            drain_timeout: Duration::ZERO,
            stats: Arc::default(),
            writer: Mutex::new(None),
        }
    }

    /// True when records are kept.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Records waiting for the writer or reserved by calls in flight.
    pub fn queue_depth(&self) -> usize {
        self.tx
            .as_ref()
            .map_or(0, |tx| self.capacity - tx.capacity())
    }

    /// Reserves the record of a `tools/call` about to be decided. `Ok(None)` when the trail is off
    /// (or full in drop mode); `Err` when the call must be refused.
    pub fn begin_call(&self, start: &CallStart<'_>) -> Result<Option<Arc<Call>>, QueueFull> {
        let Some(tx) = &self.tx else {
            return Ok(None);
        };
        let permit = match tx.clone().try_reserve_owned() {
            Ok(p) => p,
            Err(_) if self.when_full == WhenFull::Drop => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
            Err(_) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("audit queue full: tools/call refused");
                return Err(QueueFull);
            }
        };
        let record = Record {
            id: 0,
            workspace: start.workspace.to_owned(),
            seq: 0,
            ts_ms: crate::store::now_ms() - elapsed_ms(start.received),
            kind: KIND_CALL.to_owned(),
            member: start.member.map(str::to_owned),
            token_id: Some(start.token_id.to_owned()),
            server: clean(start.server),
            tool: clean(start.tool),
            decision: Decision::Allow.as_str().to_owned(),
            module: None,
            module_digest: None,
            status: String::new(),
            error_code: None,
            latency_us: 0,
            upstream_latency_us: None,
            request_id: start.request_id.to_owned(),
            session_id: start.session_id.map(clean),
            prev_hash: String::new(),
            hash: String::new(),
            subject: start.subject.map(clean),
            issuer: start.issuer.map(clean),
            labels: None,
        };
        Ok(Some(Arc::new(Call {
            stats: self.stats.clone(),
            inner: Mutex::new(CallState {
                record,
                permit: Some(permit),
                received: start.received,
                decision: Decision::Allow,
                upstream_start: None,
                upstream_end: None,
                outcome: None,
                ended: false,
            }),
        })))
    }

    /// Records a failed authentication (no member, no workspace). Never waits: when the queue is
    /// full the record is dropped and counted, and the request is refused anyway.
    pub fn auth_failure(
        &self,
        who: Option<Refused<'_>>,
        server: &str,
        why: &str,
        request_id: &str,
        received: Instant,
    ) {
        let Some(tx) = &self.tx else {
            return;
        };
        let record = Record {
            id: 0,
            workspace: who.map(|w| clean(w.workspace)).unwrap_or_default(),
            seq: 0,
            ts_ms: crate::store::now_ms() - elapsed_ms(received),
            kind: KIND_AUTH.to_owned(),
            member: who.and_then(|w| w.member).map(clean),
            token_id: who.map(|w| clean(w.token_id)),
            server: clean(server),
            tool: String::new(),
            decision: Decision::Deny.as_str().to_owned(),
            module: None,
            module_digest: None,
            status: Status::Denied.as_str().to_owned(),
            error_code: Some(why.to_owned()),
            latency_us: micros(received.elapsed()),
            upstream_latency_us: None,
            request_id: request_id.to_owned(),
            session_id: None,
            prev_hash: String::new(),
            hash: String::new(),
            subject: who.and_then(|w| w.subject).map(clean),
            issuer: who.and_then(|w| w.issuer).map(clean),
            labels: None,
        };
        if tx.try_send(record).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records an event about a workspace's tool (`kind`: [`KIND_TOOL_CHANGED`],
    /// [`KIND_TOOL_APPROVED`]) with `code` saying what happened. Never waits: with the queue
    /// full the record is dropped and counted.
    pub fn event(&self, kind: &str, workspace: &str, server: &str, tool: &str, code: &str) {
        let Some(tx) = &self.tx else {
            return;
        };
        let record = Record {
            workspace: clean(workspace),
            ts_ms: crate::store::now_ms(),
            kind: kind.to_owned(),
            server: clean(server),
            tool: clean(tool),
            decision: Decision::Allow.as_str().to_owned(),
            status: Status::Success.as_str().to_owned(),
            error_code: Some(code.to_owned()),
            request_id: String::new(),
            ..Record::default()
        };
        if tx.try_send(record).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Stops taking records, waits (bounded) for calls in flight to hand theirs in and for the
    /// writer to commit everything, then returns. Called once, at shutdown.
    pub async fn shutdown(&self) {
        let Some((task, stop)) = lock(&self.writer).take() else {
            return;
        };
        let _ = stop.send(());
        let pending = self.queue_depth();
        match tokio::time::timeout(self.drain_timeout, task).await {
            Ok(_) => tracing::info!(
                written = self.stats.written.load(Ordering::Relaxed),
                "audit trail flushed"
            ),
            Err(_) => tracing::error!(
                pending,
                left = self.queue_depth(),
                "audit trail not flushed before the drain timeout; records still queued are lost"
            ),
        }
    }
}

/// A time for `--since`, `--until` and `--before`: RFC 3339 (`2026-11-24T09:30:00Z`), a date
/// (`2026-11-24`, midnight UTC), or a span back from now (`15m`, `12h`, `30d`). Unix ms.
pub fn parse_time(text: &str) -> Result<i64, crate::store::Error> {
    let text = text.trim();
    if let Ok(span) = crate::store::parse_duration(text) {
        return Ok(crate::store::now_ms() - i64::try_from(span.as_millis()).unwrap_or(0));
    }
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    humantime::parse_rfc3339_weak(&full)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(|| {
            crate::store::Error::Invalid(format!(
                "invalid time {text:?}: expected 2026-11-24T09:30:00Z, 2026-11-24 or a span such as 15m, 12h, 30d"
            ))
        })
}

fn elapsed_ms(since: Instant) -> i64 {
    i64::try_from(since.elapsed().as_millis()).unwrap_or(0)
}

/// How a call went, as its answer says.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A result; `is_error` when the tool itself reported a failure (`result.isError`).
    Result {
        /// `result.isError` was `true`.
        is_error: bool,
    },
    /// A JSON-RPC error, with its code as written.
    Error {
        /// `error.code`, when present.
        code: Option<String>,
    },
    /// Neither: a request or notification from the server, or something malformed.
    Other,
}

/// The record of one call in progress. Sent to the writer when dropped.
pub struct Call {
    stats: Arc<Stats>,
    inner: Mutex<CallState>,
}

struct CallState {
    record: Record,
    permit: Option<mpsc::OwnedPermit<Record>>,
    received: Instant,
    decision: Decision,
    upstream_start: Option<Instant>,
    upstream_end: Option<Instant>,
    outcome: Option<(Status, Option<String>)>,
    ended: bool,
}

impl Call {
    /// A phase of policy decided. The most severe decision is kept, with the module that made it.
    pub fn decided(&self, decision: Decision, denial: Option<&Denial>) {
        let mut s = lock(&self.inner);
        if decision > s.decision {
            s.decision = decision;
            if let Some(d) = denial {
                s.record.module = Some(d.module.clone());
                s.record.module_digest = (!d.digest.is_empty()).then(|| d.digest.clone());
                s.record.error_code = Some(d.code.clone());
            }
        }
    }

    /// A policy denial (enforced or not), with fault turning it into an error decision.
    pub fn denied(&self, d: &Denial, enforced: bool) {
        let decision = match (d.fault, enforced) {
            (true, _) => Decision::Error,
            (false, true) => Decision::Deny,
            (false, false) => Decision::WouldDeny,
        };
        self.decided(decision, Some(d));
        if enforced {
            self.finish(Status::Denied, Some(d.code.clone()));
        }
    }

    /// Flow labels the call's policy applied to its session.
    pub fn labelled(&self, labels: &[String]) {
        if labels.is_empty() {
            return;
        }
        let mut s = lock(&self.inner);
        let mut all: Vec<&str> = s
            .record
            .labels
            .as_deref()
            .map(|l| l.split(',').collect())
            .unwrap_or_default();
        all.extend(labels.iter().map(String::as_str));
        all.sort_unstable();
        all.dedup();
        s.record.labels = Some(clean(&all.join(",")));
    }

    /// The server and tool an aggregated name resolved to.
    pub fn target(&self, server: &str, tool: &str) {
        let mut s = lock(&self.inner);
        s.record.server = clean(server);
        s.record.tool = clean(tool);
    }

    /// The request is about to be sent upstream.
    pub fn upstream_started(&self) {
        lock(&self.inner).upstream_start = Some(Instant::now());
    }

    /// How the call ended; the first outcome given wins.
    pub fn finish(&self, status: Status, code: Option<String>) {
        let mut s = lock(&self.inner);
        if s.outcome.is_none() {
            s.outcome = Some((status, code));
            if s.upstream_start.is_some() && s.upstream_end.is_none() {
                s.upstream_end = Some(Instant::now());
            }
        }
    }

    /// The answer to the call (after any rewrite), read for its outcome.
    pub fn answered(&self, outcome: Outcome) {
        let (status, code) = match outcome {
            Outcome::Error { code } => (Status::UpstreamError, code),
            Outcome::Result { is_error: true } => (Status::ToolError, None),
            Outcome::Result { is_error: false } | Outcome::Other => (Status::Success, None),
        };
        self.finish(status, code);
    }

    /// The response body reached its end.
    fn ended(&self) {
        lock(&self.inner).ended = true;
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let s = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        let Some(permit) = s.permit.take() else {
            return;
        };
        let (status, code) = match s.outcome.take() {
            Some(o) => o,
            // The stream ended cleanly but never carried the answer: the call was cancelled
            // (`notifications/cancelled`) upstream.
            None if s.ended => (Status::Cancelled, Some("no-answer".to_owned())),
            None => (Status::Cancelled, None),
        };
        let mut record = std::mem::take(&mut s.record);
        let d = DECISIONS.iter().position(|d| *d == s.decision).unwrap_or(0);
        let st = STATUSES.iter().position(|x| *x == status).unwrap_or(0);
        self.stats.calls[d][st].fetch_add(1, Ordering::Relaxed);
        record.decision = s.decision.as_str().to_owned();
        record.status = status.as_str().to_owned();
        if code.is_some() {
            record.error_code = code;
        }
        record.latency_us = micros(s.received.elapsed());
        record.upstream_latency_us = s
            .upstream_start
            .map(|start| micros(s.upstream_end.unwrap_or_else(Instant::now) - start));
        permit.send(record);
    }
}

/// A response body that tells its call when it ends, and holds the call until it is dropped.
pub struct Tracked<B> {
    inner: B,
    call: Arc<Call>,
}

impl<B> Tracked<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, call: Arc<Call>) -> Self {
        Tracked { inner, call }
    }
}

impl<B> Body for Tracked<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.call.ended(),
            Poll::Ready(Some(Err(_))) => self
                .call
                .finish(Status::UpstreamError, Some("stream-error".into())),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.call.ended();
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Longest a record waits for others to share its write transaction. Each transaction costs the
/// writer several round trips to the database (with SQLite, each one a wake-up of its worker
/// thread), so fuller batches cost less per record: at ~14k calls/s on two cores, 20 ms instead
/// of 5 ms took the trail's cost from ~8 % of throughput to ~5 %. A record is in the store within
/// about 20 ms of its call's end.
const LINGER: Duration = Duration::from_millis(20);

/// The writer: drains the queue in batches until stopped and drained; a failed batch is retried
/// (with backoff) until it is written, holding up the queue rather than losing records.
async fn writer(
    store: crate::store::Store,
    mut rx: mpsc::Receiver<Record>,
    batch: usize,
    stats: Arc<Stats>,
    mut stop: oneshot::Receiver<()>,
) {
    let appender = store::Appender::new(store.db());
    let mut buf = Vec::with_capacity(batch);
    let mut stopping = false;
    loop {
        let n = if stopping {
            rx.recv_many(&mut buf, batch).await
        } else {
            tokio::select! {
                n = rx.recv_many(&mut buf, batch) => n,
                _ = &mut stop => {
                    rx.close();
                    stopping = true;
                    continue;
                }
            }
        };
        if n == 0 {
            break;
        }
        // Under light load records arrive one by one; a transaction each would spend the
        // writer's time (and the machine's) on commits. Let a batch fill for a moment.
        if buf.len() < batch && !stopping {
            // A shutdown cuts the wait short: what is waiting is written now.
            tokio::select! {
                _ = tokio::time::sleep(LINGER) => {}
                _ = &mut stop => {
                    rx.close();
                    stopping = true;
                }
            }
            while buf.len() < batch {
                match rx.try_recv() {
                    Ok(r) => buf.push(r),
                    Err(_) => break,
                }
            }
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            match appender.append(&mut buf).await {
                Ok(()) => {
                    stats.written.fetch_add(buf.len() as u64, Ordering::Relaxed);
                    buf.clear();
                    break;
                }
                Err(e) => {
                    stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, records = buf.len(), retry_in = ?backoff, "audit write failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_of_a_record_is_pinned() {
        // Stored chains depend on both the canonical form and its hash spelling.
        let r = Record {
            workspace: "acme".into(),
            seq: 1,
            ts_ms: 5,
            kind: KIND_CALL.into(),
            ..Record::default()
        };
        assert_eq!(
            r.canonical(),
            r#"[["acme",1,5,"tools/call",null,null,"","",""],[null,null,"",null,0,null,"",null,""]]"#
        );
        assert_eq!(
            r.compute_hash(),
            "5f658c907d2d5c24731823cdf54092207e18c8b427970d6370a42b69294dbb4d"
        );
    }

    #[test]
    fn clean_bounds_and_strips_controls() {
        assert_eq!(clean("a\0b\nc"), "a\u{fffd}b\u{fffd}c");
        assert_eq!(clean(&"é".repeat(500)).len(), 256);
    }

    #[test]
    fn times_parse_in_three_forms() {
        assert_eq!(parse_time("2026-11-24").unwrap(), 1_795_478_400_000);
        assert_eq!(
            parse_time("2026-11-24T00:00:01Z").unwrap(),
            1_795_478_401_000
        );
        let ago = crate::store::now_ms() - parse_time("1h").unwrap();
        assert!((3_599_000..3_601_000).contains(&ago));
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn decisions_order_by_severity() {
        assert!(Decision::Allow < Decision::WouldDeny);
        assert!(Decision::WouldDeny < Decision::Deny);
        assert!(Decision::Deny < Decision::Error);
        assert_eq!(Decision::parse("would-deny"), Some(Decision::WouldDeny));
    }
}

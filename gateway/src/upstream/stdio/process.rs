//! One running stdio process: spawned through the fence, `initialize`d once, its stdin fed by
//! a bounded queue, its stdout read line by line (bounded) and dispatched, its stderr logged.

use super::{Error, Pending, Server, limits};
use crate::store::StdioSpec;
use crate::upstream::fence::{self, FenceReport, Launch};
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::{mpsc, watch};

/// What the child answered to `initialize`.
#[derive(Debug, Clone)]
pub(super) struct Init {
    /// Its `protocolVersion`.
    pub protocol_version: String,
    /// Its capabilities.
    pub capabilities: Value,
    /// Its `serverInfo`.
    pub server_info: Value,
    /// Its instructions.
    pub instructions: Option<Value>,
}

/// The routing tables of one process.
#[derive(Default)]
pub(super) struct Routes {
    /// Requests sent to the child, by the id the gateway gave them.
    pub pending: HashMap<u64, Pending>,
    /// Progress tokens the gateway gave → (request id, the client's token).
    pub progress: HashMap<String, (u64, Value)>,
    /// Questions of the child sent on to a client: the gateway's id → (the child's id, when).
    pub asked: HashMap<String, (Value, Instant)>,
}

/// A running process.
pub(super) struct Child {
    /// `ws/name`.
    pub key: String,
    /// Its pid (also its process group).
    pub pid: u32,
    /// When it was started.
    pub started: Instant,
    /// The same, wall clock (ms since the epoch).
    pub started_ms: i64,
    /// The fence that is actually in place.
    pub fence: FenceReport,
    /// Its initialize answer (set once the handshake is done).
    pub init: std::sync::OnceLock<Init>,
    stdin: Mutex<Option<mpsc::Sender<Bytes>>>,
    next_id: AtomicU64,
    pub routes: Mutex<Routes>,
    /// Set when the gateway stops it on purpose (idle, shutdown, a changed spec).
    pub stopping: AtomicBool,
    alive: AtomicBool,
    exited: watch::Receiver<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Child {
    /// Whether it is still running.
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// A fresh id for a request to the child.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The routing tables.
    pub fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        lock(&self.routes)
    }

    /// Queues one message for its stdin. Fails when the queue is full or the process gone.
    pub fn send(&self, message: &Value) -> Result<(), &'static str> {
        let mut line = serde_json::to_vec(message).map_err(|_| "unserializable message")?;
        line.push(b'\n');
        let stdin = lock(&self.stdin);
        let Some(tx) = stdin.as_ref() else {
            return Err("the process is stopping");
        };
        tx.try_send(Bytes::from(line)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => "its input queue is full",
            mpsc::error::TrySendError::Closed(_) => "the process is gone",
        })
    }

    /// Queues an answer for the process: when its queue is full the answer waits for room (in
    /// a task of its own) rather than being dropped, since the process is waiting for it.
    pub fn send_answer(&self, message: &Value) {
        let Ok(mut line) = serde_json::to_vec(message) else {
            return;
        };
        line.push(b'\n');
        let Some(tx) = lock(&self.stdin).clone() else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(line)) = tx.try_send(Bytes::from(line)) {
            tokio::spawn(async move {
                let _ = tx.send(line).await;
            });
        }
    }

    /// Stops it: stdin closed, 2 s to exit, then its process group killed; resolves once it has
    /// been reaped.
    pub async fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        lock(&self.stdin).take();
        let mut exited = self.exited.clone();
        let graceful = tokio::time::timeout(limits::STOP_GRACE, exited.wait_for(Option::is_some))
            .await
            .is_ok();
        // Whatever it left behind in its group (npx's node, a shell's children) goes too.
        let _ = fence::kill_group(self.pid, fence::Signal::Kill);
        if !graceful {
            let _ =
                tokio::time::timeout(limits::STOP_GRACE, exited.wait_for(Option::is_some)).await;
        }
    }

    /// How it ended, once it has.
    pub fn exit(&self) -> Option<String> {
        self.exited.borrow().clone()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Spawns and initializes the process of `server`.
pub(super) async fn start(
    server: &Arc<Server>,
    spec: &StdioSpec,
    home: PathBuf,
) -> Result<Arc<Child>, Error> {
    let process_error = |reason: String| Error::Process {
        server: server.name.clone(),
        reason,
    };
    let launch = Launch {
        server: &server.key,
        spec,
        home,
    };
    let (mut process, report) =
        fence::spawn(&launch).map_err(|e| process_error(format!("cannot start: {e}")))?;
    let pid = process.id().unwrap_or(0);
    let (Some(stdin), Some(stdout), Some(stderr)) = (
        process.stdin.take(),
        process.stdout.take(),
        process.stderr.take(),
    ) else {
        return Err(process_error("its stdio could not be captured".into()));
    };
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(limits::STDIN_QUEUE);
    let (exit_tx, exit_rx) = watch::channel(None);
    let child = Arc::new(Child {
        key: server.key.clone(),
        pid,
        started: Instant::now(),
        started_ms: now_ms(),
        fence: report,
        init: std::sync::OnceLock::new(),
        stdin: Mutex::new(Some(stdin_tx)),
        next_id: AtomicU64::new(1),
        routes: Mutex::new(Routes::default()),
        stopping: AtomicBool::new(false),
        alive: AtomicBool::new(true),
        exited: exit_rx,
    });
    tracing::info!(server = %server.key, pid, "stdio server started");
    tokio::spawn(write_stdin(stdin, stdin_rx, server.key.clone()));
    tokio::spawn(log_stderr(stderr, server.key.clone()));
    tokio::spawn(read_stdout(
        BufReader::new(stdout),
        process,
        Arc::downgrade(server),
        child.clone(),
        exit_tx,
    ));

    // The handshake: once per process, whichever client comes first.
    let (tx, mut rx) = mpsc::channel(limits::EVENTS_PER_REQUEST);
    child.routes().pending.insert(0, Pending::internal(tx));
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": super::LEGACY,
        "capabilities": {"roots": {"listChanged": true}, "sampling": {}, "elicitation": {}},
        "clientInfo": {"name": "mcpgw", "version": env!("CARGO_PKG_VERSION")}}});
    let failed = |child: &Arc<Child>, reason: String| {
        let child = child.clone();
        tokio::spawn(async move { child.stop().await });
        process_error(reason)
    };
    if let Err(e) = child.send(&init) {
        return Err(failed(&child, format!("initialize not sent: {e}")));
    }
    let answer = loop {
        match tokio::time::timeout(limits::START_TIMEOUT, rx.recv()).await {
            Err(_) => {
                return Err(failed(
                    &child,
                    format!("no initialize answer within {:?}", limits::START_TIMEOUT),
                ));
            }
            Ok(None) => {
                let exit = child.exit().unwrap_or_else(|| "closed its stdout".into());
                return Err(failed(&child, format!("exited during initialize ({exit})")));
            }
            Ok(Some(m)) if m.get("id") == Some(&json!(0)) => break m,
            Ok(Some(_)) => continue,
        }
    };
    let Some(result) = answer.get("result") else {
        let why = answer
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("no result")
            .to_owned();
        return Err(failed(&child, format!("initialize refused: {why}")));
    };
    let init = Init {
        protocol_version: result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(super::LEGACY)
            .to_owned(),
        // Tasks outlive the call that made them and the process cannot tell members apart: a
        // task one member started must not be listed or read by another, so they are not offered.
        capabilities: {
            let mut c = result.get("capabilities").cloned().unwrap_or(json!({}));
            if let Some(c) = c.as_object_mut() {
                c.remove("tasks");
            }
            c
        },
        server_info: result
            .get("serverInfo")
            .cloned()
            .unwrap_or(json!({"name": server.name, "version": "unknown"})),
        instructions: result.get("instructions").cloned(),
    };
    let _ = child.init.set(init);
    if let Err(e) = child.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})) {
        return Err(failed(&child, format!("initialized not sent: {e}")));
    }
    Ok(child)
}

async fn write_stdin(
    mut stdin: tokio::process::ChildStdin,
    mut rx: mpsc::Receiver<Bytes>,
    key: String,
) {
    // What is queued goes out in one write (up to BATCH bytes): one wake-up of the process per
    // batch, not per message. A message alone is written as it is, without a copy.
    const BATCH: usize = 64 << 10;
    let mut batch = Vec::new();
    while let Some(line) = rx.recv().await {
        let written = match rx.try_recv() {
            Err(_) => stdin.write_all(&line).await,
            Ok(more) => {
                batch.clear();
                batch.extend_from_slice(&line);
                batch.extend_from_slice(&more);
                while batch.len() < BATCH
                    && let Ok(more) = rx.try_recv()
                {
                    batch.extend_from_slice(&more);
                }
                let written = stdin.write_all(&batch).await;
                if batch.capacity() > 4 * BATCH {
                    batch = Vec::new(); // a large message passed: give its memory back
                }
                written
            }
        };
        if let Err(e) = written {
            tracing::debug!(server = %key, error = %e, "stdin closed");
            return;
        }
        if stdin.flush().await.is_err() {
            return;
        }
    }
    // Dropping stdin closes it: the child's cue to exit.
}

async fn log_stderr(stderr: tokio::process::ChildStderr, key: String) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match read_line(&mut reader, &mut line, limits::STDERR_LINE).await {
            Ok(Line::Eof) | Err(_) => return,
            Ok(Line::Complete) | Ok(Line::Truncated) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end();
                if !text.is_empty() {
                    tracing::info!(target: "mcpgw::stdio::stderr", server = %key, "{text}");
                }
            }
        }
    }
}

/// How a bounded line read ended.
pub(super) enum Line {
    /// A whole line (without its newline).
    Complete,
    /// A line longer than the bound: `buf` holds its first part, the rest was skipped.
    Truncated,
    /// End of input.
    Eof,
}

/// Reads one line into `buf`, keeping at most `max` bytes of it.
pub(super) async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    let mut truncated = false;
    let mut any = false;
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(if any {
                if truncated {
                    Line::Truncated
                } else {
                    Line::Complete
                }
            } else {
                Line::Eof
            });
        }
        any = true;
        let (part, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        let room = max.saturating_sub(buf.len());
        if part.len() > room {
            truncated = true;
        }
        buf.extend_from_slice(&part[..part.len().min(room)]);
        let used = done.unwrap_or(chunk.len());
        reader.consume(used);
        if done.is_some() {
            return Ok(if truncated {
                Line::Truncated
            } else {
                Line::Complete
            });
        }
    }
}

async fn read_stdout(
    mut reader: BufReader<tokio::process::ChildStdout>,
    mut process: tokio::process::Child,
    server: Weak<Server>,
    child: Arc<Child>,
    exit_tx: watch::Sender<Option<String>>,
) {
    let mut line = Vec::new();
    let mut exited: Option<(std::process::ExitStatus, Instant)> = None;
    let mut interrupted = false;
    let ended = loop {
        if !interrupted {
            line.clear();
        }
        interrupted = false;
        let read = if let Some((_, at)) = exited {
            // The process is gone but something it left holds stdout: what is already written
            // is read (for up to the grace time), then the rest of its group goes.
            let left = limits::STOP_GRACE.saturating_sub(at.elapsed());
            match tokio::time::timeout(left, read_line(&mut reader, &mut line, limits::MAX_LINE))
                .await
            {
                Ok(r) => r,
                Err(_) => {
                    let _ = fence::kill_group(child.pid, fence::Signal::Kill);
                    break String::new();
                }
            }
        } else {
            tokio::select! {
                r = read_line(&mut reader, &mut line, limits::MAX_LINE) => r,
                status = process.wait() => {
                    match status {
                        Ok(s) => exited = Some((s, Instant::now())),
                        Err(e) => break format!("wait failed: {e}"),
                    }
                    // A line read in part goes on where it stopped.
                    interrupted = true;
                    continue;
                }
            }
        };
        match read {
            Err(e) => break format!("stdout unreadable: {e}"),
            Ok(Line::Eof) => break String::new(),
            Ok(Line::Truncated) => {
                // A message past the bound cannot be answered in part: the process is ended
                // and its callers get an error, rather than waiting for an answer that was cut.
                tracing::error!(server = %child.key, max = limits::MAX_LINE, "stdio server wrote a line over the bound; stopping it");
                let _ = fence::kill_group(child.pid, fence::Signal::Kill);
                break format!("wrote a message over {} bytes", limits::MAX_LINE);
            }
            Ok(Line::Complete) => {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match serde_json::from_slice::<Value>(&line) {
                    Ok(message) => match server.upgrade() {
                        Some(server) => server.on_message(&child, message),
                        None => break String::new(),
                    },
                    Err(e) => {
                        tracing::warn!(server = %child.key, error = %e, "stdio server wrote a line that is not JSON; ignored")
                    }
                }
            }
        }
    };
    // stdout is closed: the process is exiting. Reap it (killing its group if it lingers).
    let status = match exited {
        Some((s, _)) => Ok(Ok(s)),
        None => tokio::time::timeout(limits::STOP_GRACE, process.wait()).await,
    };
    let status = match status {
        Ok(Ok(s)) => s.to_string(),
        Ok(Err(e)) => format!("wait failed: {e}"),
        Err(_) => {
            let _ = fence::kill_group(child.pid, fence::Signal::Kill);
            match process.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => format!("wait failed: {e}"),
            }
        }
    };
    let exit = if ended.is_empty() {
        status
    } else {
        format!("{ended}; {status}")
    };
    child.alive.store(false, Ordering::Release);
    lock(&child.stdin).take();
    let stopping = child.stopping.load(Ordering::Acquire);
    if stopping {
        tracing::info!(server = %child.key, pid = child.pid, exit = %exit, "stdio server stopped");
    } else {
        tracing::warn!(server = %child.key, pid = child.pid, exit = %exit, "stdio server exited");
    }
    let _ = exit_tx.send(Some(exit.clone()));
    if let Some(server) = server.upgrade() {
        server.on_exit(&child, &exit);
    }
}

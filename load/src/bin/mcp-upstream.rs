//! mcp-upstream: the smallest MCP server that answers what `load/processes` sends, so that in a
//! separate-process benchmark the upstream costs as little of the machine's CPU as it can and the
//! proxies in front of it are what the figures compare.
//!
//! Streamable HTTP on `POST /json` (every answer `application/json`) and `POST /sse` (every
//! answer a `text/event-stream` of one `message` event, sent chunked, as SDK servers stream it).
//! Both revisions:
//! - 2025-11-25: `initialize` opens a session (`Mcp-Session-Id`); every later request must carry
//!   a session this process gave out (else 404); notifications get 202; `DELETE` ends a session.
//! - 2026-07-28: stateless; `server/discover` lists the revisions; results carry `resultType`.
//!
//! Methods: `initialize`, `server/discover`, `ping`, `tools/list` (one tool, `echo`) and
//! `tools/call` of `echo`, which answers its `text` argument (or `ok`). Anything else is -32601.
//!
//! `mcp-upstream --listen 127.0.0.1:0` prints `listening on ADDR` once bound.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LEGACY: &str = "2025-11-25";
const MODERN: &str = "2026-07-28";
const MAX_BODY: usize = 1 << 20;
const MAX_SESSIONS: usize = 100_000;

/// A body of one chunk whose length is not announced, so HTTP/1.1 sends it chunked.
struct Chunked(Option<Bytes>);

impl Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
    }
    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

type Answer = http_body_util::Either<Full<Bytes>, Chunked>;

#[derive(Default)]
struct Server {
    sessions: Mutex<HashSet<String>>,
}

impl Server {
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Answer> {
    let mut r = Response::new(Answer::Left(Full::new(Bytes::from_static(text.as_bytes()))));
    *r.status_mut() = status;
    r
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

impl Server {
    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Answer>, Infallible> {
        let sse = match req.uri().path() {
            "/json" | "/mcp" => false,
            "/sse" => true,
            _ => return Ok(plain(StatusCode::NOT_FOUND, "not found")),
        };
        let session = req
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let known = |s: &Option<String>| s.as_ref().is_some_and(|s| self.sessions().contains(s));
        match *req.method() {
            Method::POST => {}
            Method::DELETE => {
                let gone = session.as_ref().is_some_and(|s| self.sessions().remove(s));
                return Ok(if gone {
                    plain(StatusCode::OK, "")
                } else {
                    plain(StatusCode::NOT_FOUND, "no such session")
                });
            }
            _ => return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "POST")),
        }
        let Ok(body) = Limited::new(req.into_body(), MAX_BODY).collect().await else {
            return Ok(plain(StatusCode::BAD_REQUEST, "unreadable body"));
        };
        let Ok(msg) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
            let e = error(Value::Null, -32700, "parse error");
            return Ok(self.answer(StatusCode::BAD_REQUEST, &e, sse, None));
        };
        let method = msg
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(id) = msg.get("id").cloned() else {
            // A notification (or a reply): accepted.
            return Ok(plain(StatusCode::ACCEPTED, ""));
        };
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        let meta_version = params
            .pointer("/_meta/io.modelcontextprotocol~1protocolVersion")
            .and_then(Value::as_str);
        let modern = meta_version == Some(MODERN);
        if method == "initialize" {
            let sid = format!("{:032x}", rand_u128());
            {
                let mut sessions = self.sessions();
                if sessions.len() >= MAX_SESSIONS {
                    sessions.clear();
                }
                sessions.insert(sid.clone());
            }
            let result = json!({
                "protocolVersion": LEGACY,
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "mcp-upstream", "version": "1.0.0"}
            });
            let reply = json!({"jsonrpc": "2.0", "id": id, "result": result});
            return Ok(self.answer(StatusCode::OK, &reply, sse, Some(sid)));
        }
        if !modern && method != "server/discover" && !known(&session) {
            let e = error(id, -32001, "session not found");
            return Ok(self.answer(StatusCode::NOT_FOUND, &e, sse, None));
        }
        let mut result = match method {
            "server/discover" => json!({
                "supportedVersions": [MODERN, LEGACY],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "mcp-upstream", "version": "1.0.0"}
            }),
            "ping" => json!({}),
            "tools/list" => json!({"tools": [{
                "name": "echo",
                "description": "Answers its text.",
                "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}
            }]}),
            "tools/call" if params.get("name").and_then(Value::as_str) == Some("echo") => {
                let text = params
                    .pointer("/arguments/text")
                    .and_then(Value::as_str)
                    .unwrap_or("ok");
                json!({"content": [{"type": "text", "text": text}], "isError": false})
            }
            "tools/call" => {
                let e = error(id, -32602, "unknown tool");
                return Ok(self.answer(StatusCode::OK, &e, sse, None));
            }
            _ => {
                let e = error(id, -32601, "method not found");
                return Ok(self.answer(StatusCode::OK, &e, sse, None));
            }
        };
        if modern && let Some(r) = result.as_object_mut() {
            r.insert("resultType".into(), json!("complete"));
        }
        let reply = json!({"jsonrpc": "2.0", "id": id, "result": result});
        Ok(self.answer(StatusCode::OK, &reply, sse, None))
    }

    fn answer(
        &self,
        status: StatusCode,
        reply: &Value,
        sse: bool,
        session: Option<String>,
    ) -> Response<Answer> {
        let json = reply.to_string();
        let (body, kind) = if sse {
            let event = format!("event: message\ndata: {json}\n\n");
            (
                Answer::Right(Chunked(Some(Bytes::from(event)))),
                "text/event-stream",
            )
        } else {
            (
                Answer::Left(Full::new(Bytes::from(json))),
                "application/json",
            )
        };
        let mut r = Response::new(body);
        *r.status_mut() = status;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
        if let Some(sid) = session.and_then(|s| header::HeaderValue::from_str(&s).ok()) {
            r.headers_mut().insert("mcp-session-id", sid);
        }
        r
    }
}

/// 128 random bits from the kernel.
fn rand_u128() -> u128 {
    let mut b = [0u8; 16];
    // SAFETY: `b` is a writable buffer of the length given.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    assert_eq!(n, 16, "getrandom");
    u128::from_ne_bytes(b)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut listen: SocketAddr = "127.0.0.1:0".parse()?;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => {
                listen = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--listen needs IP:PORT"))?
                    .parse()?
            }
            other => {
                anyhow::bail!("unknown argument {other:?} (usage: mcp-upstream --listen IP:PORT)")
            }
        }
    }
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let server = Arc::new(Server::default());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let server = server.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| server.clone().handle(req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

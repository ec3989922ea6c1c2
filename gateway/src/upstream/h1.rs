//! `http://` upstreams over HTTP/1.1, the connection owned by the request that uses it.
//!
//! hyper's pooled client runs every upstream connection as a task of its own: each call hands its
//! request to that task through a channel and gets the response head and every body chunk back
//! through more, so a call costs several task wake-ups, on a multi-threaded runtime often a
//! thread's too. Here the task serving the client's connection does the work itself, as nginx
//! does: it takes an idle connection to the upstream (or opens one), writes the request, head and
//! body, in one write, reads the response head, and the response body ([`H1Body`]) reads the
//! socket when the client's connection asks for the next chunk. When the body has ended cleanly
//! the connection goes back to the idle list of its upstream address; a body dropped early (the
//! client went away) closes it.
//!
//! - Framing: `Content-Length`, `Transfer-Encoding: chunked` (chunk extensions and trailers read
//!   and dropped) or, neither given, until the upstream closes (never reused). `1xx` heads are
//!   skipped. HTTP/1.0 answers and `Connection: close` are not reused.
//! - A connection idle for a second or more is checked before it carries a request: one that the
//!   upstream closed (servers time idle connections out, Node's after 5 s) or wrote to unasked
//!   (a 408) is dropped. When writing the request to a reused connection fails, the request goes
//!   once more on a new connection. Once it is written it never goes twice: an upstream that then
//!   closes without answering may have run the call, so the call fails with an error instead.
//! - Bounds: response head [`MAX_HEAD`] bytes and [`MAX_HEADERS`] headers, chunk-size lines and
//!   trailers [`MAX_LINE`]; [`MAX_IDLE_PER_HOST`] idle connections per address, each dropped after
//!   [`IDLE_TIMEOUT`] unused.

use bytes::{Buf as _, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Uri, Version};
use http_body::{Frame, SizeHint};
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

/// Largest response head (status line and headers).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most response headers.
pub const MAX_HEADERS: usize = 100;
/// Longest chunk-size line, and most bytes of trailers.
pub const MAX_LINE: usize = 8 * 1024;
/// Idle connections kept per upstream address.
pub const MAX_IDLE_PER_HOST: usize = 1024;
/// How long a connection may sit idle before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// What one read asks the socket for.
const READ_SIZE: usize = 16 * 1024;
/// A connection idle this long is checked before it is used again (one `recv` that finds
/// nothing). One used sooner is not: under load every call would pay for the check, and a
/// server has rarely closed a connection within a second of answering on it; if it has, the
/// request is sent again on a new one (see the module's doc).
pub const QUIET_CHECK_AFTER: Duration = Duration::from_secs(1);

/// Why an exchange with an upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL names no host.
    #[error("the url has no host")]
    NoHost,
    /// Connecting failed.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// Connecting took longer than the connect timeout.
    #[error("connect: timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// Writing the request or reading the response failed.
    #[error("{0}")]
    Io(std::io::Error),
    /// The upstream closed the connection before a response.
    #[error("connection closed before a response")]
    Closed,
    /// The response is not HTTP/1.1 as this client reads it.
    #[error("invalid response: {0}")]
    Invalid(String),
}

impl Error {
    fn io(e: std::io::Error) -> Error {
        Error::Io(e)
    }
}

/// A body error: the socket failed or the framing is broken mid-body.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Idle {
    stream: TcpStream,
    since: Instant,
}

/// Idle connections per upstream address (`host:port`).
#[derive(Default)]
struct Idles {
    by_host: Mutex<HashMap<String, VecDeque<Idle>>>,
}

impl Idles {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Idle>>> {
        self.by_host.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used idle connection to `host` that has not timed out and, if it sat
    /// idle for [`QUIET_CHECK_AFTER`] or more, is still open with nothing unread on it (a server
    /// may have closed it, or written something unasked, such as a 408, while it waited: a
    /// connection in that state must not carry a request).
    fn take(&self, host: &str) -> Option<TcpStream> {
        let mut map = self.lock();
        let list = map.get_mut(host)?;
        while let Some(idle) = list.pop_back() {
            let waited = idle.since.elapsed();
            if waited >= IDLE_TIMEOUT {
                continue;
            }
            if waited < QUIET_CHECK_AFTER || quiet(&idle.stream) {
                return Some(idle.stream);
            }
        }
        None
    }

    fn put(&self, host: &str, stream: TcpStream) {
        let mut map = self.lock();
        let list = match map.get_mut(host) {
            Some(list) => list,
            None => map.entry(host.to_owned()).or_default(),
        };
        while list
            .front()
            .is_some_and(|oldest| oldest.since.elapsed() >= IDLE_TIMEOUT)
        {
            list.pop_front();
        }
        if list.len() < MAX_IDLE_PER_HOST {
            list.push_back(Idle {
                stream,
                since: Instant::now(),
            });
        }
    }
}

/// The `http://` client: idle connections per upstream address and the connect timeout.
#[derive(Clone)]
pub struct Client {
    idle: Arc<Idles>,
    connect_timeout: Duration,
}

impl Client {
    /// A client that gives up connecting after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Client {
        Client {
            idle: Arc::default(),
            connect_timeout,
        }
    }

    /// Sends `method` to `uri` with `headers` (never `Host`, `Content-Length`, `Connection` or
    /// `Transfer-Encoding`: this client writes those) and `body`; resolves with the response head,
    /// the body streaming from the connection.
    pub async fn send(
        &self,
        uri: &Uri,
        method: &Method,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response<H1Body>, Error> {
        let host = host_port(uri).ok_or(Error::NoHost)?;
        let request = encode(uri, &host, method, headers, body);
        if let Some(stream) = self.idle.take(&host) {
            match self.exchange(stream, &request).await {
                Err(Attempt::Unsent(_)) => {} // closed while idle: once more, fresh
                Err(Attempt::Failed(e)) => return Err(e),
                Ok((head, buf, stream)) => {
                    return H1Body::start(head, buf, stream, method, host, &self.idle);
                }
            }
        }
        let stream = self.connect(&host).await?;
        match self.exchange(stream, &request).await {
            Ok((head, buf, stream)) => H1Body::start(head, buf, stream, method, host, &self.idle),
            Err(Attempt::Unsent(e) | Attempt::Failed(e)) => Err(e),
        }
    }

    async fn connect(&self, host: &str) -> Result<TcpStream, Error> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(host))
            .await
            .map_err(|_| Error::ConnectTimeout(self.connect_timeout))?
            .map_err(Error::Connect)?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Writes the request and reads the response head: the head, what was read past it, and
    /// the connection.
    async fn exchange(
        &self,
        mut stream: TcpStream,
        request: &[u8],
    ) -> Result<(Response<()>, BytesMut, TcpStream), Attempt> {
        if let Err(e) = stream.write_all(request).await {
            return Err(Attempt::Unsent(Error::io(e)));
        }
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        loop {
            buf.reserve(READ_SIZE);
            let n = read_some(&mut stream, &mut buf)
                .await
                .map_err(|e| Attempt::Failed(Error::io(e)))?;
            if n == 0 {
                return Err(Attempt::Failed(if buf.is_empty() {
                    Error::Closed
                } else {
                    Error::Invalid("closed in the middle of the head".into())
                }));
            }
            // Heads of 1xx answers are read and dropped; the final one follows.
            while let Some(head) = parse_head(&mut buf).map_err(Attempt::Failed)? {
                if head.status().is_informational() {
                    continue;
                }
                return Ok((head, buf, stream));
            }
            if buf.len() > MAX_HEAD {
                return Err(Attempt::Failed(Error::Invalid(format!(
                    "response head larger than {MAX_HEAD} bytes"
                ))));
            }
        }
    }
}

/// How one exchange failed: before the request was written (it may go again on a new connection
/// when this one was reused), or after (it may have run: it must not go again).
enum Attempt {
    Unsent(Error),
    Failed(Error),
}

/// Whether an idle connection is still open with nothing to read: a read would block.
fn quiet(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// One read from `stream` into `buf`'s spare capacity.
async fn read_some(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| tokio_util::io::poll_read_buf(Pin::new(&mut *stream), cx, buf)).await
}

/// `host:port` of the URL (port 80 when it gives none; never its userinfo): where to connect,
/// the idle list's key and the `Host` header.
fn host_port(uri: &Uri) -> Option<String> {
    let authority = uri.authority()?;
    if authority.port().is_some() && !authority.as_str().contains('@') {
        return Some(authority.as_str().to_owned());
    }
    Some(format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    ))
}

/// The request as it goes on the wire: head, then body.
fn encode(uri: &Uri, host: &str, method: &Method, headers: &HeaderMap, body: &[u8]) -> Vec<u8> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = Vec::with_capacity(256 + headers.len() * 48 + body.len());
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if matches!(
            *name,
            header::HOST | header::CONTENT_LENGTH | header::CONNECTION | header::TRANSFER_ENCODING
        ) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || !matches!(*method, Method::GET | Method::HEAD | Method::DELETE) {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// One response head from the front of `buf` (consumed), or `None` when more bytes are needed.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Response<()>>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Error::Invalid(e.to_string())),
    };
    let status = parsed
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| Error::Invalid("bad status code".into()))?;
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.version_mut() = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let map = resp.headers_mut();
    map.reserve(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| Error::Invalid(format!("bad header name {:?}", h.name)))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| Error::Invalid(format!("bad value of header {name}")))?;
        map.append(name, value);
    }
    buf.advance(len);
    Ok(Some(resp))
}

/// How the body's end is known.
#[derive(Clone, Copy, Debug)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Chunked, in this part of a chunk.
    Chunked(Chunk),
    /// Until the upstream closes.
    Eof,
    /// Ended.
    Done,
}

#[derive(Clone, Copy, Debug)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk, this many bytes left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailers up to the empty line, this many bytes read.
    Trailers(usize),
}

/// A response body read from the upstream connection as it is polled; the connection goes back to
/// the idle list when the body ends cleanly.
pub struct H1Body {
    stream: Option<TcpStream>,
    buf: BytesMut,
    framing: Framing,
    /// Whether the connection may be used again once the body has ended.
    reuse: bool,
    host: String,
    idle: Arc<Idles>,
}

impl H1Body {
    fn start(
        head: Response<()>,
        buf: BytesMut,
        stream: TcpStream,
        method: &Method,
        host: String,
        idle: &Arc<Idles>,
    ) -> Result<Response<H1Body>, Error> {
        let headers = head.headers();
        let mut reuse = head.version() == Version::HTTP_11
            && !headers
                .get_all(header::CONNECTION)
                .iter()
                .any(|v| has_token(v, "close"));
        let chunked = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .is_some_and(|v| has_token(v, "chunked"));
        let framing = if *method == Method::HEAD
            || head.status() == StatusCode::NO_CONTENT
            || head.status() == StatusCode::NOT_MODIFIED
        {
            Framing::Length(0)
        } else if chunked {
            Framing::Chunked(Chunk::Size)
        } else if let Some(len) = content_length(headers)? {
            Framing::Length(len)
        } else {
            reuse = false;
            Framing::Eof
        };
        let mut body = H1Body {
            stream: Some(stream),
            buf,
            framing,
            reuse,
            host,
            idle: idle.clone(),
        };
        if let Framing::Length(0) = body.framing {
            body.finish();
        }
        Ok(head.map(|()| body))
    }

    /// The body has ended: the connection goes back to the idle list if it can be used again.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(stream) = self.stream.take()
            && self.reuse
            && self.buf.is_empty()
        {
            self.idle.put(&self.host, stream);
        }
    }

    /// Reads more from the upstream; `Ok(false)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, BoxError>> {
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(Ok(false));
        };
        self.buf.reserve(READ_SIZE);
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(stream),
            cx,
            &mut self.buf
        ))?;
        Poll::Ready(Ok(n > 0))
    }

    /// After a read: `None` to go on with more bytes buffered, else what the body answers. The
    /// end of the stream ends the body when it is close-delimited (`eof_ends`) and is an error
    /// anywhere else.
    fn after_fill(
        &mut self,
        filled: Result<bool, BoxError>,
        eof_ends: bool,
    ) -> Option<Option<Result<Frame<Bytes>, BoxError>>> {
        match filled {
            Ok(true) => None,
            Ok(false) if eof_ends => Some(self.stop(None)),
            Ok(false) => Some(self.stop(Some("upstream closed mid-body".into()))),
            Err(e) => Some(self.stop(Some(e))),
        }
    }

    /// Ends the body without giving the connection back (it is closed), with `error` if any.
    fn stop(&mut self, error: Option<BoxError>) -> Option<Result<Frame<Bytes>, BoxError>> {
        self.stream = None;
        self.framing = Framing::Done;
        error.map(Err)
    }

    /// The next step of the chunked decoder over what is buffered: a data frame, the end, or
    /// `None` when more bytes are needed.
    fn step_chunked(&mut self, chunk: Chunk) -> Result<Option<Option<Bytes>>, BoxError> {
        match chunk {
            Chunk::Size => {
                let Some(end) = find_crlf(&self.buf) else {
                    if self.buf.len() > MAX_LINE {
                        return Err("chunk-size line too long".into());
                    }
                    return Ok(None);
                };
                let line = &self.buf[..end];
                let digits = line.split(|b| *b == b';').next().unwrap_or_default();
                let digits = std::str::from_utf8(digits)
                    .map_err(|_| "bad chunk size")?
                    .trim_matches([' ', '\t']);
                if digits.is_empty() || digits.len() > 16 {
                    return Err("bad chunk size".into());
                }
                let size = u64::from_str_radix(digits, 16).map_err(|_| "bad chunk size")?;
                self.buf.advance(end + 2);
                self.framing = Framing::Chunked(if size == 0 {
                    Chunk::Trailers(0)
                } else {
                    Chunk::Data(size)
                });
                Ok(Some(Some(Bytes::new())))
            }
            Chunk::Data(left) => {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let take = (self.buf.len() as u64).min(left) as usize;
                let data = self.buf.split_to(take).freeze();
                let left = left - take as u64;
                self.framing = Framing::Chunked(if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                });
                Ok(Some(Some(data)))
            }
            Chunk::DataEnd => {
                if self.buf.len() < 2 {
                    return Ok(None);
                }
                if &self.buf[..2] != b"\r\n" {
                    return Err("chunk data not followed by CRLF".into());
                }
                self.buf.advance(2);
                self.framing = Framing::Chunked(Chunk::Size);
                Ok(Some(Some(Bytes::new())))
            }
            Chunk::Trailers(seen) => {
                let Some(end) = find_crlf(&self.buf) else {
                    if seen + self.buf.len() > MAX_LINE {
                        return Err("trailers too long".into());
                    }
                    return Ok(None);
                };
                self.buf.advance(end + 2);
                if end == 0 {
                    self.finish();
                    return Ok(Some(None));
                }
                if seen + end > MAX_LINE {
                    return Err("trailers too long".into());
                }
                self.framing = Framing::Chunked(Chunk::Trailers(seen + end + 2));
                Ok(Some(Some(Bytes::new())))
            }
        }
    }
}

impl http_body::Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            match this.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(left) => {
                    if !this.buf.is_empty() {
                        let take = (this.buf.len() as u64).min(left) as usize;
                        let data = this.buf.split_to(take).freeze();
                        this.framing = Framing::Length(left - take as u64);
                        if left == take as u64 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    let filled = ready!(this.poll_fill(cx));
                    if let Some(end) = this.after_fill(filled, false) {
                        return Poll::Ready(end);
                    }
                }
                Framing::Eof => {
                    if !this.buf.is_empty() {
                        let data = this.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    let filled = ready!(this.poll_fill(cx));
                    if let Some(end) = this.after_fill(filled, true) {
                        return Poll::Ready(end);
                    }
                }
                Framing::Chunked(chunk) => match this.step_chunked(chunk) {
                    Ok(Some(Some(data))) if !data.is_empty() => {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(Some(Some(_))) => {} // framing consumed; go on
                    Ok(Some(None)) => return Poll::Ready(None),
                    Ok(None) => {
                        let filled = ready!(this.poll_fill(cx));
                        if let Some(end) = this.after_fill(filled, false) {
                            return Poll::Ready(end);
                        }
                    }
                    Err(e) => return Poll::Ready(this.stop(Some(e))),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// Whether a comma-separated header value holds `token` (case-insensitive).
fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .as_bytes()
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// The one `Content-Length`, if given; differing values are an error.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Error> {
    let mut found: Option<u64> = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for part in v.as_bytes().split(|b| *b == b',') {
            let n = std::str::from_utf8(part.trim_ascii())
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| Error::Invalid("bad content-length".into()))?;
            if found.is_some_and(|f| f != n) {
                return Err(Error::Invalid("conflicting content-length".into()));
            }
            found = Some(n);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::BodyExt as _;
    use tokio::io::AsyncReadExt as _;
    use tokio::net::TcpListener;

    /// A server that answers each request on a connection with the next of `answers` (raw bytes),
    /// recording the requests; returns its URL and the recorded requests.
    async fn server(answers: Vec<&'static [u8]>) -> (Uri, Arc<Mutex<Vec<Vec<u8>>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let mut answers = answers.into_iter();
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                loop {
                    let mut req = vec![0u8; 65536];
                    let n = s.read(&mut req).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    log.lock().unwrap().push(req[..n].to_vec());
                    let Some(a) = answers.next() else { return };
                    if a.is_empty() {
                        break; // close without answering
                    }
                    s.write_all(a).await.unwrap();
                }
            }
        });
        (format!("http://{addr}/mcp").parse().unwrap(), seen)
    }

    async fn body_of(resp: Response<H1Body>) -> Result<Bytes, BoxError> {
        Ok(resp.into_body().collect().await?.to_bytes())
    }

    #[tokio::test]
    async fn lengths_chunks_and_reuse() {
        let (uri, seen) = server(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-type: application/json\r\n\r\nhello",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\ntrailer: t\r\n\r\n",
            b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n",
        ])
        .await;
        let client = Client::new(Duration::from_secs(1));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::HOST, HeaderValue::from_static("evil.example"));
        let resp = client
            .send(&uri, &Method::POST, &headers, b"{}")
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.body().size_hint().exact(), Some(5));
        assert_eq!(body_of(resp).await.unwrap(), "hello");
        let resp = client
            .send(&uri, &Method::POST, &headers, b"{}")
            .await
            .unwrap();
        assert_eq!(body_of(resp).await.unwrap(), "abcde");
        let resp = client
            .send(&uri, &Method::POST, &headers, b"")
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        assert!(resp.body().is_end_stream());
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3, "three requests on one connection");
        let first = String::from_utf8_lossy(&seen[0]);
        assert!(
            first.starts_with("POST /mcp HTTP/1.1\r\nhost: 127.0.0.1:"),
            "{first}"
        );
        assert!(
            !first.contains("evil.example"),
            "the client's Host never goes up: {first}"
        );
        assert!(first.ends_with("content-length: 2\r\n\r\n{}"), "{first}");
    }

    #[test]
    fn the_host_is_host_and_port_without_userinfo() {
        let at = |u: &str| host_port(&u.parse().unwrap());
        assert_eq!(
            at("http://127.0.0.1:9000/mcp").as_deref(),
            Some("127.0.0.1:9000")
        );
        assert_eq!(
            at("http://db.internal/mcp").as_deref(),
            Some("db.internal:80")
        );
        assert_eq!(
            at("http://u:p@db.internal:81/").as_deref(),
            Some("db.internal:81")
        );
        assert_eq!(at("http://[::1]:9000/").as_deref(), Some("[::1]:9000"));
        assert_eq!(at("/relative"), None);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_replaced() {
        // The first connection answers once and is closed by the server at once.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(0));
        let count = seen.clone();
        tokio::spawn(async move {
            for answer in [
                &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"[..],
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nagain",
            ] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut req = vec![0u8; 65536];
                let _ = s.read(&mut req).await;
                *count.lock().unwrap() += 1;
                s.write_all(answer).await.unwrap();
            }
        });
        let uri: Uri = format!("http://{addr}/mcp").parse().unwrap();
        let client = Client::new(Duration::from_secs(1));
        let h = HeaderMap::new();
        let r = client.send(&uri, &Method::POST, &h, b"1").await.unwrap();
        assert_eq!(body_of(r).await.unwrap(), "ok");
        tokio::time::sleep(QUIET_CHECK_AFTER + Duration::from_millis(100)).await;
        let r = client.send(&uri, &Method::POST, &h, b"2").await.unwrap();
        assert_eq!(body_of(r).await.unwrap(), "again");
        assert_eq!(*seen.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn a_request_written_is_never_sent_twice() {
        // The server reads the second request and closes without answering: it may have run
        // the call, so the client reports the failure instead of sending it again.
        let (uri, seen) = server(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            b"",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nagain",
        ])
        .await;
        let client = Client::new(Duration::from_secs(1));
        let h = HeaderMap::new();
        let r = client.send(&uri, &Method::POST, &h, b"1").await.unwrap();
        assert_eq!(body_of(r).await.unwrap(), "ok");
        let failed = client.send(&uri, &Method::POST, &h, b"2").await;
        assert!(
            matches!(failed, Err(Error::Closed)),
            "{:?}",
            failed.map(|r| r.status())
        );
        assert_eq!(seen.lock().unwrap().len(), 2, "the call went up once");
    }

    /// A server that answers one request with `answer` and closes.
    async fn one_shot(answer: &'static [u8]) -> Uri {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = vec![0u8; 65536];
            let _ = s.read(&mut req).await;
            let _ = s.write_all(answer).await;
        });
        format!("http://{addr}/mcp").parse().unwrap()
    }

    #[tokio::test]
    async fn an_idle_connection_holding_unasked_bytes_is_not_used() {
        // The server answers, then writes a 408 while the connection sits idle, then answers
        // the next request (on a new connection) properly.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = vec![0u8; 65536];
            let _ = s.read(&mut req).await;
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst")
                .await
                .unwrap();
            s.write_all(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            let (mut s2, _) = listener.accept().await.unwrap();
            let _ = s2.read(&mut req).await;
            s2.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond")
                .await
                .unwrap();
            let _ = s.read(&mut req).await; // keep the first connection open meanwhile
        });
        let uri: Uri = format!("http://{addr}/mcp").parse().unwrap();
        let client = Client::new(Duration::from_secs(1));
        let h = HeaderMap::new();
        let r = client.send(&uri, &Method::POST, &h, b"1").await.unwrap();
        assert_eq!(body_of(r).await.unwrap(), "first");
        tokio::time::sleep(QUIET_CHECK_AFTER + Duration::from_millis(100)).await;
        let r = client.send(&uri, &Method::POST, &h, b"2").await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "not the 408 written while idle");
        assert_eq!(body_of(r).await.unwrap(), "second");
    }

    #[tokio::test]
    async fn broken_answers_are_errors() {
        for answer in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"[..],
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
            b"NOT HTTP\r\n\r\n",
        ] {
            let uri = one_shot(answer).await;
            let client = Client::new(Duration::from_secs(1));
            let result = match client
                .send(&uri, &Method::POST, &HeaderMap::new(), b"x")
                .await
            {
                Ok(resp) => body_of(resp).await.map(|_| ()),
                Err(e) => Err(e.into()),
            };
            assert!(result.is_err(), "{:?}", String::from_utf8_lossy(answer));
        }
        let closed = Client::new(Duration::from_secs(1));
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let uri: Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
        assert!(matches!(
            closed
                .send(&uri, &Method::POST, &HeaderMap::new(), b"x")
                .await,
            Err(Error::Connect(_))
        ));
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_returns_the_connection_and_a_dropped_one_does_not() {
        let (uri, _) = server(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ])
        .await;
        let client = Client::new(Duration::from_secs(1));
        let h = HeaderMap::new();
        let r = client.send(&uri, &Method::POST, &h, b"1").await.unwrap();
        drop(r);
        assert!(
            client
                .idle
                .take(uri.authority().unwrap().as_str())
                .is_none()
        );
        let r = client.send(&uri, &Method::POST, &h, b"2").await.unwrap();
        body_of(r).await.unwrap();
        assert!(
            client
                .idle
                .take(uri.authority().unwrap().as_str())
                .is_some()
        );
    }
}

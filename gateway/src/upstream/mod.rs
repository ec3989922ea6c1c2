//! Reaching upstream MCP servers. [`Upstream::forward`] is the one way out, for both endpoints:
//! one pooled HTTP client for `http://` servers and one per distinct TLS setting for `https://`
//! ones (`tls.rs`), the server's configured headers added, the client's
//! token and hop-by-hop headers never passed on; it answers an [`UpstreamResponse`], whose body
//! type has a variant per transport (a stdio server is the next). `client.rs` is the gateway as an
//! MCP client of its upstreams (sessions, revision discovery, lists), built on `forward`.

pub mod client;
pub mod fence;
pub mod h1;
pub mod stdio;
pub mod tls;

use crate::identity::ServerView;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;

/// Why an upstream could not be reached. Each becomes a JSON-RPC error naming the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server's URL cannot be used.
    #[error("upstream {server} has an unusable url: {reason}")]
    Url {
        /// Server name.
        server: String,
        /// Why.
        reason: String,
    },
    /// A configured header's environment variable is not set.
    #[error("upstream {server} needs environment variable {var}, which is not set")]
    MissingEnv {
        /// Server name.
        server: String,
        /// Variable name.
        var: String,
    },
    /// Connecting or sending failed.
    #[error("upstream {server} unreachable: {reason}")]
    Unreachable {
        /// Server name.
        server: String,
        /// Why.
        reason: String,
    },
    /// A session with the upstream could not be opened or kept.
    #[error("upstream {server}: {reason}")]
    Session {
        /// Server name.
        server: String,
        /// Why.
        reason: String,
    },
    /// An answer the gateway reads whole (a list, an initialize) could not be read.
    #[error("upstream {server} answer: {reason}")]
    Answer {
        /// Server name.
        server: String,
        /// Why.
        reason: String,
    },
    /// The TLS handshake with an `https://` upstream failed, or its TLS files cannot be used:
    /// the reason in words (`certificate expired`, `unknown issuer`, `name mismatch`, a file
    /// and what is wrong with it).
    #[error("upstream {server}: TLS: {reason}")]
    Tls {
        /// Server name.
        server: String,
        /// Why, in words.
        reason: String,
    },
    /// A stdio server's process could not be started, or it failed.
    #[error("upstream {server}: {reason}")]
    Process {
        /// Server name.
        server: String,
        /// Why.
        reason: String,
    },
    /// No response headers within the timeout.
    #[error("upstream {server} did not answer within {0:?}", .timeout)]
    Timeout {
        /// Server name.
        server: String,
        /// The limit.
        timeout: Duration,
    },
}

/// MCP's own header names, built at compile time: looking a header up by `&str` parses and
/// lower-cases the name on every call.
pub static MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
/// `Mcp-Protocol-Version`.
pub static MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// `Mcp-Method` (2026-07-28).
pub static MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
/// `Mcp-Name` (2026-07-28).
pub static MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
/// `X-Accel-Buffering`.
pub static X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// Headers a client may send that the upstream needs to see. Everything else (the client's
/// `Authorization`, cookies, hop-by-hop headers, `Host`) stays at the gateway.
static FORWARDED_REQUEST_HEADERS: [HeaderName; 8] = [
    header::ACCEPT,
    header::CONTENT_TYPE,
    HeaderName::from_static("mcp-session-id"),
    HeaderName::from_static("mcp-protocol-version"),
    HeaderName::from_static("last-event-id"),
    HeaderName::from_static("mcp-method"),
    HeaderName::from_static("mcp-name"),
    header::USER_AGENT,
];

/// Response headers relayed back to the client.
static FORWARDED_RESPONSE_HEADERS: [HeaderName; 7] = [
    header::CONTENT_TYPE,
    HeaderName::from_static("mcp-session-id"),
    HeaderName::from_static("mcp-protocol-version"),
    header::CACHE_CONTROL,
    HeaderName::from_static("x-accel-buffering"),
    header::RETRY_AFTER,
    header::ALLOW,
];

/// What an upstream answers with: a streaming body. One variant per transport, so the relay
/// serves every kind of upstream alike without boxing the body.
pub enum UpstreamBody {
    /// The body of an `http://` upstream's response, read from its connection (`h1.rs`).
    H1(h1::H1Body),
    /// The body of an `https://` upstream's response (hyper's client).
    Http(Incoming),
    /// A stdio server's answer (a whole document or an SSE stream).
    Stdio(stdio::StdioBody),
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = crate::mcp::sse::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            UpstreamBody::H1(b) => std::pin::Pin::new(b).poll_frame(cx),
            UpstreamBody::Http(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as Self::Error),
            UpstreamBody::Stdio(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as Self::Error),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::H1(b) => b.is_end_stream(),
            UpstreamBody::Http(b) => b.is_end_stream(),
            UpstreamBody::Stdio(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            UpstreamBody::H1(b) => b.size_hint(),
            UpstreamBody::Http(b) => b.size_hint(),
            UpstreamBody::Stdio(b) => b.size_hint(),
        }
    }
}

/// An upstream's response.
pub type UpstreamResponse = Response<UpstreamBody>;

/// The clients: one for `http://` (`h1.rs`), one per distinct TLS setting for `https://`, and
/// the stdio servers' processes.
#[derive(Clone)]
pub struct Upstream {
    h1: h1::Client,
    https: Arc<tls::Clients>,
    stdio: Arc<stdio::Stdio>,
    connect_timeout: Duration,
    response_timeout: Duration,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Upstream {
    /// A client with these timeouts.
    pub fn new(
        connect_timeout: Duration,
        response_timeout: Duration,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Upstream {
        Upstream {
            h1: h1::Client::new(connect_timeout),
            https: Arc::new(tls::Clients::new(connect_timeout)),
            stdio: stdio::Stdio::new(stdio::StdioSettings {
                response_timeout,
                ..Default::default()
            }),
            connect_timeout,
            response_timeout,
            metrics,
        }
    }

    /// The same client with stdio servers run under these settings.
    pub fn with_stdio(mut self, settings: stdio::StdioSettings) -> Upstream {
        self.stdio = stdio::Stdio::new(settings);
        self
    }

    /// The HTTPS clients (also used to reach identity providers).
    pub fn https(&self) -> &Arc<tls::Clients> {
        &self.https
    }

    /// The stdio servers' processes (status, shutdown).
    pub fn stdio(&self) -> &Arc<stdio::Stdio> {
        &self.stdio
    }

    /// Sends `method` with `body` to `server`, copying the allowed headers from `incoming` and
    /// adding the server's own. Resolves when the response headers arrive; the body streams.
    pub async fn forward(
        &self,
        server: &ServerView,
        method: Method,
        incoming: &HeaderMap,
        body: Bytes,
    ) -> Result<UpstreamResponse, Error> {
        if let Some(spec) = server.transport.stdio() {
            let sent = std::time::Instant::now();
            let resp = self
                .stdio
                .forward(server, spec, method, incoming, body)
                .await;
            self.metrics.upstream_latency.observe(sent.elapsed());
            return resp;
        }
        let url_error = |reason: String| Error::Url {
            server: server.name.clone(),
            reason,
        };
        let uri: http::Uri = match &server.uri {
            Some(uri) => uri.clone(),
            None => server
                .url
                .parse()
                .map_err(|e: http::uri::InvalidUri| url_error(e.to_string()))?,
        };
        // The scheme picks the client; an https:// URL only ever goes through a TLS client.
        let https = match uri.scheme_str() {
            Some("http") => None,
            Some("https") => Some(self.https.client(server)?),
            _ => {
                return Err(url_error("the scheme must be http:// or https://".into()));
            }
        };
        let mut headers = HeaderMap::with_capacity(FORWARDED_REQUEST_HEADERS.len() + 4);
        for name in &FORWARDED_REQUEST_HEADERS {
            for value in incoming.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        for (name, value) in incoming {
            // `Mcp-Param-*` headers (2026-07-28) must reach the server unchanged.
            if name.as_str().starts_with("mcp-param-") {
                headers.append(name.clone(), value.clone());
            }
        }
        for h in &server.headers {
            let value = match (&h.value, &h.env) {
                (Some(v), _) => v.clone(),
                (None, Some(var)) => std::env::var(var).map_err(|_| Error::MissingEnv {
                    server: server.name.clone(),
                    var: var.clone(),
                })?,
                (None, None) => continue,
            };
            let name =
                HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| url_error(e.to_string()))?;
            let value = HeaderValue::from_str(&value).map_err(|e| url_error(e.to_string()))?;
            headers.insert(name, value);
        }
        let sent = std::time::Instant::now();
        let timed_out = || Error::Timeout {
            server: server.name.clone(),
            timeout: self.response_timeout,
        };
        let Some(client) = https else {
            let request = self.h1.send(&uri, &method, &headers, &body);
            let result = tokio::time::timeout(self.response_timeout, request).await;
            self.metrics.upstream_latency.observe(sent.elapsed());
            return match result {
                Err(_) => Err(timed_out()),
                Ok(Err(e)) => Err(Error::Unreachable {
                    server: server.name.clone(),
                    reason: error_chain(&e),
                }),
                Ok(Ok(resp)) => Ok(resp.map(UpstreamBody::H1)),
            };
        };
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(h) = req.headers_mut() {
            *h = headers;
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| url_error(e.to_string()))?;
        let uri = req.uri().clone();
        let result = tokio::time::timeout(self.response_timeout, client.client.request(req)).await;
        self.metrics.upstream_latency.observe(sent.elapsed());
        match result {
            Err(_) => Err(timed_out()),
            Ok(Err(e)) => {
                let files = server.transport.tls();
                let host = uri.host().unwrap_or(&server.url);
                let mut reason = tls::reason(&e, files, host);
                if reason.is_none() && tls::closed_before_use(&e) {
                    tracing::debug!(server = %server.name, "new upstream connection closed before use; asking again for the TLS reason");
                    reason = tls::probe(&client, &uri, files, self.connect_timeout).await;
                }
                if let Some(reason) = reason {
                    return Err(Error::Tls {
                        server: server.name.clone(),
                        reason,
                    });
                }
                Err(Error::Unreachable {
                    server: server.name.clone(),
                    reason: error_chain(&e),
                })
            }
            Ok(Ok(resp)) => Ok(resp.map(UpstreamBody::Http)),
        }
    }
}

/// An error and its sources, in one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut reason = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        reason = format!("{reason}: {s}");
        source = s.source();
    }
    reason
}

/// The upstream response headers the client should see.
pub fn response_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in &FORWARDED_RESPONSE_HEADERS {
        for value in upstream.get_all(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// True when a response is an SSE stream.
pub fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

//! Accept loops for the MCP and admin listeners: a connection limit, HTTP/1.1 with bounded
//! headers and a header-read timeout, and graceful shutdown (stop accepting, let in-flight
//! requests finish within a bound, then close).

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Bounds of one listener.
#[derive(Clone, Debug)]
pub struct ListenerLimits {
    /// Concurrent connections; more are closed at once (and logged).
    pub max_connections: usize,
    /// Largest request head (request line plus headers).
    pub max_header_bytes: usize,
    /// Time a client has to send its request head.
    pub header_timeout: Duration,
    /// Time in-flight requests get to finish after shutdown is signalled.
    pub drain_timeout: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_connections: 1024,
            max_header_bytes: 64 * 1024,
            header_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `handler` on `listener` until `shutdown` resolves, then drains.
pub async fn serve<H, F, B>(
    name: &'static str,
    listener: TcpListener,
    limits: ListenerLimits,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(shutdown);
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(listener = name, %peer, "connection limit reached; closing");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192))
            .serve_connection(TokioIo::new(stream), hyper::service::service_fn(handler));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(listener = name, %peer, error = %e, "connection ended");
            }
            drop(permit);
        });
    }
    tracing::info!(listener = name, "draining connections");
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            "connections still open after the drain timeout; closing them"
        );
    }
}

//! Accept loops for the MCP and admin listeners: a connection limit, optional TLS (certificate
//! and key files reloaded when they change), HTTP/1.1 with bounded headers and a header-read
//! timeout, and graceful shutdown (stop accepting, let in-flight requests finish within a bound,
//! then close).

use crate::tls::{self, Stamp};
use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How often a TLS listener's files are checked for a change.
const TLS_RECHECK: Duration = Duration::from_secs(1);

/// A listener's certificate chain and private key (PEM files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key of the leaf.
    pub key: PathBuf,
}

/// TLS on a listener. The files are checked every second; when either changed, both are read
/// again and the new certificate serves every handshake from then on, while established
/// connections carry on untouched. A new pair that does not load (unreadable, not PEM, key and
/// certificate not matching) is logged as an error and the previous certificate keeps serving.
pub struct Tls {
    name: &'static str,
    files: CertFiles,
    current: Arc<Current>,
    acceptor: tokio_rustls::TlsAcceptor,
    /// The files as they were when last examined.
    seen: std::sync::Mutex<Stamp>,
}

/// The certificate handshakes get: swapped whole on reload.
#[derive(Debug)]
struct Current(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

impl Tls {
    /// Reads the files and builds the listener's TLS configuration (HTTP/1.1 over ALPN).
    pub fn load(name: &'static str, files: CertFiles) -> Result<Tls, tls::Error> {
        let stamp = stamp(&files);
        let key = certified(&files)?;
        let current = Arc::new(Current(ArcSwap::from_pointee(key)));
        let mut config = rustls::ServerConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(tls::config_error)?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            name,
            files,
            current,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            seen: std::sync::Mutex::new(stamp),
        })
    }

    /// Reads the files again if they changed since last examined. A failure keeps the current
    /// certificate; the same bad files are not read (nor logged) again until they change.
    pub fn reload_if_changed(&self) {
        let now = stamp(&self.files);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == now {
                return;
            }
            *seen = now;
        }
        match certified(&self.files) {
            Ok(key) => {
                self.current.0.store(Arc::new(key));
                tracing::info!(
                    listener = self.name,
                    cert = %self.files.cert.display(),
                    "TLS certificate reloaded"
                );
            }
            Err(e) => tracing::error!(
                listener = self.name,
                error = %e,
                "new TLS certificate or key does not load; keeping the previous one"
            ),
        }
    }

    async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(TLS_RECHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let tls = self.clone();
            // A stat of two files, and on a change reading them: kept off the async threads.
            let _ = tokio::task::spawn_blocking(move || tls.reload_if_changed()).await;
        }
    }
}

fn stamp(files: &CertFiles) -> Stamp {
    Stamp::of([files.cert.as_path(), files.key.as_path()])
}

fn certified(files: &CertFiles) -> Result<CertifiedKey, tls::Error> {
    let chain = tls::read_certs(&files.cert)?;
    let key = tls::read_key(&files.key)?;
    CertifiedKey::from_der(chain, key, &tls::provider()).map_err(tls::config_error)
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Bounds of one listener.
#[derive(Clone, Debug)]
pub struct ListenerLimits {
    /// Concurrent connections; more are closed at once (and logged).
    pub max_connections: usize,
    /// Largest request head (request line plus headers).
    pub max_header_bytes: usize,
    /// Time a client has to send its request head; on a TLS listener also the time it has to
    /// complete the handshake.
    pub header_timeout: Duration,
    /// Time in-flight requests get to finish after shutdown is signalled.
    pub drain_timeout: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_connections: 1024,
            // Room for an oversized bearer token (up to 64 KiB) to reach authentication and be
            // refused there with a 401 and an audit record, not a bare 431.
            max_header_bytes: 96 * 1024,
            header_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `handler` on `listener` (over TLS when `tls` is given) until `shutdown` resolves, then
/// drains.
pub async fn serve<H, F, B>(
    name: &'static str,
    listener: TcpListener,
    limits: ListenerLimits,
    tls: Option<Arc<Tls>>,
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
    let _watch = tls
        .as_ref()
        .map(|t| AbortOnDrop(tokio::spawn(t.clone().watch())));
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
        let service = hyper::service::service_fn(handler.clone());
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192));
        // Taken now, so that a shutdown signalled during a TLS handshake still waits for (and
        // then gracefully closes) the connection.
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let ended = match tls {
                None => {
                    watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                Some(tls) => {
                    match tokio::time::timeout(header_timeout, tls.acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            watcher
                                .watch(http.serve_connection(TokioIo::new(stream), service))
                                .await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(listener = name, %peer, error = %e, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            tracing::debug!(listener = name, %peer, "TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = ended {
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

//! HTTPS upstreams: one pooled hyper client per distinct TLS setting, so servers with different
//! trust roots or client certificates never share a connection.
//!
//! - Without TLS files a server uses the shared default client, which trusts the platform's
//!   roots (read once, on the first `https://` request).
//! - `ca_file` replaces the roots for that server; `client_cert` + `client_key` add a client
//!   certificate (mTLS). Each distinct set of files has its own client, built on first use and
//!   kept; at most once a second per set, on use, the files' stamps (mtime, size, inode) are
//!   checked, and changed files are read again into a new client (new connections use them;
//!   open ones finish on the old). A new file that does not load keeps the last good client and
//!   is logged; a set that has never loaded answers with the file's error.
//! - The connectors are HTTPS-only: an `https://` URL is never sent in plain text. SNI and the
//!   name checked are the URL's host. HTTP/1.1 only (see docs/architecture.md).
//! - A failed handshake becomes [`super::Error::Tls`] with the reason in words ([`reason`]).

use super::Error;
use crate::identity::ServerView;
use crate::store::TlsFiles;
use crate::tls::{self, Stamp};
use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::{AlertDescription as Alert, CertificateError, RootCertStore};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A pooled HTTPS client and the TLS settings it was built from (kept for [`probe`]).
#[derive(Clone)]
pub struct HttpsClient {
    /// The pooled client.
    pub client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    config: Arc<rustls::ClientConfig>,
}

/// How long [`probe`] waits, after its handshake, for the upstream to say why it closes.
const PROBE_WAIT: Duration = Duration::from_secs(1);

/// How often, at most, a set of TLS files is checked for changes.
const RECHECK: Duration = Duration::from_secs(1);
/// A client for a set of files unused this long is forgotten (with its pool) when another set is
/// first used.
const IDLE: Duration = Duration::from_secs(600);

/// The key of a set of TLS files (`TlsFiles` itself is not `Hash`).
type Key = (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>);

/// The HTTPS clients of one gateway process.
pub struct Clients {
    connect_timeout: Duration,
    /// The platform's trust roots, read on first use.
    roots: OnceLock<Arc<RootCertStore>>,
    /// The client for servers without TLS files.
    default: OnceLock<HttpsClient>,
    /// A client per distinct set of files.
    custom: Mutex<HashMap<Key, Custom>>,
}

struct Custom {
    client: HttpsClient,
    /// The files as they were when `client` was built.
    loaded: Stamp,
    /// The files as they were when last examined (a failed load is not retried until they
    /// change again).
    seen: Stamp,
    checked: Instant,
    used: Instant,
}

impl Clients {
    /// No client yet; they are built on first use.
    pub fn new(connect_timeout: Duration) -> Clients {
        Clients {
            connect_timeout,
            roots: OnceLock::new(),
            default: OnceLock::new(),
            custom: Mutex::new(HashMap::new()),
        }
    }

    /// The client for `server` (its TLS files, or none).
    pub fn client(&self, server: &ServerView) -> Result<HttpsClient, Error> {
        self.for_files(&server.name, server.transport.tls())
    }

    /// The client for a set of TLS files (none: the platform's roots); `name` is what errors
    /// and logs call its user (a server, an identity provider).
    pub fn for_files(&self, name: &str, files: Option<&TlsFiles>) -> Result<HttpsClient, Error> {
        let files = files.filter(|f| !f.is_empty());
        let Some(files) = files else {
            if let Some(client) = self.default.get() {
                return Ok(client.clone());
            }
            let client = self.load(&TlsFiles::default()).map_err(|e| Error::Tls {
                server: name.to_owned(),
                reason: e.to_string(),
            })?;
            return Ok(self.default.get_or_init(|| client).clone());
        };
        let key: Key = (
            files.ca_file.clone(),
            files.client_cert.clone(),
            files.client_key.clone(),
        );
        let now = Instant::now();
        // The lock is held while the files are examined and, when they changed, read: a few
        // small files, at most once a second per set; every other request only clones a client.
        let mut custom = self.custom.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = custom.get_mut(&key) {
            c.used = now;
            if now.duration_since(c.checked) < RECHECK {
                return Ok(c.client.clone());
            }
            c.checked = now;
            let stamp = stamp(files);
            if stamp == c.loaded || stamp == c.seen {
                return Ok(c.client.clone());
            }
            c.seen = stamp.clone();
            match self.load(files) {
                Ok(client) => {
                    tracing::info!(server = %name, "upstream TLS files changed; reloaded");
                    c.client = client;
                    c.loaded = stamp;
                }
                Err(e) => tracing::error!(
                    server = %name, error = %e,
                    "upstream TLS files changed but do not load; keeping the last good ones"
                ),
            }
            return Ok(c.client.clone());
        }
        let stamp = stamp(files);
        let client = self.load(files).map_err(|e| Error::Tls {
            server: name.to_owned(),
            reason: e.to_string(),
        })?;
        custom.retain(|_, c| now.duration_since(c.used) < IDLE);
        custom.insert(
            key,
            Custom {
                client: client.clone(),
                loaded: stamp.clone(),
                seen: stamp,
                checked: now,
                used: now,
            },
        );
        Ok(client)
    }

    /// Reads the platform's trust roots once; a root that does not parse is skipped (logged).
    fn platform_roots(&self) -> Arc<RootCertStore> {
        self.roots
            .get_or_init(|| {
                let found = rustls_native_certs::load_native_certs();
                for e in &found.errors {
                    tracing::warn!(error = %e, "reading the platform's trust roots");
                }
                let mut roots = RootCertStore::empty();
                let (added, ignored) = roots.add_parsable_certificates(found.certs);
                if ignored > 0 {
                    tracing::warn!(
                        ignored,
                        "platform trust roots that do not parse were skipped"
                    );
                }
                if added == 0 {
                    tracing::warn!(
                        "no platform trust roots found: https upstreams without a ca_file will fail"
                    );
                }
                Arc::new(roots)
            })
            .clone()
    }

    /// A client for one set of files.
    fn load(&self, files: &TlsFiles) -> Result<HttpsClient, tls::Error> {
        let roots = match &files.ca_file {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in tls::read_certs(path)? {
                    roots.add(cert).map_err(|e| tls::Error::File {
                        path: path.clone(),
                        reason: format!("not a usable CA certificate: {e}"),
                    })?;
                }
                Arc::new(roots)
            }
            None => self.platform_roots(),
        };
        let identity = match (&files.client_cert, &files.client_key) {
            (Some(cert), Some(key)) => Some((tls::read_certs(cert)?, tls::read_key(key)?)),
            (None, None) => None,
            _ => {
                return Err(tls::Error::Config(
                    "client_cert and client_key go together".into(),
                ));
            }
        };
        let builder = rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(tls::config_error)?
            .with_root_certificates(roots);
        let config = match identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(tls::config_error)?,
            None => builder.with_no_client_auth(),
        };
        Ok(self.build_config(config))
    }

    fn build_config(&self, config: rustls::ClientConfig) -> HttpsClient {
        let probe_config = Arc::new(config.clone());
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(self.connect_timeout));
        http.set_nodelay(true);
        // `https_only` with HttpConnector's own scheme check off: an http:// URI is refused by
        // the connector instead of being sent in plain text.
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        // Idle connections are kept up to the MCP listener's connection limit (each client
        // connection has at most one request upstream at a time): a TLS handshake costs far
        // more than a TCP connect, and with 64 kept, 64 concurrent callers made the pool close
        // and reopen connections all the time (measured with mcpgw-load, target h: over 500
        // handshakes in 6 s, 2,400-3,000 req/s and p99 ~100 ms, against ~5,100 req/s and p99
        // ~35 ms with 1,024). Idle ones still close after 60 s.
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .build(connector);
        HttpsClient {
            client,
            config: probe_config,
        }
    }
}

fn stamp(files: &TlsFiles) -> Stamp {
    Stamp::of(
        [&files.ca_file, &files.client_cert, &files.client_key]
            .into_iter()
            .flatten()
            .map(|p| p.as_path()),
    )
}

/// The TLS failure in an error chain, in words, if there is one: certificate problems found by
/// the gateway, and alerts the upstream sent (with TLS 1.3 a refused client certificate is only
/// reported once the request is under way, so this also reads request errors).
/// `host` is the URL's host, the name the certificate must carry.
pub fn reason(
    error: &(dyn std::error::Error + 'static),
    files: Option<&TlsFiles>,
    host: &str,
) -> Option<String> {
    let e = find_rustls(error)?;
    let has_ca = files.is_some_and(|f| f.ca_file.is_some());
    let has_cert = files.is_some_and(|f| f.client_cert.is_some());
    Some(match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate not yet valid".into()
            }
            CertificateError::UnknownIssuer if has_ca => {
                "unknown issuer (not signed by a CA in the server's ca_file)".into()
            }
            CertificateError::UnknownIssuer => {
                "unknown issuer (not trusted: give --ca-file)".into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("name mismatch (the certificate is not for {host})")
            }
            CertificateError::Revoked => "certificate revoked".into(),
            CertificateError::BadSignature => "certificate signature invalid".into(),
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "certificate not valid for a TLS server".into()
            }
            other => format!("invalid certificate ({other:?})"),
        },
        rustls::Error::AlertReceived(alert) => match alert {
            Alert::CertificateRequired => "the server requires a client certificate".into(),
            Alert::HandshakeFailure | Alert::BadCertificate | Alert::CertificateUnknown
                if !has_cert =>
            {
                "the server requires a client certificate".into()
            }
            Alert::BadCertificate
            | Alert::UnsupportedCertificate
            | Alert::CertificateRevoked
            | Alert::CertificateExpired
            | Alert::CertificateUnknown
            | Alert::UnknownCA
            | Alert::AccessDenied
            | Alert::DecryptError
            | Alert::HandshakeFailure
                if has_cert =>
            {
                format!(
                    "client certificate refused (the server said: {})",
                    words(alert)
                )
            }
            other => format!("the server ended the handshake ({})", words(other)),
        },
        other => format!("handshake failed: {other}"),
    })
}

/// True when a request failed because its new connection closed before the request went out
/// (or before any answer came): with TLS 1.3 that is how an upstream refusing the client
/// certificate often looks, because its alert arrives after the client's side of the handshake
/// is done, and the pooled client drops the connection's own error.
pub fn closed_before_use(error: &hyper_util::client::legacy::Error) -> bool {
    if error.is_connect() {
        return false;
    }
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            return h.is_canceled() || h.is_incomplete_message();
        }
        next = e.source();
    }
    false
}

/// Why an upstream closes new connections, found by asking it again: a fresh connection with
/// the same TLS settings, the handshake, then up to [`PROBE_WAIT`] for the upstream's alert.
/// Nothing is sent over it. Only used on the failure path ([`closed_before_use`]); `None` when
/// the second connection shows no TLS reason.
pub async fn probe(
    client: &HttpsClient,
    uri: &http::Uri,
    files: Option<&TlsFiles>,
    connect_timeout: Duration,
) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let host = uri.host()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(bare.to_owned()).ok()?;
    let port = uri.port_u16().unwrap_or(443);
    let connector = tokio_rustls::TlsConnector::from(client.config.clone());
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect((bare, port)).await.ok()?;
        Some(connector.connect(name, tcp).await)
    };
    let mut stream = match tokio::time::timeout(connect_timeout, handshake).await {
        Ok(Some(Ok(stream))) => stream,
        Ok(Some(Err(e))) => return reason(&e, files, bare),
        Ok(None) | Err(_) => return None,
    };
    let mut byte = [0u8; 1];
    match tokio::time::timeout(PROBE_WAIT, stream.read(&mut byte)).await {
        Ok(Err(e)) => reason(&e, files, bare),
        Ok(Ok(_)) | Err(_) => None,
    }
}

/// A TLS alert in words.
fn words(alert: &Alert) -> String {
    match alert {
        Alert::BadCertificate => "bad certificate".into(),
        Alert::UnsupportedCertificate => "unsupported certificate".into(),
        Alert::CertificateRevoked => "certificate revoked".into(),
        Alert::CertificateExpired => "certificate expired".into(),
        Alert::CertificateUnknown => "certificate unknown".into(),
        Alert::UnknownCA => "unknown CA".into(),
        Alert::AccessDenied => "access denied".into(),
        Alert::DecryptError => "signature check failed".into(),
        Alert::HandshakeFailure => "handshake failure".into(),
        Alert::ProtocolVersion => "no TLS version in common".into(),
        Alert::NoApplicationProtocol => "no application protocol in common".into(),
        other => format!("{other:?}"),
    }
}

/// The rustls error in a chain: connectors and hyper wrap it in `io::Error`s, whose `source`
/// skips the error they carry, so each one's payload is looked into as well.
fn find_rustls<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(r) = find_rustls(inner)
        {
            return Some(r);
        }
        next = e.source();
    }
    None
}

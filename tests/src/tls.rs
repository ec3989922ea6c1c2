//! TLS for the tests: a test CA made with rcgen, certificates it signs (valid, expired, for
//! another name, for clients), rmcp's Streamable HTTP server served over rustls, and a raw TLS
//! client that shows which certificate a server presents.

use crate::upstream::Demo;
use http_body_util::BodyExt as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The provider the tests' TLS uses (the gateway's own: ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    mcpgw::tls::provider()
}

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
    /// The CA certificate, DER.
    pub der: CertificateDer<'static>,
}

/// What a certificate is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A TLS server.
    Server,
    /// A TLS client (mTLS).
    Client,
}

/// A certificate and its key.
pub struct Issued {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM (PKCS#8).
    pub key_pem: String,
    /// Certificate, DER: what a peer presents.
    pub der: CertificateDer<'static>,
}

impl Issued {
    /// Writes `{stem}.crt` and `{stem}.key` in `dir`; their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }

    /// The rustls form of the chain and key.
    pub fn rustls(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            vec![self.der.clone()],
            PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key"),
        )
    }
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA cert");
        TestCa {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes the CA certificate to `dir/name`; its path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.pem).expect("write CA");
        path
    }

    /// The CA as the only root of a rustls store.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).expect("CA root");
        roots
    }

    /// A certificate for `names` (DNS names or IP addresses) with common name `cn` and serial
    /// `serial`, valid from 2020 to 2100, or expired (2019 to 2020) when `expired`.
    pub fn issue(
        &self,
        names: &[&str],
        cn: &str,
        serial: u64,
        usage: Usage,
        expired: bool,
    ) -> Issued {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        (params.not_before, params.not_after) = if expired {
            (
                rcgen::date_time_ymd(2019, 1, 1),
                rcgen::date_time_ymd(2020, 1, 1),
            )
        } else {
            (
                rcgen::date_time_ymd(2020, 1, 1),
                rcgen::date_time_ymd(2100, 1, 1),
            )
        };
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// A server certificate for `127.0.0.1` and `localhost`.
    pub fn server(&self, cn: &str, serial: u64) -> Issued {
        self.issue(
            &["127.0.0.1", "localhost"],
            cn,
            serial,
            Usage::Server,
            false,
        )
    }
}

/// A rustls server configuration presenting `cert`; with `client_ca`, clients must present a
/// certificate it signed.
pub fn server_config(cert: &Issued, client_ca: Option<&TestCa>) -> rustls::ServerConfig {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(ca.roots()),
                provider(),
            )
            .build()
            .expect("client verifier"),
        ),
        None => builder.with_no_client_auth(),
    };
    let (chain, key) = cert.rustls();
    let mut config = builder.with_single_cert(chain, key).expect("server cert");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// The tests' rmcp server (2025-11-25 sessions) on `127.0.0.1:0` over HTTPS; stops when dropped.
pub struct HttpsUpstream {
    /// Its MCP endpoint, `https://127.0.0.1:PORT/mcp`.
    pub url: String,
    /// `tools/call`s it has started.
    pub calls: Arc<AtomicUsize>,
    /// TLS handshakes it refused (for example a client without a certificate).
    pub refused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpsUpstream {
    /// Serves the test tools over TLS with `config`.
    pub async fn start(config: rustls::ServerConfig) -> HttpsUpstream {
        let calls = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let service = StreamableHttpService::new(
            move || Ok(Demo::new(c.clone())),
            Arc::new(LocalSessionManager::default()),
            StreamableHttpServerConfig::default().with_legacy_session_mode(true),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind https upstream");
        let url = format!("https://{}/mcp", listener.local_addr().expect("addr"));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let r = refused.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, service, refused) = (acceptor.clone(), service.clone(), r.clone());
                tokio::spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(_) => {
                            refused.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    let handler = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let mut service = service.clone();
                            async move {
                                let resp = tower_service::Service::call(&mut service, req).await?;
                                Ok::<_, Infallible>(resp.map(|b| {
                                    b.map_err(|e| -> Box<dyn std::error::Error + Send + Sync> {
                                        e.into()
                                    })
                                    .boxed()
                                }))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), handler)
                        .await;
                });
            }
        });
        HttpsUpstream {
            url,
            calls,
            refused,
            task,
        }
    }

    /// Tool calls executed so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// A TLS connection to `addr` trusting only `ca`, with SNI `name`.
pub async fn connect(
    addr: std::net::SocketAddr,
    ca: &TestCa,
    name: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).expect("server name");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// The certificate the server presented on `stream`.
pub fn presented(
    stream: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a server certificate")
        .clone()
        .into_owned()
}

/// An HTTP/1.1 connection over an established TLS stream: send requests with the returned
/// sender (the connection is driven by a task of its own).
pub async fn http1(
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>> {
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 over TLS");
    tokio::spawn(conn);
    sender
}

/// Sends `req` on `sender`; the status and the body as text.
pub async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    req: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> (http::StatusCode, String) {
    sender.ready().await.expect("connection ready");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

//! A real OIDC issuer for the tests: discovery and JWKS served over HTTPS (a test CA's
//! certificate for 127.0.0.1), signing keys generated per test (RSA by the `openssl` command,
//! P-256 and Ed25519 by rcgen), tokens minted with jsonwebtoken. The published key set can be
//! changed while it runs (rotation).

use crate::tls::{TestCa, server_config};
use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key with its public JWK.
#[derive(Clone)]
pub struct SigningKey {
    /// Its `kid`.
    pub kid: String,
    /// The algorithm it signs with.
    pub alg: Algorithm,
    /// PEM of the private key (PKCS#8).
    pub private_pem: String,
    /// The public key as a JWK.
    pub jwk: Value,
    /// The public key as PEM (RSA keys only): what an attacker would use as an HMAC secret.
    pub public_pem: Option<String>,
}

impl SigningKey {
    /// A 2048-bit RSA key (RS256), made by `openssl genpkey`.
    pub fn rsa(kid: &str, dir: &Path) -> SigningKey {
        let path = dir.join(format!("{kid}.pem"));
        let out = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&path)
            .output()
            .expect("run openssl genpkey");
        assert!(out.status.success(), "openssl genpkey: {out:?}");
        let out = std::process::Command::new("openssl")
            .args(["rsa", "-noout", "-modulus", "-in"])
            .arg(&path)
            .output()
            .expect("run openssl rsa");
        assert!(out.status.success(), "openssl rsa: {out:?}");
        let text = String::from_utf8(out.stdout).expect("utf-8");
        let public = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&path)
            .output()
            .expect("run openssl pkey");
        assert!(public.status.success(), "openssl pkey: {public:?}");
        let hex = text.trim().strip_prefix("Modulus=").expect("modulus");
        let n: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        SigningKey {
            kid: kid.to_owned(),
            alg: Algorithm::RS256,
            private_pem: std::fs::read_to_string(&path).expect("key"),
            jwk: json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                        "n": b64(&n), "e": b64(&[1, 0, 1])}),
            public_pem: Some(String::from_utf8(public.stdout).expect("utf-8")),
        }
    }

    /// A P-256 key (ES256).
    pub fn ec(kid: &str) -> SigningKey {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256");
        let raw = key.public_key_raw();
        assert_eq!(raw.len(), 65, "uncompressed point");
        SigningKey {
            kid: kid.to_owned(),
            alg: Algorithm::ES256,
            private_pem: key.serialize_pem(),
            jwk: json!({"kty": "EC", "crv": "P-256", "use": "sig", "kid": kid,
                        "x": b64(&raw[1..33]), "y": b64(&raw[33..])}),
            public_pem: None,
        }
    }

    /// An Ed25519 key (EdDSA).
    pub fn ed25519(kid: &str) -> SigningKey {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519");
        SigningKey {
            kid: kid.to_owned(),
            alg: Algorithm::EdDSA,
            private_pem: key.serialize_pem(),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "kid": kid,
                        "x": b64(key.public_key_raw())}),
            public_pem: None,
        }
    }

    /// `claims` signed with this key, its `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let key = match self.alg {
            Algorithm::RS256 | Algorithm::PS256 => {
                EncodingKey::from_rsa_pem(self.private_pem.as_bytes())
            }
            Algorithm::ES256 => EncodingKey::from_ec_pem(self.private_pem.as_bytes()),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(self.private_pem.as_bytes()),
            other => panic!("no test key for {other:?}"),
        }
        .expect("encoding key");
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &key).expect("sign")
    }
}

/// A JWT with any header and payload and the given signature bytes (for tokens no honest
/// library would make: `alg: none`, HMAC keyed with a public key).
pub fn forge(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = sign(message.as_bytes());
    format!("{message}.{}", b64(&signature))
}

/// The issuer: `https://127.0.0.1:PORT`, its CA in `ca_file`.
pub struct TestIssuer {
    /// The issuer URL (also its tokens' `iss`).
    pub url: String,
    /// The CA certificate its TLS certificate chains to (PEM file).
    pub ca_file: PathBuf,
    /// Keys published in the JWKS now.
    published: Arc<Mutex<Vec<Value>>>,
    /// JWKS fetches served.
    pub fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
    /// Its connections' tasks: dropped with it, so a dropped issuer is unreachable (not still
    /// answering on kept-alive connections).
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.task.abort();
        for c in self.connections.lock().expect("connections").drain(..) {
            c.abort();
        }
    }
}

impl TestIssuer {
    /// Serves discovery and the JWKS (publishing `keys`) over HTTPS; the CA file goes in `dir`.
    pub async fn start(dir: &Path, keys: &[&SigningKey]) -> TestIssuer {
        let ca = TestCa::new("issuer CA");
        let ca_file = ca.write(dir, "issuer-ca.pem");
        let config = server_config(&ca.server("issuer", 7), None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind issuer");
        let url = format!("https://{}", listener.local_addr().expect("addr"));
        let published = Arc::new(Mutex::new(
            keys.iter().map(|k| k.jwk.clone()).collect::<Vec<Value>>(),
        ));
        let fetches = Arc::new(AtomicUsize::new(0));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let (p, f, u) = (published.clone(), fetches.clone(), url.clone());
        let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let conns = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, p, f, u) = (acceptor.clone(), p.clone(), f.clone(), u.clone());
                let connection = tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let handler = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let body = match req.uri().path() {
                                "/.well-known/openid-configuration" => Some(json!({
                                    "issuer": u,
                                    "jwks_uri": format!("{u}/jwks"),
                                    "authorization_endpoint": format!("{u}/authorize"),
                                    "token_endpoint": format!("{u}/token"),
                                })),
                                "/jwks" => {
                                    f.fetch_add(1, Ordering::SeqCst);
                                    let keys = p.lock().expect("keys").clone();
                                    Some(json!({"keys": keys}))
                                }
                                _ => None,
                            };
                            let resp = match body {
                                Some(b) => hyper::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(bytes::Bytes::from(b.to_string()))),
                                None => hyper::Response::builder()
                                    .status(404)
                                    .body(Full::new(bytes::Bytes::new())),
                            }
                            .expect("response");
                            async move { Ok::<_, Infallible>(resp.map(|b| b.boxed())) }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), handler)
                        .await;
                });
                conns
                    .lock()
                    .expect("connections")
                    .push(connection.abort_handle());
            }
        });
        TestIssuer {
            url,
            ca_file,
            published,
            fetches,
            task,
            connections,
        }
    }

    /// Publishes exactly these keys from now on.
    pub fn publish(&self, keys: &[&SigningKey]) {
        *self.published.lock().expect("keys") = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    /// Claims for a token of this issuer for `audience`, valid for an hour from now, with
    /// `extra` merged in.
    pub fn claims(&self, audience: &str, extra: Value) -> Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let mut claims = json!({
            "iss": self.url, "aud": audience, "iat": now, "nbf": now - 5, "exp": now + 3600,
        });
        if let (Some(c), Value::Object(extra)) = (claims.as_object_mut(), extra) {
            c.extend(extra);
        }
        claims
    }
}

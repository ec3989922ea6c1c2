//! TLS end to end: rmcp servers served over HTTPS upstream of the gateway (trusted through a
//! per-server CA file, untrusted, expired, for another name, requiring a client certificate),
//! and the gateway's own MCP listener over TLS with its certificate replaced while it runs.
//! Every certificate comes from a CA made in the test.

use mcpgw::listener::CertFiles;
use mcpgw_tests::db::TestDb;
use mcpgw_tests::tls::{self, HttpsUpstream, TestCa, Usage};
use mcpgw_tests::upstream::Upstream;
use mcpgw_tests::{Seed, TestGateway, mcp_client};
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A gateway with workspace `acme` and member alice (every tool); servers are added per test.
async fn gateway(db: &TestDb) -> (TestGateway, String) {
    let gw = TestGateway::start(&db.url).await;
    let tokens = gw
        .seed(&Seed {
            workspace: "acme",
            enforce: true,
            servers: &[],
            members: &[("alice", &["*:*"])],
        })
        .await;
    (gw, tokens[0].clone())
}

/// Adds server `name` at `url` with these TLS files, through the admin API.
async fn add_server(
    gw: &TestGateway,
    name: &str,
    url: &str,
    ca_file: Option<&Path>,
    client: Option<(&Path, &Path)>,
) {
    let mut tls = serde_json::Map::new();
    if let Some(ca) = ca_file {
        tls.insert("ca_file".into(), json!(ca));
    }
    if let Some((cert, key)) = client {
        tls.insert("client_cert".into(), json!(cert));
        tls.insert("client_key".into(), json!(key));
    }
    gw.admin_post(
        "/v1/workspaces/acme/servers",
        json!({"name": name, "url": url, "tls": tls}),
    )
    .await;
}

/// An `initialize` sent to `/mcp/{server}` by raw HTTP; the answer's body (JSON, or an SSE
/// stream holding it).
async fn initialize(gw: &TestGateway, server: &str, token: &str) -> String {
    let resp = reqwest::Client::new()
        .post(format!("{}/mcp/{server}", gw.mcp_url))
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "tls-test", "version": "1"}}
        }))
        .send()
        .await
        .expect("initialize");
    assert_eq!(resp.status(), 200, "a JSON-RPC answer, not a refusal");
    resp.text().await.expect("answer")
}

/// The JSON-RPC error message of a failed `initialize` through `/mcp/{server}`.
async fn failure(gw: &TestGateway, server: &str, token: &str) -> String {
    let answer: Value =
        serde_json::from_str(&initialize(gw, server, token).await).expect("a JSON-RPC error");
    assert_eq!(answer["error"]["code"], -32603, "{answer}");
    answer["error"]["message"]
        .as_str()
        .expect("message")
        .to_owned()
}

/// Lists and calls the test tools through `/mcp/{server}` with the official Rust SDK client.
async fn list_and_call(gw: &TestGateway, server: &str, token: &str) {
    let client = mcp_client(&format!("{}/mcp/{server}", gw.mcp_url), token)
        .await
        .expect("connect through the gateway");
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    assert!(names.contains(&"echo".to_owned()), "{names:?}");
    let result = client
        .call_tool(
            CallToolRequestParams::new("echo").with_arguments(
                json!({"text": "over https"})
                    .as_object()
                    .expect("object")
                    .clone(),
            ),
        )
        .await
        .expect("tools/call");
    assert_eq!(result.is_error, Some(false));
    assert!(format!("{:?}", result.content).contains("over https"));
    client.cancel().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_trusted_through_its_ca_file_lists_and_calls() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("upstream CA");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let upstream = HttpsUpstream::start(tls::server_config(&ca.server("upstream", 1), None)).await;
    let (gw, alice) = gateway(&db).await;
    add_server(&gw, "secure", &upstream.url, Some(&ca_file), None).await;

    list_and_call(&gw, "secure", &alice).await;
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_problems_are_errors_naming_the_server_and_the_reason() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("upstream CA");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let untrusted =
        HttpsUpstream::start(tls::server_config(&ca.server("untrusted", 1), None)).await;
    let expired = HttpsUpstream::start(tls::server_config(
        &ca.issue(&["127.0.0.1"], "expired", 2, Usage::Server, true),
        None,
    ))
    .await;
    let elsewhere = HttpsUpstream::start(tls::server_config(
        &ca.issue(&["other.example"], "elsewhere", 3, Usage::Server, false),
        None,
    ))
    .await;
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let (gw, alice) = gateway(&db).await;
    add_server(&gw, "untrusted", &untrusted.url, None, None).await;
    add_server(&gw, "expired", &expired.url, Some(&ca_file), None).await;
    add_server(&gw, "elsewhere", &elsewhere.url, Some(&ca_file), None).await;
    add_server(&gw, "badca", &untrusted.url, Some(&garbage), None).await;

    let m = failure(&gw, "untrusted", &alice).await;
    assert!(
        m.contains("untrusted") && m.contains("unknown issuer") && m.contains("--ca-file"),
        "{m}"
    );
    let m = failure(&gw, "expired", &alice).await;
    assert!(
        m.contains("upstream expired") && m.contains("certificate expired"),
        "{m}"
    );
    let m = failure(&gw, "elsewhere", &alice).await;
    assert!(
        m.contains("elsewhere") && m.contains("name mismatch"),
        "{m}"
    );
    let m = failure(&gw, "badca", &alice).await;
    assert!(
        m.contains("badca")
            && m.contains(&garbage.display().to_string())
            && m.contains("no CERTIFICATE block"),
        "{m}"
    );
    assert!(
        !m.contains("not a certificate"),
        "the file's contents stay out: {m}"
    );

    // The official client sees the same error, and nothing was ever sent in plain text.
    let err = mcp_client(&format!("{}/mcp/untrusted", gw.mcp_url), &alice)
        .await
        .expect_err("an untrusted upstream cannot be used");
    assert!(err.contains("unknown issuer"), "{err}");
    for u in [&untrusted, &expired, &elsewhere] {
        assert_eq!(u.calls(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_requiring_a_client_certificate_gets_one_only_when_configured() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("upstream CA");
    let clients = TestCa::new("client CA");
    let strangers = TestCa::new("someone else's CA");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let (cert, key) = clients
        .issue(&["gateway.example"], "gateway", 10, Usage::Client, false)
        .write(dir.path(), "client");
    let (wrong_cert, wrong_key) = strangers
        .issue(&["gateway.example"], "gateway", 11, Usage::Client, false)
        .write(dir.path(), "stranger");
    let upstream =
        HttpsUpstream::start(tls::server_config(&ca.server("mtls", 1), Some(&clients))).await;
    let (gw, alice) = gateway(&db).await;
    add_server(&gw, "nocert", &upstream.url, Some(&ca_file), None).await;
    add_server(
        &gw,
        "wrongcert",
        &upstream.url,
        Some(&ca_file),
        Some((&wrong_cert, &wrong_key)),
    )
    .await;
    add_server(
        &gw,
        "mtls",
        &upstream.url,
        Some(&ca_file),
        Some((&cert, &key)),
    )
    .await;

    let m = failure(&gw, "nocert", &alice).await;
    assert!(
        m.contains("nocert") && m.contains("requires a client certificate"),
        "{m}"
    );
    let m = failure(&gw, "wrongcert", &alice).await;
    assert!(
        m.contains("wrongcert") && m.contains("client certificate refused"),
        "{m}"
    );
    assert_eq!(upstream.calls(), 0);

    list_and_call(&gw, "mtls", &alice).await;
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_ca_file_is_read_again_without_a_restart() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().expect("tempdir");
    let old_ca = TestCa::new("old CA");
    let new_ca = TestCa::new("new CA");
    let ca_file = old_ca.write(dir.path(), "ca.pem");
    let upstream =
        HttpsUpstream::start(tls::server_config(&new_ca.server("rotated", 1), None)).await;
    let (gw, alice) = gateway(&db).await;
    add_server(&gw, "rotated", &upstream.url, Some(&ca_file), None).await;
    let m = failure(&gw, "rotated", &alice).await;
    assert!(m.contains("unknown issuer"), "{m}");

    replace(&ca_file, new_ca.pem.as_bytes());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = initialize(&gw, "rotated", &alice).await;
        if answer.contains("serverInfo") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new CA file was not read: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Replaces `path` the way deploy tools do: a temporary file renamed over it.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn addr_of(url: &str) -> std::net::SocketAddr {
    url.trim_start_matches("https://")
        .parse()
        .expect("listener address")
}

fn initialize_request(
    addr: std::net::SocketAddr,
    token: &str,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "tls-test", "version": "1"}}
    });
    http::Request::post("/mcp")
        .header("host", format!("localhost:{}", addr.port()))
        .header("authorization", format!("Bearer {token}"))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_listener_serves_tls_and_takes_a_new_certificate_without_a_restart() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("gateway CA");
    let first = ca.server("gateway one", 1);
    let (cert, key): (PathBuf, PathBuf) = first.write(dir.path(), "gateway");
    let files = CertFiles {
        cert: cert.clone(),
        key: key.clone(),
    };
    let gw = TestGateway::start_config(&db.url, |c| c.tls = Some(files)).await;
    assert!(gw.mcp_url.starts_with("https://"), "{}", gw.mcp_url);
    let upstream = Upstream::start(true).await;
    let tokens = gw
        .seed(&Seed {
            workspace: "acme",
            enforce: true,
            servers: &[("db", &upstream.url)],
            members: &[("alice", &["*:*"])],
        })
        .await;
    let alice = &tokens[0];
    let addr = addr_of(&gw.mcp_url);

    // A client trusting the test CA reaches /mcp, and sees the first certificate.
    let open = tls::connect(addr, &ca, "localhost").await.expect("TLS");
    assert_eq!(tls::presented(&open), first.der);
    let mut open = tls::http1(open).await;
    let (status, body) = tls::send(&mut open, initialize_request(addr, alice)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("serverInfo"), "{body}");

    // A new certificate (another serial and subject) replaces the files while the gateway runs.
    let second = ca.server("gateway two", 2);
    replace(&key, second.key_pem.as_bytes());
    replace(&cert, second.cert_pem.as_bytes());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = tls::connect(addr, &ca, "localhost").await.expect("TLS");
        if tls::presented(&fresh) == second.der {
            let mut fresh = tls::http1(fresh).await;
            let (status, body) = tls::send(&mut fresh, initialize_request(addr, alice)).await;
            assert_eq!(status, 200, "{body}");
            break;
        }
        assert_eq!(tls::presented(&fresh), first.der);
        assert!(
            Instant::now() < deadline,
            "the new certificate was not taken"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection opened before the change still works.
    let (status, body) = tls::send(&mut open, initialize_request(addr, alice)).await;
    assert_eq!(status, 200, "{body}");

    // A bad new file keeps the current certificate: for the next few checks (one a second),
    // every new connection still gets the second certificate.
    replace(
        &cert,
        b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    );
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        let fresh = tls::connect(addr, &ca, "localhost").await.expect("TLS");
        assert_eq!(tls::presented(&fresh), second.der);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_is_bounded_by_the_header_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("listener CA");
    let (cert, key) = ca.server("listener", 1).write(dir.path(), "listener");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    // A missing or unreadable file stops the start, naming the file and never quoting it.
    let missing = dir.path().join("missing.key");
    let e = mcpgw::listener::Tls::load(
        "test",
        CertFiles {
            cert: cert.clone(),
            key: missing.clone(),
        },
    )
    .err()
    .expect("a missing key is refused")
    .to_string();
    assert!(
        e.contains(&missing.display().to_string()) && e.contains("cannot read"),
        "{e}"
    );
    let e = mcpgw::listener::Tls::load(
        "test",
        CertFiles {
            cert: key.clone(),
            key: key.clone(),
        },
    )
    .err()
    .expect("a key is not a certificate")
    .to_string();
    assert!(
        e.contains("no CERTIFICATE block") && !e.contains("PRIVATE KEY-----"),
        "{e}"
    );
    let tls = mcpgw::listener::Tls::load("test", CertFiles { cert, key }).expect("load");
    let limits = mcpgw::listener::ListenerLimits {
        header_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(mcpgw::listener::serve(
        "test",
        listener,
        limits,
        Some(std::sync::Arc::new(tls)),
        |_req| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from_static(b"ok"),
            )))
        },
        async {
            let _ = stopped.await;
        },
    ));
    // A client that connects and never starts the handshake is cut off after the timeout.
    let mut idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut idle, &mut buf),
    )
    .await
    .expect("the gateway closes a silent connection")
    .unwrap_or(0);
    assert_eq!(n, 0, "closed, nothing sent");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    // A client that does the handshake is served.
    let mut conn = tls::http1(tls::connect(addr, &ca, "localhost").await.expect("TLS")).await;
    let (status, body) = tls::send(
        &mut conn,
        http::Request::get("/")
            .header("host", "localhost")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request"),
    )
    .await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "ok"));
    let _ = stop.send(());
    drop(conn);
    served.await.expect("serve ended");
}

//! The MCP endpoint end to end: real rmcp servers upstream (stateful 2025-11-25 and stateless),
//! real rmcp clients and raw HTTP in front, the gateway in between.

use mcpgw_tests::db::TestDb;
use mcpgw_tests::upstream::Upstream;
use mcpgw_tests::{Seed, TestGateway, guests, install, mcp_client, tool_names};
use reqwest::{Method, StatusCode};
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

struct Env {
    gw: TestGateway,
    stateful: Upstream,
    stateless: Upstream,
    alice: String,
    bob: String,
    _db: TestDb,
    _policies: tempfile::TempDir,
}

/// Workspace `acme` with servers `db` (stateful) and `search` (stateless); alice may use
/// everything, bob only `db:schema`; secrets-guard in the policy directory.
async fn env(enforce: bool) -> Env {
    env_config(enforce, |_| {}).await
}

/// [`env`] on a gateway whose test defaults `adjust` changes.
async fn env_config(enforce: bool, adjust: impl FnOnce(&mut mcpgw::config::Config)) -> Env {
    let db = TestDb::sqlite();
    let (stateful, stateless) = (Upstream::start(true).await, Upstream::start(false).await);
    let policies = mcpgw_tests::secrets_guard_dir();
    let dir = policies.path().to_owned();
    let gw = TestGateway::start_config(&db.url, |c| {
        c.policy = mcpgw::policy::PolicyConfig {
            dir: Some(dir),
            ..Default::default()
        };
        adjust(c);
    })
    .await;
    let tokens = gw
        .seed(&Seed {
            workspace: "acme",
            enforce,
            servers: &[
                ("db", &stateful.url),
                ("search", &stateless.url),
                ("down", "http://127.0.0.1:9/mcp"),
            ],
            members: &[
                ("alice", &["db:*", "search:*", "down:*"]),
                ("bob", &["db:schema"]),
            ],
        })
        .await;
    let [alice, bob] = <[String; 2]>::try_from(tokens).expect("two tokens");
    Env {
        gw,
        stateful,
        stateless,
        alice,
        bob,
        _db: db,
        _policies: policies,
    }
}

impl Env {
    fn url(&self, server: &str) -> String {
        format!("{}/mcp/{server}", self.gw.mcp_url)
    }
}

fn args(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_see_and_call_only_what_they_are_granted() {
    let env = env(true).await;
    for server in ["db", "search"] {
        assert_eq!(
            tool_names(&env.url(server), &env.alice).await,
            ["echo", "fail", "query", "roots", "schema", "slow", "steps"],
            "{server}"
        );
    }
    assert_eq!(tool_names(&env.url("db"), &env.bob).await, ["schema"]);
    assert!(tool_names(&env.url("search"), &env.bob).await.is_empty());

    let alice = mcp_client(&env.url("db"), &env.alice).await.unwrap();
    let r = alice
        .call_tool(
            CallToolRequestParams::new("query").with_arguments(args(json!({"sql": "select 1"}))),
        )
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false));
    assert!(format!("{:?}", r.content).contains("rows for: select 1"));

    let bob = mcp_client(&env.url("db"), &env.bob).await.unwrap();
    let before = env.stateful.calls();
    let err = bob
        .call_tool(
            CallToolRequestParams::new("query")
                .with_arguments(args(json!({"sql": "drop table users"}))),
        )
        .await
        .unwrap_err();
    let text = format!("{err:?}");
    assert!(
        text.contains("-32602") || text.contains("InvalidParams") || text.contains("Unknown tool"),
        "{text}"
    );
    assert!(
        text.contains("Unknown tool: query"),
        "a hidden tool is an unknown tool: {text}"
    );
    assert_eq!(
        env.stateful.calls(),
        before,
        "the denied call never reached the upstream"
    );
    let r = bob
        .call_tool(CallToolRequestParams::new("schema"))
        .await
        .unwrap();
    assert!(format!("{:?}", r.content).contains("users(id, name)"));

    let search = mcp_client(&env.url("search"), &env.alice).await.unwrap();
    let r = search
        .call_tool(
            CallToolRequestParams::new("echo")
                .with_arguments(args(json!({"text": "stateless ok"}))),
        )
        .await
        .unwrap();
    assert!(format!("{:?}", r.content).contains("stateless ok"));
    assert_eq!(env.stateless.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforcement_off_lets_a_denied_call_through() {
    let env = env(false).await;
    assert_eq!(
        tool_names(&env.url("db"), &env.bob).await,
        ["echo", "fail", "query", "roots", "schema", "slow", "steps"],
        "would-deny shows everything"
    );
    let bob = mcp_client(&env.url("db"), &env.bob).await.unwrap();
    let r = bob
        .call_tool(
            CallToolRequestParams::new("query").with_arguments(args(json!({"sql": "select 2"}))),
        )
        .await
        .unwrap();
    assert!(format!("{:?}", r.content).contains("rows for: select 2"));
    assert_eq!(env.stateful.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_guard_blocks_a_call_carrying_a_key_and_says_why() {
    let env = env(true).await;
    let alice = mcp_client(&env.url("db"), &env.alice).await.unwrap();
    let key = format!("AKIA{}", "IOSFODNN7EXAMPLE");
    let r = alice
        .call_tool(
            CallToolRequestParams::new("echo")
                .with_arguments(args(json!({"text": format!("deploy with {key}")}))),
        )
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    let text = format!("{:?}", r.content);
    assert!(
        text.contains("secrets-guard")
            && text.contains("AWS access key id")
            && text.contains("arguments.text"),
        "{text}"
    );
    assert!(!text.contains(&key), "the reason never repeats the secret");
    assert_eq!(env.stateful.calls(), 0);
}

/// Raw Streamable HTTP, to see exactly what crosses the wire.
struct Raw {
    url: String,
    token: String,
    session: Option<String>,
}

impl Raw {
    fn post(&self, body: &Value) -> reqwest::RequestBuilder {
        let mut req = reqwest::Client::new()
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .json(body);
        if let Some(s) = &self.session {
            req = req
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", "2025-11-25");
        }
        req
    }

    async fn initialize(url: String, token: &str) -> Raw {
        let mut raw = Raw {
            url,
            token: token.to_owned(),
            session: None,
        };
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}});
        let resp = raw.post(&init).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        raw.session = resp
            .headers()
            .get("mcp-session-id")
            .map(|v| v.to_str().unwrap().to_owned());
        let _ = resp.bytes().await;
        let done = raw
            .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .send()
            .await
            .unwrap();
        assert_eq!(done.status(), StatusCode::ACCEPTED, "notifications get 202");
        raw
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_streams_through_in_order_while_the_call_runs() {
    use futures_util::StreamExt as _;
    let env = env(true).await;
    let raw = Raw::initialize(env.url("db"), &env.alice).await;
    assert!(
        raw.session.is_some(),
        "the stateful upstream's session id is relayed"
    );
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "steps", "arguments": {"steps": 4, "delay_ms": 150}, "_meta": {"progressToken": "p1"}}});
    let started = Instant::now();
    let resp = raw.post(&call).send().await.unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = resp.bytes_stream();
    let (mut buf, mut events) = (String::new(), Vec::new());
    while let Some(chunk) = stream.next().await {
        buf.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let data: String = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim)
                .collect();
            if let Ok(v) = serde_json::from_str::<Value>(&data) {
                events.push((started.elapsed(), v));
            }
        }
        if events.iter().any(|(_, v)| v["id"] == 7) {
            break;
        }
    }
    let progress: Vec<(Duration, f64)> = events
        .iter()
        .filter(|(_, v)| v["method"] == "notifications/progress")
        .map(|(t, v)| (*t, v["params"]["progress"].as_f64().unwrap()))
        .collect();
    let (result_at, result) = events
        .iter()
        .find(|(_, v)| v["id"] == 7)
        .cloned()
        .expect("a result");
    assert_eq!(
        progress.iter().map(|p| p.1).collect::<Vec<_>>(),
        [1.0, 2.0, 3.0, 4.0],
        "in order"
    );
    assert!(
        progress.iter().all(|(t, _)| *t < result_at),
        "each before the result"
    );
    // Streamed while running: the first arrives while three more steps (450 ms) are still to go.
    assert!(
        result_at - progress[0].0 >= Duration::from_millis(400),
        "first {:?}, result {result_at:?}",
        progress[0].0
    );
    assert!(
        result["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("done after 4 steps")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_lifecycle_get_stream_delete_and_ownership() {
    let env = env(true).await;
    let raw = Raw::initialize(env.url("db"), &env.alice).await;
    let session = raw.session.clone().unwrap();
    let get = |token: &str| {
        reqwest::Client::new()
            .get(env.url("db"))
            .bearer_auth(token)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-11-25")
            .send()
    };
    let stream = get(&env.alice).await.unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    drop(stream);
    // Another member cannot ride alice's session.
    let hijack = get(&env.bob).await.unwrap();
    assert_eq!(hijack.status(), StatusCode::NOT_FOUND);
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    assert_eq!(
        raw.post(&list).send().await.unwrap().status(),
        StatusCode::OK
    );
    let del = reqwest::Client::new()
        .delete(env.url("db"))
        .bearer_auth(&env.alice)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert!(del.status().is_success(), "{}", del.status());
    let after = raw.post(&list).send().await.unwrap();
    assert_eq!(
        after.status(),
        StatusCode::NOT_FOUND,
        "the upstream's 404 for an ended session is relayed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_is_required_and_revocation_holds_mid_session() {
    let env = env(true).await;
    let client = reqwest::Client::new();
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let resp = client.post(env.url("db")).json(&ping).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer resource_metadata=\"http://")
            && challenge.contains("/.well-known/oauth-protected-resource/mcp/db"),
        "{challenge}"
    );
    let meta: Value = client
        .get(format!(
            "{}/.well-known/oauth-protected-resource/mcp/db",
            env.gw.mcp_url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        meta["resource"].as_str().unwrap().ends_with("/mcp/db"),
        "{meta}"
    );
    let resp = client
        .post(env.url("db"))
        .bearer_auth("mcpgw_not-a-token")
        .json(&ping)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    let resp = client
        .post(format!("{}?access_token={}", env.url("db"), env.alice))
        .json(&ping)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::BAD_REQUEST,
        "tokens in query strings are refused"
    );

    // Revoked mid-session: the next request is refused.
    let alice = mcp_client(&env.url("db"), &env.alice).await.unwrap();
    alice.list_all_tools().await.unwrap();
    let tokens: Value = env
        .gw
        .admin(Method::GET, "/v1/workspaces/acme/tokens")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["member"] == "alice")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    env.gw
        .admin(Method::DELETE, &format!("/v1/workspaces/acme/tokens/{id}"))
        .send()
        .await
        .unwrap();
    assert!(
        alice.list_all_tools().await.is_err(),
        "revoked token refused on its next request"
    );
    let raw = Raw {
        url: env.url("db"),
        token: env.alice.clone(),
        session: None,
    };
    assert_eq!(
        raw.post(&ping).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // Nobody else is touched.
    assert_eq!(tool_names(&env.url("db"), &env.bob).await, ["schema"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_upstream_failures_get_clear_errors() {
    let env = env(true).await;
    let raw = Raw::initialize(env.url("db"), &env.alice).await;
    let send = |body: reqwest::Body, headers: &[(&str, &str)]| {
        let mut req = reqwest::Client::new()
            .post(env.url("db"))
            .bearer_auth(&env.alice)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-session-id", raw.session.clone().unwrap());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(body).send()
    };
    let check = |resp: reqwest::Response, status: StatusCode, code: i64| async move {
        assert_eq!(resp.status(), status);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{v}");
        v
    };
    check(
        send("{garbage".into(), &[]).await.unwrap(),
        StatusCode::BAD_REQUEST,
        -32700,
    )
    .await;
    check(
        send(r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#.into(), &[])
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        -32600,
    )
    .await;
    check(
        send(
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#.into(),
            &[],
        )
        .await
        .unwrap(),
        StatusCode::BAD_REQUEST,
        -32600,
    )
    .await;
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{}"}}}}}}"#,
        "x".repeat(5 << 20)
    );
    check(
        send(huge.into(), &[]).await.unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE,
        -32600,
    )
    .await;
    let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;
    let v = check(
        send(
            call.into(),
            &[("mcp-method", "tools/call"), ("mcp-name", "query")],
        )
        .await
        .unwrap(),
        StatusCode::BAD_REQUEST,
        -32020,
    )
    .await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("Mcp-Name"),
        "{v}"
    );
    check(
        send(call.into(), &[("mcp-method", "tools/list")])
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        -32020,
    )
    .await;
    // Headers that agree (plain and base64-encoded) pass.
    let ok = send(
        call.into(),
        &[
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?ZWNobw==?="),
        ],
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    // The status arrives with the stream's head, before the tool runs: read the answer first.
    assert!(String::from_utf8_lossy(&ok.bytes().await.unwrap()).contains("hi"));
    assert_eq!(env.stateful.calls(), 1);

    // An unreachable upstream is a JSON-RPC error naming it.
    let down = Raw {
        url: env.url("down"),
        token: env.alice.clone(),
        session: None,
    };
    let v: Value = down
        .post(&json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["id"], 9);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream down unreachable"),
        "{v}"
    );
    let nope = Raw {
        url: env.url("nope"),
        token: env.alice.clone(),
        session: None,
    };
    assert_eq!(
        nope.post(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    // The gateway is unharmed.
    assert_eq!(tool_names(&env.url("db"), &env.alice).await.len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_to_client_requests_and_their_replies_pass_through() {
    use rmcp::ServiceExt as _;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let env = env(true).await;
    let config =
        StreamableHttpClientTransportConfig::with_uri(env.url("db")).auth_header(env.alice.clone());
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    let client = mcpgw_tests::upstream::RootsClient
        .serve(transport)
        .await
        .unwrap();
    let r = client
        .call_tool(CallToolRequestParams::new("roots"))
        .await
        .unwrap();
    assert!(
        format!("{:?}", r.content).contains("roots: file:///work/project"),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_the_2026_07_28_revision_work_through_the_gateway() {
    use rmcp::model::ProtocolVersion;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    use rmcp::{ClientLifecycleMode, ClientServiceExt as _};
    let env = env(true).await;
    for server in ["search", "db"] {
        let config = StreamableHttpClientTransportConfig::with_uri(env.url(server))
            .auth_header(env.alice.clone());
        let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
        let lifecycle = ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        };
        let client =
            ().serve_with_lifecycle(transport, lifecycle)
                .await
                .unwrap_or_else(|e| panic!("{server}: {e}"));
        let mut names: Vec<String> = client
            .list_all_tools()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["echo", "fail", "query", "roots", "schema", "slow", "steps"],
            "{server}"
        );
        let r = client
            .call_tool(
                CallToolRequestParams::new("echo").with_arguments(args(json!({"text": "modern"}))),
            )
            .await
            .unwrap();
        assert!(
            format!("{:?}", r.content).contains("modern"),
            "{server}: {r:?}"
        );
        let err = client
            .call_tool(
                CallToolRequestParams::new("echo")
                    .with_arguments(args(json!({"text": format!("ghp_{}", "k".repeat(36))}))),
            )
            .await
            .unwrap();
        assert_eq!(
            err.is_error,
            Some(true),
            "{server}: policy applies to 2026-07-28 calls too"
        );
    }
    let bob = {
        let config = StreamableHttpClientTransportConfig::with_uri(env.url("db"))
            .auth_header(env.bob.clone());
        let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
        let lifecycle = ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        };
        ().serve_with_lifecycle(transport, lifecycle).await.unwrap()
    };
    let names: Vec<String> = bob
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(names, ["schema"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_answers_times_out_with_a_clear_error() {
    let env = env(true).await;
    // Accepts connections (the kernel does) but never reads or answers.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", black_hole.local_addr().unwrap());
    env.gw
        .admin(Method::POST, "/v1/workspaces/acme/servers")
        .json(&json!({"name": "hole", "url": url}))
        .send()
        .await
        .unwrap();
    env.gw
        .admin(Method::POST, "/v1/workspaces/acme/grants")
        .json(&json!({"member": "alice", "patterns": ["hole:*"]}))
        .send()
        .await
        .unwrap();
    let raw = Raw {
        url: env.url("hole"),
        token: env.alice.clone(),
        session: None,
    };
    let started = Instant::now();
    let v: Value = raw
        .post(&json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["id"], 4);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not answer within"),
        "{v}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_phase_modules_see_tool_results_and_can_refuse_them() {
    let env = env(true).await;
    let dir = env._policies.path();
    std::fs::write(dir.join("20-results.toml"), "mode = 'deny-results'").unwrap();
    install(dir, "20-results.wasm", &guests::bytes(guests::HOSTILE));
    let status = || async {
        let v: Value = env
            .gw
            .admin(Method::GET, "/v1/policy/status")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["modules"].as_array().map(Vec::len).unwrap_or(0)
    };
    let started = Instant::now();
    while status().await < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "result module never went live"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for server in ["db", "search"] {
        let alice = mcp_client(&env.url(server), &env.alice).await.unwrap();
        let ok = alice
            .call_tool(
                CallToolRequestParams::new("echo").with_arguments(args(json!({"text": "plain"}))),
            )
            .await
            .unwrap();
        assert_eq!(ok.is_error, Some(false), "{server}");
        let r = alice
            .call_tool(
                CallToolRequestParams::new("echo")
                    .with_arguments(args(json!({"text": "the secret plan"}))),
            )
            .await
            .unwrap();
        assert_eq!(r.is_error, Some(true), "{server}: {r:?}");
        let text = format!("{:?}", r.content);
        assert!(
            text.contains("secret-in-result") && !text.contains("the secret plan"),
            "{server}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aggregated_endpoint_exposes_every_server_under_a_prefix() {
    use rmcp::ServiceExt as _;
    use rmcp::model::ProtocolVersion;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    use rmcp::{ClientLifecycleMode, ClientServiceExt as _};
    let env = env(true).await;
    let all = format!("{}/mcp", env.gw.mcp_url);
    let expected = [
        "db_echo",
        "db_fail",
        "db_query",
        "db_roots",
        "db_schema",
        "db_slow",
        "db_steps",
        "search_echo",
        "search_fail",
        "search_query",
        "search_roots",
        "search_schema",
        "search_slow",
        "search_steps",
    ];
    assert_eq!(
        tool_names(&all, &env.alice).await,
        expected,
        "every server's tools, prefixed; the down server is left out"
    );
    assert_eq!(tool_names(&all, &env.bob).await, ["db_schema"]);
    let strict = |n: &str| {
        n.len() <= 64
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    assert!(expected.iter().all(|n| strict(n)));

    let alice = mcp_client(&all, &env.alice).await.unwrap();
    alice.list_all_tools().await.unwrap();
    let r = alice
        .call_tool(
            CallToolRequestParams::new("db_query").with_arguments(args(json!({"sql": "select 3"}))),
        )
        .await
        .unwrap();
    assert!(
        format!("{:?}", r.content).contains("rows for: select 3"),
        "{r:?}"
    );
    let r = alice
        .call_tool(
            CallToolRequestParams::new("search_echo")
                .with_arguments(args(json!({"text": "via /mcp"}))),
        )
        .await
        .unwrap();
    assert!(format!("{:?}", r.content).contains("via /mcp"));
    assert_eq!(
        (env.stateful.calls(), env.stateless.calls()),
        (1, 1),
        "each call reached its own server"
    );
    let r = alice
        .call_tool(
            CallToolRequestParams::new("db_steps")
                .with_arguments(args(json!({"steps": 3, "delay_ms": 20}))),
        )
        .await
        .unwrap();
    assert!(format!("{:?}", r.content).contains("done after 3 steps"));
    let r = alice
        .call_tool(
            CallToolRequestParams::new("search_echo")
                .with_arguments(args(json!({"text": format!("AKIA{}", "IOSFODNN7EXAMPLE")}))),
        )
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true), "policy applies on /mcp too");

    let bob = mcp_client(&all, &env.bob).await.unwrap();
    let err = bob
        .call_tool(CallToolRequestParams::new("db_query").with_arguments(args(json!({"sql": "x"}))))
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("Unknown tool: db_query"),
        "{err:?}"
    );
    let err = bob
        .call_tool(CallToolRequestParams::new("nonsense"))
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("Unknown tool: nonsense"),
        "{err:?}"
    );

    // Server-to-client requests find their way back through the relay ids.
    let config =
        StreamableHttpClientTransportConfig::with_uri(all.clone()).auth_header(env.alice.clone());
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    let roots = mcpgw_tests::upstream::RootsClient
        .serve(transport)
        .await
        .unwrap();
    let r = roots
        .call_tool(CallToolRequestParams::new("db_roots"))
        .await
        .unwrap();
    assert!(
        format!("{:?}", r.content).contains("roots: file:///work/project"),
        "{r:?}"
    );

    // 2026-07-28 clients: server/discover is answered by the gateway.
    let config =
        StreamableHttpClientTransportConfig::with_uri(all.clone()).auth_header(env.alice.clone());
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    let lifecycle = ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    };
    let modern = ().serve_with_lifecycle(transport, lifecycle).await.unwrap();
    assert_eq!(modern.list_all_tools().await.unwrap().len(), expected.len());
    let r = modern
        .call_tool(
            CallToolRequestParams::new("db_echo")
                .with_arguments(args(json!({"text": "modern /mcp"}))),
        )
        .await
        .unwrap();
    assert!(format!("{:?}", r.content).contains("modern /mcp"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_closes_the_upstream_stream() {
    // Closing the response stream is how a 2026-07-28 client cancels; the gateway must pass the
    // close on. (rmcp's stateless server finishes a call whatever happens to its stream, so the
    // upstream here is a bare HTTP peer that reports when its stream is closed; it lists no
    // tools, so pinning, which would list them before the call, is off.)
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let env = env_config(true, |c| c.session.pinning = mcpgw::catalog::PinMode::Off).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<Duration>();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = Vec::new();
        // Read the request head and body.
        loop {
            let n = sock.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some(head_end) = text.find("\r\n\r\n") {
                let len: usize = text[..head_end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if got.len() >= head_end + 4 + len {
                    break;
                }
            }
        }
        let event = "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":1,\"progress\":1}}\n\n";
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        sock.write_all(format!("{head}{:x}\r\n{event}\r\n", event.len()).as_bytes())
            .await
            .unwrap();
        let opened = Instant::now();
        // Hold the stream open until the gateway closes it.
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = closed_tx.send(opened.elapsed());
    });
    env.gw
        .admin(Method::POST, "/v1/workspaces/acme/servers")
        .json(&json!({"name": "raw", "url": url}))
        .send()
        .await
        .unwrap();
    env.gw
        .admin(Method::POST, "/v1/workspaces/acme/grants")
        .json(&json!({"member": "alice", "patterns": ["raw:*"]}))
        .send()
        .await
        .unwrap();
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "long", "arguments": {}}});
    let raw = Raw {
        url: env.url("raw"),
        token: env.alice.clone(),
        session: None,
    };
    let mut resp = raw.post(&call).send().await.unwrap();
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(
        String::from_utf8_lossy(&first).contains("notifications/progress"),
        "the first event streams through"
    );
    let dropped = Instant::now();
    drop(resp);
    let held = tokio::time::timeout(Duration::from_secs(3), closed_rx)
        .await
        .expect("the gateway never closed the upstream stream")
        .unwrap();
    eprintln!(
        "upstream stream closed {:?} after the client dropped it (held {held:?})",
        dropped.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_cannot_be_sidestepped_by_ids_notifications_headers_or_other_methods() {
    let env = env(true).await;
    let bob = Raw::initialize(env.url("db"), &env.bob).await;
    // A float id still gets its answer filtered, and gets its own id back.
    let v: Value = sse_or_json(
        bob.post(&json!({"jsonrpc": "2.0", "id": 1.0, "method": "tools/list"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let names: Vec<&str> = v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["schema"], "{v}");
    assert_eq!(v["id"], json!(1.0));
    // A tools/call without an id is not a notification.
    let resp = bob.post(&json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "query", "arguments": {"sql": "x"}}})).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(env.stateful.calls(), 0);
    // Repeated routing headers are refused.
    let call =
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "schema"}});
    let resp = bob
        .post(&call)
        .header("mcp-name", "schema")
        .header("mcp-name", "query")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Prompts, resources and other methods need a grant covering the whole server.
    for method in [
        "prompts/list",
        "resources/list",
        "completion/complete",
        "vendor/anything",
    ] {
        let v: Value = bob
            .post(&json!({"jsonrpc": "2.0", "id": 3, "method": method, "params": {}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("needs a grant covering the whole server (db:*)"),
            "{method}: {v}"
        );
    }
    let alice = Raw::initialize(env.url("db"), &env.alice).await;
    let v: Value = sse_or_json(
        alice
            .post(&json!({"jsonrpc": "2.0", "id": 4, "method": "resources/list", "params": {}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        !v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("grant"),
        "alice holds db:*: {v}"
    );
    // A session id the upstream never issued to this token is not found.
    let mut forged = Raw {
        url: env.url("db"),
        token: env.bob.clone(),
        session: Some("made-up-session".into()),
    };
    assert_eq!(
        forged.post(&call).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    forged.session = alice.session.clone();
    assert_eq!(
        forged.post(&call).send().await.unwrap().status(),
        StatusCode::NOT_FOUND,
        "alice's session is not bob's"
    );
}

/// The JSON-RPC answer of a JSON or SSE response.
async fn sse_or_json(resp: reqwest::Response) -> Value {
    let sse = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
    let text = resp.text().await.unwrap();
    if !sse {
        return serde_json::from_str(&text).unwrap();
    }
    text.split("\n\n")
        .filter_map(|e| {
            let data: String = e
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim)
                .collect();
            serde_json::from_str::<Value>(&data).ok()
        })
        .find(|v| v.get("id").is_some())
        .expect("an answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_origin_or_host_is_refused_on_both_endpoints_and_nothing_is_forwarded() {
    let env = env(true).await;
    let port = env.gw.mcp_url.rsplit(':').next().unwrap().to_owned();
    let call = |url: String, headers: Vec<(&'static str, String)>| {
        let mut req = reqwest::Client::new()
            .post(url)
            .bearer_auth(&env.alice)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req
    };
    let body = |name: &str| {
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
            "name": name, "arguments": {"text": "hi"}, "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}}})
    };
    let before = env.stateless.calls();
    for (url, name) in [
        (env.url("search"), "echo"),
        (format!("{}/mcp", env.gw.mcp_url), "search_echo"),
    ] {
        for bad in [
            vec![("origin", "http://evil.example.com".to_owned())],
            vec![("origin", "null".to_owned())],
            vec![("host", format!("rebound.example.com:{port}"))],
        ] {
            let resp = call(url.clone(), bad.clone())
                .header("mcp-name", name)
                .json(&body(name))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{url} {bad:?}");
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v["error"]["code"], -32600, "{v}");
            assert!(v["id"].is_null(), "a refusal answers no request: {v}");
        }
        for good in [
            vec![],
            vec![("origin", format!("http://localhost:{port}"))],
            vec![("origin", format!("http://127.0.0.1:{port}"))],
            vec![("host", format!("localhost:{port}"))],
        ] {
            let resp = call(url.clone(), good.clone())
                .header("mcp-name", name)
                .json(&body(name))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{url} {good:?}");
            let v = sse_or_json(resp).await;
            assert_eq!(
                v["result"]["content"][0]["text"], "hi",
                "{url} {good:?}: {v}"
            );
        }
    }
    assert_eq!(
        env.stateless.calls() - before,
        8,
        "only the allowed requests reached the upstream"
    );
}

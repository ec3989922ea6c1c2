//! stdio upstreams end to end: the gateway spawns real MCP servers (the workspace's reference
//! server in `--stdio` mode, and `@modelcontextprotocol/server-everything` from npm) and clients
//! reach them over HTTP in both revisions, on `/mcp/{server}` and `/mcp`, through policy and
//! audit.

use futures_util::StreamExt as _;
use mcpgw_tests::db::TestDb;
use mcpgw_tests::{Seed, TestGateway, reference_server_bin, start_guarded};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const MODERN: &str = "2026-07-28";
const LEGACY: &str = "2025-11-25";

/// A raw MCP client over HTTP: one revision, one token, one endpoint.
struct Client {
    url: String,
    token: String,
    modern: bool,
    session: Option<String>,
    capabilities: Value,
    next: u64,
}

/// What one POST answered: status, and every JSON-RPC message of its body (one for JSON, each
/// event's for SSE).
struct Answer {
    status: StatusCode,
    messages: Vec<Value>,
}

impl Answer {
    /// The response (the message without a method).
    fn response(&self) -> &Value {
        self.messages
            .iter()
            .find(|m| m.get("method").is_none())
            .unwrap_or_else(|| panic!("no response among {:?}", self.messages))
    }

    fn result(&self) -> &Value {
        let r = self.response();
        r.get("result")
            .unwrap_or_else(|| panic!("not a result: {r}"))
    }
}

fn sse_messages(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            if data.is_empty() {
                return None;
            }
            serde_json::from_str(&data.join("\n")).ok()
        })
        .collect()
}

impl Client {
    async fn connect(url: String, token: &str, modern: bool, capabilities: Value) -> Client {
        let mut c = Client {
            url,
            token: token.to_owned(),
            modern,
            session: None,
            capabilities,
            next: 1,
        };
        if !modern {
            let init = c
                .request(
                    "initialize",
                    json!({"protocolVersion": LEGACY, "capabilities": c.capabilities,
                        "clientInfo": {"name": "stdio-e2e", "version": "1"}}),
                )
                .await;
            assert_eq!(init.status, StatusCode::OK);
            assert!(
                init.result()["serverInfo"].is_object(),
                "{:?}",
                init.messages
            );
            c.notify("notifications/initialized", json!({})).await;
        }
        c
    }

    fn post(&self, body: &Value, method: &str) -> reqwest::RequestBuilder {
        let mut req = reqwest::Client::new()
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("accept", "application/json, text/event-stream")
            .header(
                "mcp-protocol-version",
                if self.modern { MODERN } else { LEGACY },
            )
            .json(body);
        if self.modern && !method.is_empty() {
            req = req.header("mcp-method", method);
            if let Some(name) = body.pointer("/params/name").and_then(Value::as_str) {
                req = req.header("mcp-name", name);
            }
        }
        if let Some(s) = &self.session {
            req = req.header("mcp-session-id", s);
        }
        req
    }

    fn message(&mut self, method: &str, mut params: Value) -> Value {
        if self.modern {
            params["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!(MODERN);
            params["_meta"]["io.modelcontextprotocol/clientInfo"] =
                json!({"name": "stdio-e2e", "version": "1"});
            params["_meta"]["io.modelcontextprotocol/clientCapabilities"] =
                self.capabilities.clone();
        }
        let id = self.next;
        self.next += 1;
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
    }

    async fn request(&mut self, method: &str, params: Value) -> Answer {
        let body = self.message(method, params);
        let resp = self.post(&body, method).send().await.expect("POST");
        if let Some(s) = resp.headers().get("mcp-session-id") {
            self.session = Some(s.to_str().expect("session id").to_owned());
        }
        let status = resp.status();
        let sse = resp
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"));
        let text = resp.text().await.expect("body");
        let messages = if sse {
            sse_messages(&text)
        } else if text.is_empty() {
            Vec::new()
        } else {
            vec![serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))]
        };
        Answer { status, messages }
    }

    async fn notify(&self, method: &str, params: Value) {
        let body = json!({"jsonrpc": "2.0", "method": method, "params": params});
        let resp = self.post(&body, "").send().await.expect("POST");
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
    }

    async fn tools(&mut self) -> Vec<String> {
        let a = self.request("tools/list", json!({})).await;
        if self.modern {
            assert_eq!(a.result()["resultType"], "complete");
        }
        a.result()["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .map(|t| t["name"].as_str().expect("name").to_owned())
            .collect()
    }

    async fn call(&mut self, tool: &str, args: Value) -> Answer {
        self.request("tools/call", json!({"name": tool, "arguments": args}))
            .await
    }
}

/// Calls `tool` in a 2025-11-25 session, answers the one `sampling/createMessage` the server
/// sends on the call's stream with `reply`, and returns the call's answer.
async fn call_answering_sampling(c: &mut Client, tool: &str, args: Value, reply: &str) -> Value {
    let body = c.message("tools/call", json!({"name": tool, "arguments": args}));
    let resp = c.post(&body, "tools/call").send().await.expect("POST");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut stream = resp.bytes_stream();
    let mut buffer = String::new();
    let mut answered = false;
    let result = 'read: loop {
        let chunk = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("stream stalled")
            .expect("stream ended")
            .expect("chunk");
        buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            for m in sse_messages(&event) {
                if m["method"] == "sampling/createMessage" {
                    assert!(!answered, "asked twice");
                    answered = true;
                    let answer = json!({"jsonrpc": "2.0", "id": m["id"], "result": {
                        "role": "assistant", "model": "test-model", "stopReason": "endTurn",
                        "content": {"type": "text", "text": reply}}});
                    let r = c.post(&answer, "").send().await.expect("answer");
                    assert_eq!(r.status(), StatusCode::ACCEPTED);
                } else if m.get("method").is_none() {
                    break 'read m;
                }
            }
        }
    };
    assert!(answered, "the sampling request never came: {result}");
    result
}

/// Calls `tool` in 2026-07-28: expects `input_required` with one sampling request, retries with
/// `reply` as its answer, and returns the final answer and the retry's params.
async fn call_retrying_sampling(
    c: &mut Client,
    tool: &str,
    args: Value,
    reply: &str,
) -> (Value, Value) {
    let first = c.call(tool, args.clone()).await;
    let r = first.result();
    assert_eq!(r["resultType"], "input_required", "{r}");
    let requests = r["inputRequests"].as_object().expect("inputRequests");
    assert_eq!(requests.len(), 1, "{r}");
    let (key, question) = requests.iter().next().expect("one");
    assert_eq!(question["method"], "sampling/createMessage");
    let state = r["requestState"].as_str().expect("requestState");
    let retry = json!({"name": tool, "arguments": args, "requestState": state,
        "inputResponses": {key.clone(): {"role": "assistant", "model": "test-model",
            "stopReason": "endTurn", "content": {"type": "text", "text": reply}}}});
    let done = c.request("tools/call", retry.clone()).await;
    (done.response().clone(), retry)
}

fn text_of(result: &Value) -> String {
    result["content"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join("")
        })
        .unwrap_or_default()
}

/// Workspace `acme` with stdio server `server`; alice may use it all, bob only `bob_tool`;
/// enforcement on. Returns their tokens.
async fn seed_stdio(
    gw: &TestGateway,
    server: &str,
    stdio: Value,
    bob_tool: &str,
) -> (String, String) {
    let all = format!("{server}:*");
    let one = format!("{server}:{bob_tool}");
    let tokens = gw
        .seed(&Seed {
            workspace: "acme",
            enforce: true,
            servers: &[],
            members: &[("alice", &[all.as_str()]), ("bob", &[one.as_str()])],
        })
        .await;
    gw.admin_post(
        "/v1/workspaces/acme/servers",
        json!({"name": server, "stdio": stdio}),
    )
    .await;
    (tokens[0].clone(), tokens[1].clone())
}

/// [`seed_stdio`] with the reference server as `ref`, bob granted `ref:test_simple_text`.
async fn seed(gw: &TestGateway, stdio: Value) -> (String, String) {
    seed_stdio(gw, "ref", stdio, "test_simple_text").await
}

fn reference_stdio() -> Value {
    json!({"command": reference_server_bin().display().to_string(), "args": ["--stdio"]})
}

async fn status(gw: &TestGateway, ws: &str) -> Vec<Value> {
    let v: Value = gw
        .admin(Method::GET, &format!("/v1/workspaces/{ws}/servers/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("status json");
    v.as_array().cloned().expect("status list")
}

async fn wait_records(gw: &TestGateway, path: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: Value = gw
            .admin(Method::GET, path)
            .send()
            .await
            .expect("audit")
            .json()
            .await
            .expect("audit json");
        let records = v["records"].as_array().cloned().unwrap_or_default();
        if records.len() >= n {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} records at {path}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_server_serves_both_revisions_on_both_endpoints_through_policy_and_audit() {
    let db = TestDb::sqlite();
    let (gw, _policies) = start_guarded(&db.url).await;
    let (alice, bob) = seed(&gw, reference_stdio()).await;
    let server_url = format!("{}/mcp/ref", gw.mcp_url);
    let aggregate_url = format!("{}/mcp", gw.mcp_url);
    let caps = json!({"sampling": {}, "roots": {}});

    for (url, prefix) in [(&server_url, ""), (&aggregate_url, "ref_")] {
        for modern in [false, true] {
            let mut c = Client::connect(url.clone(), &alice, modern, caps.clone()).await;
            let tools = c.tools().await;
            assert!(
                tools.contains(&format!("{prefix}test_simple_text")),
                "{url} modern={modern}: {tools:?}"
            );
            let a = c
                .call(&format!("{prefix}test_simple_text"), json!({}))
                .await;
            assert_eq!(a.status, StatusCode::OK);
            assert_eq!(
                text_of(a.result()),
                "This is a simple text response for testing.",
                "{url} modern={modern}"
            );
            if modern {
                assert_eq!(a.result()["resultType"], "complete");
            }
            // Progress reaches the caller with the caller's own token.
            let a = c
                .request(
                    "tools/call",
                    json!({"name": format!("{prefix}test_tool_with_progress"), "arguments": {},
                        "_meta": {"progressToken": "mine-7"}}),
                )
                .await;
            let progress: Vec<&Value> = a
                .messages
                .iter()
                .filter(|m| m["method"] == "notifications/progress")
                .collect();
            assert!(
                !progress.is_empty(),
                "{url} modern={modern}: {:?}",
                a.messages
            );
            assert!(
                progress
                    .iter()
                    .all(|p| p["params"]["progressToken"] == "mine-7")
            );
            assert!(a.result()["content"].is_array());

            // bob sees and calls only what his grant allows.
            let mut b = Client::connect(url.clone(), &bob, modern, caps.clone()).await;
            let tools = b.tools().await;
            assert_eq!(tools, vec![format!("{prefix}test_simple_text")], "{url}");
            let denied = b
                .call(&format!("{prefix}test_tool_with_progress"), json!({}))
                .await;
            let r = denied.response();
            assert!(
                r.get("error").is_some() || r["result"]["isError"] == true,
                "bob's call was not refused: {r}"
            );
        }
    }

    // A question of the server (sampling) reaches a 2025-11-25 client on the call's stream and
    // its answer goes back to the process.
    for (url, prefix) in [(&server_url, ""), (&aggregate_url, "ref_")] {
        let tool = format!("{prefix}test_sampling");
        let mut c = Client::connect(url.clone(), &alice, false, caps.clone()).await;
        let result = call_answering_sampling(
            &mut c,
            &tool,
            json!({"prompt": "capital of France?"}),
            "Paris, says the client",
        )
        .await;
        assert!(
            result.to_string().contains("Paris, says the client"),
            "{url}: {result}"
        );

        // In 2026-07-28 the same question is an input_required result; the retry resumes the
        // call, and its requestState answers once.
        let mut m = Client::connect(url.clone(), &alice, true, caps.clone()).await;
        let (done, retry_params) = call_retrying_sampling(
            &mut m,
            &tool,
            json!({"prompt": "capital of France?"}),
            "Paris, retried",
        )
        .await;
        assert_eq!(done["result"]["resultType"], "complete", "{url}: {done}");
        assert!(done.to_string().contains("Paris, retried"));
        let replay = m.request("tools/call", retry_params).await;
        assert!(
            replay.response().get("error").is_some(),
            "{url}: {:?}",
            replay.messages
        );
    }

    // Every call was audited with its member, server and tool (and no payload).
    let records = wait_records(&gw, "/v1/audit?workspace=acme&member=alice", 10).await;
    assert!(records.iter().all(|r| r["server"] == "ref"));
    assert!(records.iter().any(|r| r["tool"] == "test_sampling"));
    let text = serde_json::to_string(&records).expect("json");
    assert!(!text.contains("Paris"), "a payload reached the audit trail");
    let denied = wait_records(&gw, "/v1/audit?workspace=acme&member=bob&decision=deny", 4).await;
    assert!(
        denied
            .iter()
            .all(|r| r["tool"] == "test_tool_with_progress")
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_child_sees_only_what_it_is_given() {
    let db = TestDb::sqlite();
    // Secrets of the gateway process: none may reach the child.
    // SAFETY: set before the gateway starts; every test of this binary only reads these names.
    unsafe {
        std::env::set_var("MCPGW_E2E_SECRET_DB", "postgres://secret-user:hunter2@db/x");
        std::env::set_var("MCPGW_E2E_GIVEN", "given-through-env-from");
    }
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("token");
    std::fs::write(&file, "from-a-file\n").expect("write");
    let (gw, _policies) = start_guarded(&db.url).await;
    let mut stdio = reference_stdio();
    stdio["env"] = json!([
        {"name": "GREETING", "value": "hello"},
        {"name": "GIVEN", "from": "MCPGW_E2E_GIVEN"},
        {"name": "FROM_FILE", "file": file.display().to_string()},
    ]);
    let (alice, _) = seed(&gw, stdio).await;
    let mut c = Client::connect(format!("{}/mcp/ref", gw.mcp_url), &alice, true, json!({})).await;
    let a = c.call("debug_environment", json!({})).await;
    let report: Value = serde_json::from_str(&text_of(a.result())).expect("environment JSON");
    let env = report["env"].as_object().expect("env");
    let mut names: Vec<&str> = env.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["FROM_FILE", "GIVEN", "GREETING", "HOME", "PATH", "TMPDIR"],
        "{report}"
    );
    assert_eq!(env["GIVEN"], "given-through-env-from");
    assert_eq!(env["FROM_FILE"], "from-a-file");
    let text = report.to_string();
    for secret in ["hunter2", &gw.admin_token, "test-admin-token"] {
        assert!(!text.contains(secret), "the child saw a gateway secret");
    }
    if running_as_root() {
        assert_eq!(
            report["uid"], 65534,
            "a root gateway runs children as nobody"
        );
    }
    // Listings name the sources, never the values.
    let listing = gw
        .admin(Method::GET, "/v1/workspaces/acme/servers")
        .send()
        .await
        .expect("list")
        .text()
        .await
        .expect("text");
    assert!(listing.contains("env:MCPGW_E2E_GIVEN"), "{listing}");
    assert!(!listing.contains("given-through-env-from") && !listing.contains("from-a-file"));
    // The status shows the process and its fence.
    let s = status(&gw, "acme").await;
    assert_eq!(s[0]["state"], "running", "{s:?}");
    assert!(
        s[0]["fence"]["steps"]
            .as_array()
            .is_some_and(|v| !v.is_empty())
    );
    gw.stop().await;
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn process_exists(pid: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // A zombie is a process nobody reaped: that counts as left behind.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    state.is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_child_is_restarted_and_a_hundred_calls_share_one_process() {
    let db = TestDb::sqlite();
    let (gw, _policies) = start_guarded(&db.url).await;
    let (alice, _) = seed(&gw, reference_stdio()).await;
    let url = format!("{}/mcp/ref", gw.mcp_url);
    let mut c = Client::connect(url.clone(), &alice, true, json!({})).await;
    assert_eq!(
        c.call("test_simple_text", json!({})).await.status,
        StatusCode::OK
    );
    let first_pid = status(&gw, "acme").await[0]["pid"].as_u64().expect("pid");

    // The call in flight when the process dies gets an error naming the server.
    let crashed = c.call("debug_crash", json!({"code": 3})).await;
    let r = crashed.response();
    let message = r.to_string();
    assert!(
        message.contains("ref") && message.contains("exited"),
        "not an error naming the server: {r}"
    );
    // It comes back by itself (backoff 1 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    let restarted = loop {
        let s = status(&gw, "acme").await;
        if s[0]["state"] == "running" && s[0]["restarts"] == 1 {
            break s[0].clone();
        }
        assert!(Instant::now() < deadline, "not restarted: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        restarted["last_exit"]
            .as_str()
            .is_some_and(|e| e.contains('3')),
        "{restarted}"
    );
    let pid = restarted["pid"].as_u64().expect("pid");
    assert_ne!(pid, first_pid);
    assert!(
        !process_exists(first_pid),
        "the crashed process was not reaped"
    );

    // 100 concurrent calls, one process.
    let calls = (0..100).map(|i| {
        let url = url.clone();
        let alice = alice.clone();
        async move {
            let mut c = Client::connect(url, &alice, i % 2 == 0, json!({})).await;
            let a = c.call("test_simple_text", json!({})).await;
            text_of(a.result())
        }
    });
    let texts = futures_util::future::join_all(calls).await;
    assert_eq!(texts.len(), 100);
    assert!(
        texts
            .iter()
            .all(|t| t == "This is a simple text response for testing.")
    );
    let s = status(&gw, "acme").await;
    assert_eq!(s[0]["pid"].as_u64(), Some(pid), "{s:?}");
    assert_eq!(s[0]["in_flight"], 0);

    // Shutdown leaves no process behind.
    gw.stop().await;
    assert!(
        !process_exists(pid),
        "the stdio server outlived the gateway"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_stdio_server_from_npm_works_through_the_gateway() {
    let Some((node, args)) = mcpgw_tests::server_everything_or_skip("server-everything") else {
        return;
    };
    let db = TestDb::sqlite();
    // SAFETY: set before the gateway starts; tests of this binary only read these names.
    unsafe {
        std::env::set_var("MCPGW_E2E_SECRET_DB", "postgres://secret-user:hunter2@db/x");
        std::env::set_var("MCPGW_E2E_GIVEN", "given-through-env-from");
    }
    let script_dir = std::path::Path::new(&args[0])
        .ancestors()
        .nth(4)
        .expect("the package's node_modules' parent")
        .to_path_buf();
    let (gw, _policies) = start_guarded(&db.url).await;
    let stdio = json!({"command": node.display().to_string(), "args": args,
        "cwd": script_dir.display().to_string(),
        "env": [{"name": "GIVEN", "from": "MCPGW_E2E_GIVEN"}]});
    let (alice, bob) = seed_stdio(&gw, "every", stdio, "echo").await;
    let (alice, bob) = (&alice, &bob);
    let caps = json!({"sampling": {}});
    let server_url = format!("{}/mcp/every", gw.mcp_url);
    let aggregate_url = format!("{}/mcp", gw.mcp_url);
    for (url, prefix) in [(&server_url, ""), (&aggregate_url, "every_")] {
        for modern in [false, true] {
            let mut c = Client::connect(url.clone(), alice, modern, caps.clone()).await;
            let tools = c.tools().await;
            for t in ["echo", "get-env", "trigger-long-running-operation"] {
                assert!(tools.contains(&format!("{prefix}{t}")), "{url}: {tools:?}");
            }
            let a = c
                .call(&format!("{prefix}echo"), json!({"message": "hi there"}))
                .await;
            assert_eq!(
                text_of(a.result()),
                "Echo: hi there",
                "{url} modern={modern}"
            );
            let a = c
                .request(
                    "tools/call",
                    json!({"name": format!("{prefix}trigger-long-running-operation"),
                        "arguments": {"duration": 1, "steps": 2},
                        "_meta": {"progressToken": 42}}),
                )
                .await;
            let progress: Vec<&Value> = a
                .messages
                .iter()
                .filter(|m| m["method"] == "notifications/progress")
                .collect();
            assert_eq!(progress.len(), 2, "{url} modern={modern}: {:?}", a.messages);
            assert!(progress.iter().all(|p| p["params"]["progressToken"] == 42));
            assert!(a.result()["content"].is_array());

            let mut b = Client::connect(url.clone(), bob, modern, caps.clone()).await;
            assert_eq!(b.tools().await, vec![format!("{prefix}echo")]);
            let r = b.call(&format!("{prefix}get-env"), json!({})).await;
            let r = r.response();
            assert!(
                r.get("error").is_some() || r["result"]["isError"] == true,
                "bob read the environment: {r}"
            );
        }
    }

    // The server asks the client to sample, in both revisions.
    let mut c = Client::connect(server_url.clone(), alice, false, caps.clone()).await;
    let result = call_answering_sampling(
        &mut c,
        "trigger-sampling-request",
        json!({"prompt": "a haiku", "maxTokens": 20}),
        "sampled by the legacy client",
    )
    .await;
    assert!(
        result.to_string().contains("sampled by the legacy client"),
        "{result}"
    );
    let mut m = Client::connect(server_url.clone(), alice, true, caps.clone()).await;
    let (result, _) = call_retrying_sampling(
        &mut m,
        "trigger-sampling-request",
        json!({"prompt": "a haiku", "maxTokens": 20}),
        "sampled by the modern client",
    )
    .await;
    assert_eq!(result["result"]["resultType"], "complete", "{result}");
    assert!(
        result.to_string().contains("sampled by the modern client"),
        "{result}"
    );

    // Its environment: what it was given, nothing of the gateway's.
    let env = m.call("get-env", json!({})).await;
    let env: Value = serde_json::from_str(&text_of(env.result())).expect("get-env JSON");
    let mut names: Vec<&str> = env
        .as_object()
        .expect("env object")
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["GIVEN", "HOME", "PATH", "TMPDIR"], "{env}");
    assert!(!env.to_string().contains("hunter2"));

    let records = wait_records(&gw, "/v1/audit?workspace=acme&member=alice", 10).await;
    assert!(records.iter().all(|r| r["server"] == "every"));
    assert!(
        records
            .iter()
            .any(|r| r["tool"] == "trigger-sampling-request")
    );
    assert!(
        !serde_json::to_string(&records)
            .expect("json")
            .contains("haiku")
    );
    let denied = wait_records(&gw, "/v1/audit?workspace=acme&member=bob&decision=deny", 4).await;
    assert!(denied.iter().all(|r| r["tool"] == "get-env"));
    let s = status(&gw, "acme").await;
    assert_eq!(s[0]["state"], "running", "{s:?}");
    gw.stop().await;
}

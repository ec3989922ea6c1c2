//! Shared helpers of the end-to-end tests.

pub mod browser;
pub mod db;
pub mod oidc;
pub mod tls;
pub mod upstream;

use mcpgw::policy::{Principal, Question};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Paths of the Wasm components built from `plugins/` and `tests/guests/` by `build.rs`.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));

    /// The bytes of a built guest.
    pub fn bytes(path: &str) -> Vec<u8> {
        std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
    }
}

/// Installs `src` as `dir/name` the way deploy tools do: write a hidden temp file, then rename.
pub fn install(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).expect("write temp module");
    let dest = dir.join(name);
    std::fs::rename(&tmp, &dest).expect("rename module into place");
    dest
}

/// Polls `cond` every millisecond until it holds or `timeout` passes; returns the time it took.
pub async fn wait_until_async(
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A member of workspace `acme` with these grants.
pub fn member(name: &str, grants: &[&str]) -> Principal {
    Principal {
        workspace: "acme".into(),
        member: Some(name.into()),
        grants: grants.iter().map(|g| g.to_string()).collect(),
    }
}

/// The workspace token of `acme`.
pub fn workspace_token() -> Principal {
    Principal {
        workspace: "acme".into(),
        member: None,
        grants: vec![],
    }
}

/// A question for the policy chain.
pub fn ask<'a>(
    p: &'a Principal,
    server: &'a str,
    tool: &'a str,
    args: Option<&'a str>,
) -> Question<'a> {
    Question {
        request_id: "req-1",
        principal: p,
        server,
        tool,
        arguments: args,
        facts: None,
        client: None,
        labels: &[],
    }
}

/// A gateway running in this process on a real listener (`127.0.0.1:0`), stopped on drop.
pub struct TestGateway {
    /// Base URL of the admin API.
    pub admin_url: String,
    /// Base URL of the MCP listener (`{mcp_url}/mcp/{server}`).
    pub mcp_url: String,
    /// The admin token.
    pub admin_token: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestGateway {
    /// Starts a gateway on `database` with default policy settings; returns once it answers.
    pub async fn start(database: &str) -> TestGateway {
        Self::start_with(database, mcpgw::policy::PolicyConfig::default()).await
    }

    /// Starts a gateway on `database` with these policy settings.
    pub async fn start_with(database: &str, policy: mcpgw::policy::PolicyConfig) -> TestGateway {
        Self::start_config(database, |c| c.policy = policy).await
    }

    /// Starts a gateway on `database` with the test defaults changed by `adjust`.
    pub async fn start_config(
        database: &str,
        adjust: impl FnOnce(&mut mcpgw::config::Config),
    ) -> TestGateway {
        let data_dir = std::env::temp_dir().join(format!("mcpgw-test-{}", std::process::id()));
        let mut config = mcpgw::config::Config {
            database: database.to_owned(),
            data_dir,
            listen: "127.0.0.1:0".parse().expect("addr"),
            admin_listen: Some("127.0.0.1:0".parse().expect("addr")),
            tls: None,
            admin_tls: None,
            admin_token: None,
            public_url: None,
            allowed_origins: Vec::new(),
            upstream_connect_timeout: Duration::from_secs(2),
            upstream_timeout: Duration::from_secs(5),
            policy: mcpgw::policy::PolicyConfig::default(),
            audit: mcpgw::audit::AuditConfig::default(),
            idp: mcpgw::oidc::Settings::default(),
            session: mcpgw::config::SessionConfig::default(),
        };
        adjust(&mut config);
        let admin_token = "test-admin-token-0123456789".to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind admin");
        let admin_url = format!("http://{}", listener.local_addr().expect("addr"));
        let mcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mcp");
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mcp_url = format!("{scheme}://{}", mcp.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let secret = mcpgw::config::Secret::new(admin_token.clone());
        let listeners = mcpgw::Listeners {
            mcp,
            admin: Some((listener, secret)),
        };
        let task = tokio::spawn(mcpgw::run_with(config, listeners, async {
            let _ = rx.await;
        }));
        let gw = TestGateway {
            admin_url,
            mcp_url,
            admin_token,
            shutdown: Some(tx),
            task: Some(task),
        };
        let health = format!("{}/healthz", gw.admin_url);
        let client = reqwest::Client::new();
        for _ in 0..500 {
            if client
                .get(&health)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return gw;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("gateway did not come up on {}", gw.admin_url);
    }

    /// An admin API request with the admin token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, format!("{}{path}", self.admin_url))
            .bearer_auth(&self.admin_token)
    }

    /// Sends `body` to the admin API with `method` at `path`, asserting success; the answer's
    /// JSON (null when it has none).
    pub async fn admin_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        admin_json(self.admin(method, path), path, body).await
    }

    /// POSTs `body` to the admin API at `path`, asserting success; the answer's JSON (null when
    /// it has none).
    pub async fn admin_post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let resp = self
            .admin(reqwest::Method::POST, path)
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.unwrap_or(serde_json::Value::Null)
    }

    /// Seeds a workspace through the admin API: its servers, its members with their grants, the
    /// enforcement switch; returns a fresh token per member, in the order given.
    pub async fn seed(&self, seed: &Seed<'_>) -> Vec<String> {
        let ws = seed.workspace;
        self.admin_post("/v1/workspaces", serde_json::json!({"name": ws}))
            .await;
        for (name, url) in seed.servers {
            self.admin_post(
                &format!("/v1/workspaces/{ws}/servers"),
                serde_json::json!({"name": name, "url": url}),
            )
            .await;
        }
        let resp = self
            .admin(
                reqwest::Method::PUT,
                &format!("/v1/workspaces/{ws}/enforce"),
            )
            .json(&serde_json::json!({"enforce": seed.enforce}))
            .send()
            .await
            .expect("enforce");
        assert!(resp.status().is_success(), "enforce: {}", resp.status());
        let mut tokens = Vec::new();
        for (member, grants) in seed.members {
            self.admin_post(
                &format!("/v1/workspaces/{ws}/members"),
                serde_json::json!({"name": member}),
            )
            .await;
            if !grants.is_empty() {
                self.admin_post(
                    &format!("/v1/workspaces/{ws}/grants"),
                    serde_json::json!({"member": member, "patterns": grants}),
                )
                .await;
            }
            let issued = self
                .admin_post(
                    &format!("/v1/workspaces/{ws}/tokens"),
                    serde_json::json!({"member": member}),
                )
                .await;
            tokens.push(issued["token"].as_str().expect("token").to_owned());
        }
        tokens
    }

    /// Stops the gateway and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("gateway task").expect("gateway run");
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A workspace for [`TestGateway::seed`].
pub struct Seed<'a> {
    /// Its name.
    pub workspace: &'a str,
    /// Enforcement on or off.
    pub enforce: bool,
    /// (name, url) of each upstream server.
    pub servers: &'a [(&'a str, &'a str)],
    /// (name, grant patterns) of each member.
    pub members: &'a [(&'a str, &'a [&'a str])],
}

/// A gateway on `database` with secrets-guard in its policy directory (kept alive by the
/// returned directory): the chain most tests run.
pub async fn start_guarded(database: &str) -> (TestGateway, tempfile::TempDir) {
    let policies = secrets_guard_dir();
    let gw = TestGateway::start_with(
        database,
        mcpgw::policy::PolicyConfig {
            dir: Some(policies.path().into()),
            ..mcpgw::policy::PolicyConfig::default()
        },
    )
    .await;
    (gw, policies)
}

/// A policy directory holding secrets-guard, the module most tests run behind the allowlist.
pub fn secrets_guard_dir() -> tempfile::TempDir {
    let policies = tempfile::tempdir().expect("policy dir");
    install(
        policies.path(),
        "10-secrets-guard.wasm",
        &guests::bytes(guests::SECRETS_GUARD),
    );
    policies
}

/// Sends an admin request with a JSON `body`, asserting success; the answer's JSON (null when it
/// has none).
async fn admin_json(
    req: reqwest::RequestBuilder,
    path: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let resp = req
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

/// A real `mcpgw serve` process on `database` (ephemeral ports, its own data directory), killed
/// when dropped. Needs the `mcpgw` binary beside the test executable (`cargo test --workspace`
/// builds it).
pub struct ServeProcess {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`: its MCP listener.
    pub mcp_url: String,
    /// `http://127.0.0.1:PORT`: its admin API.
    pub admin_url: String,
    _data: tempfile::TempDir,
}

/// The `mcpgw` binary cargo built beside this test executable (`cargo test --workspace`).
pub fn mcpgw_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.parent()
        .and_then(Path::parent)
        .map(|p| p.join("mcpgw"))
        .filter(|b| b.is_file())
        .expect("target/<profile>/mcpgw is missing: run the tests with `cargo test --workspace`")
}

/// The admin token of [`ServeProcess`]es.
pub const SERVE_ADMIN_TOKEN: &str = "serve-process-admin-token-0123456789";

impl ServeProcess {
    /// Starts one and waits for its ready lines.
    pub fn start(database: &str) -> ServeProcess {
        Self::start_args(database, &[])
    }

    /// Starts one with more `serve` arguments (`--policy-dir DIR`) and waits for its ready lines.
    pub fn start_args(database: &str, args: &[&str]) -> ServeProcess {
        use std::io::BufRead as _;
        let data = tempfile::tempdir().expect("data dir");
        let mut child = std::process::Command::new(mcpgw_bin())
            .args(["serve", "--database", database, "--listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(args)
            .env("MCPGW_ADMIN_TOKEN", SERVE_ADMIN_TOKEN)
            .env("MCPGW_DATA_DIR", data.path())
            .env("MCPGW_LOG", "warn")
            .current_dir(data.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn mcpgw serve");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let (mut mcp_url, mut admin_url) = (String::new(), String::new());
        for _ in 0..2 {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("ready line");
            let url = line.trim().rsplit(' ').next().unwrap_or("").to_owned();
            if line.contains("admin API listening on") {
                admin_url = url;
            } else if line.contains("MCP endpoint listening on") {
                mcp_url = url.trim_end_matches("/mcp/{server}").to_owned();
            }
        }
        assert!(
            mcp_url.starts_with("http://") && admin_url.starts_with("http://"),
            "no ready lines"
        );
        ServeProcess {
            child,
            mcp_url,
            admin_url,
            _data: data,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory now (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Sends `body` to its admin API, asserting success; the answer's JSON.
    pub async fn admin_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.admin_url))
            .bearer_auth(SERVE_ADMIN_TOKEN);
        admin_json(req, path, body).await
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw 2025-11-25 `initialize` with `token` at `url`, as a client's first request: its status
/// and `WWW-Authenticate` challenge (empty when none), to see whether a credential is taken.
pub async fn initialize_status(url: &str, token: &str) -> (reqwest::StatusCode, String) {
    let resp = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(
            &serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "mcpgw-tests", "version": "1"}}}),
        )
        .send()
        .await
        .expect("initialize");
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (resp.status(), challenge)
}

/// A new 2025-11-25 session at `url` (`/mcp` or `/mcp/{server}`) for `token`: its
/// `Mcp-Session-Id`.
pub async fn open_session(url: &str, token: &str) -> String {
    let resp = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(
            &serde_json::json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "mcpgw-tests", "version": "1.0"}}}),
        )
        .send()
        .await
        .expect("initialize");
    assert_eq!(
        resp.status(),
        reqwest::StatusCode::OK,
        "initialize at {url}"
    );
    resp.headers()["mcp-session-id"]
        .to_str()
        .expect("session id")
        .to_owned()
}

/// The JSON-RPC answer in a JSON or SSE response (an SSE stream's first result or error).
pub async fn mcp_answer(resp: reqwest::Response) -> serde_json::Value {
    let sse = resp
        .headers()
        .get("content-type")
        .is_some_and(|c| c.to_str().unwrap_or("").starts_with("text/event-stream"));
    let text = resp.text().await.expect("body");
    if !sse {
        return serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d.trim()).ok())
        .find(|v| v.get("result").is_some() || v.get("error").is_some())
        .unwrap_or_else(|| panic!("no answer in {text}"))
}

/// Audit records matching `query` (the admin API's filters), once there are at least `n`
/// (polled for up to 5 s: records are written off the request path).
pub async fn audit_records(gw: &TestGateway, query: &str, n: usize) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let v: serde_json::Value = gw
            .admin(
                reqwest::Method::GET,
                &format!("/v1/audit?{query}&limit=100"),
            )
            .send()
            .await
            .expect("audit")
            .json()
            .await
            .expect("json");
        let records = v["records"].as_array().cloned().unwrap_or_default();
        if records.len() >= n {
            return records;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "fewer than {n} records for {query}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `mcpgw ARGS... --database DATABASE` run from the temp directory: (exit success, stdout then
/// stderr).
pub fn mcpgw_cli(database: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(mcpgw_bin())
        .args(args)
        .args(["--database", database])
        .env("MCPGW_LOG", "warn")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run mcpgw");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The tools `token` sees at `url` (through an rmcp client), sorted.
pub async fn tool_names(url: &str, token: &str) -> Vec<String> {
    let client = mcp_client(url, token).await.expect("connect");
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    client.cancel().await.expect("close");
    names
}

/// An rmcp client (the official Rust SDK) connected to `url` with a bearer token.
pub async fn mcp_client(
    url: &str,
    token: &str,
) -> Result<rmcp::service::RunningService<rmcp::RoleClient, ()>, String> {
    use rmcp::ServiceExt as _;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let config =
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(token.to_owned());
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    ().serve(transport).await.map_err(|e| e.to_string())
}

/// The workspace's reference MCP server (`tests/reference-server`), to spawn as a stdio upstream
/// with `--stdio`: the binary cargo put in this test executable's profile directory,
/// `target/debug/reference-server`. `cargo test --workspace` (what `scripts/test` runs) and
/// `cargo build -p reference-server` build it; `cargo test -p mcpgw-tests` alone does not (a
/// test package cannot depend on another package's binary), so it panics then, naming the
/// command.
pub fn reference_server_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test>-<hash>
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} is not in target/<profile>/deps", exe.display()));
    let bin = profile.join("reference-server");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p reference-server` (or run the tests with \
         `cargo test --workspace`, which builds it)",
        bin.display()
    );
    bin
}

/// The npm package `scripts/setup` installs the third-party stdio server from.
const SERVER_EVERYTHING: &str = "@modelcontextprotocol/server-everything";

/// `@modelcontextprotocol/server-everything` as `scripts/setup` installs it (into
/// `target/server-everything`): the Node interpreter (the first `node` on `PATH`) and the
/// arguments that start it in stdio mode (`[".../dist/index.js", "stdio"]`); `None` when it is
/// not installed or there is no `node`.
///
/// It speaks 2025-11-25 and older (no `server/discover`). Tools: `echo` (`message`), `get-sum`
/// (`a`, `b`), `get-env` (the environment as JSON text), `trigger-long-running-operation`
/// (`duration` s, `steps`: one `notifications/progress` per step when the call has a
/// progressToken); with the client's `sampling` capability also `trigger-sampling-request`
/// (`prompt`, `maxTokens`: a `sampling/createMessage` to the client), and further tools by
/// capability (elicitation, roots). It logs one line to stderr at start and exits 0 when stdin
/// closes.
pub fn server_everything() -> Option<(PathBuf, Vec<String>)> {
    server_everything_found().ok()
}

/// [`server_everything`], or a clear skip line on stderr (`None`) when it is missing: the caller
/// returns early. Under `CI=true` a missing server fails test `test` instead.
pub fn server_everything_or_skip(test: &str) -> Option<(PathBuf, Vec<String>)> {
    match server_everything_found() {
        Ok(found) => Some(found),
        Err(why) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must run {test}: {why}"
            );
            eprintln!("\n*** SKIPPING {test}: {why} ***\n");
            None
        }
    }
}

fn server_everything_found() -> Result<(PathBuf, Vec<String>), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let script = root
        .join("target/server-everything/node_modules")
        .join(SERVER_EVERYTHING)
        .join("dist/index.js");
    if !script.is_file() {
        return Err(format!(
            "{SERVER_EVERYTHING} is not installed at {} (scripts/setup installs it)",
            script.display()
        ));
    }
    let node = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("node"))
        .find(|node| node.is_file())
        .ok_or_else(|| format!("no `node` on PATH to run {SERVER_EVERYTHING}"))?;
    Ok((node, vec![script.display().to_string(), "stdio".to_owned()]))
}

/// The interpreter of the venv `scripts/setup` makes at `target/mcp-python` (the official MCP
/// Python SDK and the SCIM client the tests drive, pinned in tests/python/requirements.txt), or
/// `MCPGW_TEST_PYTHON`; `None` (said loudly) when there is none. Under CI a missing venv fails.
pub fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MCPGW_TEST_PYTHON") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "MCPGW_TEST_PYTHON={} does not exist",
            p.display()
        );
        return Some(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/mcp-python/bin/python");
    if venv.exists() {
        return Some(venv);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run the Python tests: {} is missing (scripts/setup makes it) and \
         MCPGW_TEST_PYTHON is not set",
        venv.display()
    );
    eprintln!(
        "\n*** no Python venv at {} (run scripts/setup, or set MCPGW_TEST_PYTHON): \
         SKIPPING this test ***\n",
        venv.display()
    );
    None
}

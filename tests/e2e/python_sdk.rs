//! The official Python SDK (`mcp` from PyPI, which validates every result against the revision it
//! speaks) in front of the gateway: `tests/python/mcp_client.py` lists and calls tools on
//! `/mcp/{server}` and `/mcp` at 2026-07-28 and at 2025-11-25, and this test judges its reports.
//!
//! The interpreter is the venv `scripts/setup` makes at `target/mcp-python`, or `MCPGW_TEST_PYTHON`.
//! Without it the test says so and skips, except under CI, where it fails.

use mcpgw_tests::db::TestDb;
use mcpgw_tests::upstream::Upstream;
use mcpgw_tests::{Seed, python, start_guarded};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The client script the reports come from.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/mcp_client.py");

/// An AWS access key id (AWS's documented example), which secrets-guard refuses to let through.
fn aws_key() -> String {
    format!("AKIA{}", "IOSFODNN7EXAMPLE")
}

/// One run of the client script against one endpoint at one revision.
struct Case {
    /// Path under the MCP listener: `/mcp/db` or `/mcp`.
    path: &'static str,
    revision: &'static str,
    /// The tools the member's grants allow there, sorted.
    tools: &'static [&'static str],
    /// A granted tool, its arguments and a text its result contains.
    allowed: (&'static str, Value, &'static str),
    /// A granted tool whose arguments carry an AWS key: refused by secrets-guard at call time.
    denied: &'static str,
    /// An existing tool the member is not granted.
    ungranted: &'static str,
}

impl Case {
    fn name(&self) -> String {
        format!("{} at {}", self.path, self.revision)
    }
}

/// Runs the script to completion (killed after `timeout`) and parses its JSON report.
fn run_script(python: &Path, args: &[String], timeout: Duration) -> Result<Value, String> {
    let mut child = Command::new(python)
        .arg(SCRIPT)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start {}: {e}", python.display()))?;
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read(Box::new(child.stderr.take().expect("stderr")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the client script did not finish within {timeout:?}; stderr:\n{}",
                stderr.join().unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    );
    if !status.success() {
        return Err(format!(
            "the client script failed ({status}); stderr:\n{err}"
        ));
    }
    serde_json::from_str(&out)
        .map_err(|e| format!("unreadable report ({e}):\n{out}\nstderr:\n{err}"))
}

/// The SDK's error of a failed step, in full: type, JSON-RPC code and message (for a validation
/// error, pydantic's text, which names each field and why).
fn error_text(step: &Value) -> String {
    let e = &step["error"];
    let mut s = e["type"].as_str().unwrap_or("?").to_owned();
    if let Some(code) = e["code"].as_i64() {
        s.push_str(&format!(" {code}"));
    }
    s.push_str(": ");
    s.push_str(e["message"].as_str().unwrap_or(""));
    s
}

/// Everything wrong with one report, one line (or error text) each.
fn judge(case: &Case, report: &Value) -> Vec<String> {
    let steps = &report["steps"];
    let mut wrong = Vec::new();
    let mut check = |step: &str, ok: bool, what: String| {
        if !ok {
            wrong.push(format!("{step}: {what}"));
        }
    };
    let failed = |step: &str| {
        let s = &steps[step];
        if s.is_null() {
            Some("never ran (an earlier failure ended the session)".to_owned())
        } else if s["ok"] != true {
            Some(format!("the SDK raised {}", error_text(s)))
        } else {
            None
        }
    };
    let sdk = report["sdk"]["mcp"].as_str().unwrap_or("");
    check(
        "sdk",
        sdk.starts_with("2.3."),
        format!("expected mcp 2.3.x, the venv has {sdk:?}"),
    );

    match failed("connect") {
        Some(e) => check("connect", false, e),
        None => check(
            "connect",
            steps["connect"]["protocol_version"] == case.revision,
            format!("negotiated {}", steps["connect"]["protocol_version"]),
        ),
    }
    if !steps["close"].is_null() {
        check(
            "close",
            false,
            format!("the SDK raised {}", error_text(&steps["close"])),
        );
    }
    if case.revision == "2026-07-28" {
        if let Some(e) = failed("discover") {
            check("discover", false, e);
        }
        match failed("connect_auto") {
            Some(e) => check("connect_auto", false, e),
            None => check(
                "connect_auto",
                steps["connect_auto"]["protocol_version"] == case.revision,
                format!(
                    "a default (mode=\"auto\") client settled on {} instead",
                    steps["connect_auto"]["protocol_version"]
                ),
            ),
        }
    }

    match failed("list_tools") {
        Some(e) => check("list_tools", false, e),
        None => check(
            "list_tools",
            steps["list_tools"]["tools"] == json!(case.tools),
            format!(
                "listed {}, the grants allow {:?}",
                steps["list_tools"]["tools"], case.tools
            ),
        ),
    }

    match failed("call_allowed") {
        Some(e) => check("call_allowed", false, e),
        None => {
            let r = &steps["call_allowed"];
            let text = r["text"].as_str().unwrap_or("");
            check(
                "call_allowed",
                r["is_error"] == false && text.contains(case.allowed.2),
                format!("expected the upstream's {:?}, got {r}", case.allowed.2),
            );
        }
    }

    match failed("call_denied") {
        Some(e) => check(
            "call_denied",
            false,
            format!("a policy denial must be a tool result (isError), but {e}"),
        ),
        None => {
            let r = &steps["call_denied"];
            let text = r["text"].as_str().unwrap_or("");
            check(
                "call_denied",
                r["is_error"] == true
                    && text.contains("secrets-guard")
                    && text.contains("AWS access key id")
                    && text.contains("arguments.text"),
                format!("expected isError naming secrets-guard and the AWS key's place, got {r}"),
            );
            check(
                "call_denied",
                !text.contains(&aws_key()),
                "the reason repeats the secret".to_owned(),
            );
        }
    }

    let r = &steps["call_ungranted"];
    let unknown = format!("Unknown tool: {}", case.ungranted);
    check(
        "call_ungranted",
        r["ok"] == false
            && r["error"]["type"] == "MCPError"
            && r["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(&unknown)),
        format!("expected an MCP error {unknown:?}, got {r}"),
    );
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_lists_and_calls_tools_at_both_revisions_and_reads_denials() {
    let Some(python) = python() else {
        return;
    };
    let db = TestDb::sqlite();
    let (stateful, stateless) = (Upstream::start(true).await, Upstream::start(false).await);
    let (gw, _policies) = start_guarded(&db.url).await;
    let tokens = gw
        .seed(&Seed {
            workspace: "acme",
            enforce: true,
            servers: &[("db", &stateful.url), ("search", &stateless.url)],
            members: &[(
                "carol",
                &[
                    "db:echo",
                    "db:query",
                    "search:echo",
                    "search:schema",
                    "ref:test_simple_text",
                    "ref:test_error_handling",
                ],
            )],
        })
        .await;
    let token = tokens[0].clone();
    // A stdio upstream too: the reference server, spawned by the gateway.
    gw.admin_post(
        "/v1/workspaces/acme/servers",
        json!({"name": "ref", "stdio": {
            "command": mcpgw_tests::reference_server_bin().display().to_string(),
            "args": ["--stdio"]}}),
    )
    .await;

    let mut cases = Vec::new();
    for revision in ["2026-07-28", "2025-11-25"] {
        cases.push(Case {
            path: "/mcp/db",
            revision,
            tools: &["echo", "query"],
            allowed: ("query", json!({"sql": "select 1"}), "rows for: select 1"),
            denied: "echo",
            ungranted: "schema",
        });
        cases.push(Case {
            path: "/mcp/search",
            revision,
            tools: &["echo", "schema"],
            allowed: ("echo", json!({"text": "stateless ok"}), "stateless ok"),
            denied: "echo",
            ungranted: "query",
        });
        cases.push(Case {
            path: "/mcp/ref",
            revision,
            tools: &["test_error_handling", "test_simple_text"],
            allowed: ("test_simple_text", json!({}), "simple text response"),
            denied: "test_error_handling",
            ungranted: "test_image_content",
        });
        cases.push(Case {
            path: "/mcp",
            revision,
            tools: &[
                "db_echo",
                "db_query",
                "ref_test_error_handling",
                "ref_test_simple_text",
                "search_echo",
                "search_schema",
            ],
            allowed: ("db_query", json!({"sql": "select 3"}), "rows for: select 3"),
            denied: "search_echo",
            ungranted: "db_schema",
        });
    }

    let runs = cases.iter().map(|case| {
        let args = vec![
            format!("--url={}{}", gw.mcp_url, case.path),
            format!("--token={token}"),
            format!("--revision={}", case.revision),
            format!("--allowed={}", case.allowed.0),
            format!("--allowed-args={}", case.allowed.1),
            format!("--denied={}", case.denied),
            format!(
                "--denied-args={}",
                json!({"text": format!("deploy with {}", aws_key())})
            ),
            format!("--ungranted={}", case.ungranted),
        ];
        let python = python.clone();
        tokio::task::spawn_blocking(move || run_script(&python, &args, Duration::from_secs(180)))
    });
    let reports = futures_util::future::join_all(runs).await;

    let mut failures = Vec::new();
    for (case, report) in cases.iter().zip(reports) {
        match report.unwrap() {
            Err(e) => failures.push(format!("{}: {e}", case.name())),
            Ok(report) => {
                let wrong = judge(case, &report);
                if wrong.is_empty() {
                    eprintln!("{}: ok", case.name());
                } else {
                    eprintln!("{}: the client's report:\n{report:#}", case.name());
                }
                failures.extend(wrong.into_iter().map(|w| format!("{}: {w}", case.name())));
            }
        }
    }
    let upstream_calls = stateful.calls() + stateless.calls();
    // One allowed call per HTTP-upstream case reaches an upstream; denied and ungranted ones
    // never do (the stdio server's calls are not counted here).
    if failures.is_empty() {
        let http_cases = cases.iter().filter(|c| c.path != "/mcp/ref").count();
        assert_eq!(upstream_calls, http_cases, "only the allowed calls ran");
    }
    assert!(
        failures.is_empty(),
        "the Python SDK's view of the gateway, {} problem(s):\n\n{}\n",
        failures.len(),
        failures.join("\n\n")
    );
    gw.stop().await;
}

//! Rate limits end to end, with a real MCP server behind the gateway: a member over their limit
//! gets a JSON-RPC error saying when to retry (on `/mcp/{server}` and on `/mcp`), waiting that
//! long is enough, nobody else is counted, a role's limit set through the CLI holds within a
//! second, refusals are audited and counted in the metrics, and with enforcement off they are
//! would-deny.

use mcpgw_tests::db::TestDb;
use mcpgw_tests::upstream::Toolbox;
use mcpgw_tests::{Seed, TestGateway, audit_records, mcp_answer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// `tools/call` of `server:tool` on `/mcp/{server}`: the JSON-RPC answer.
async fn call(base: &str, token: &str, server: &str, tool: &str) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{base}/mcp/{server}"))
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": tool, "arguments": {}}}))
        .send()
        .await
        .expect("tools/call");
    assert_eq!(resp.status(), StatusCode::OK);
    mcp_answer(resp).await
}

/// The tool result's text, or `None` for a JSON-RPC error.
fn text(v: &Value) -> Option<&str> {
    v.get("error").is_none().then(|| {
        v["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
    })
}

/// Asserts `v` is the rate limit's refusal; returns its retry time.
fn refused(v: &Value, names: &str) -> Duration {
    let e = &v["error"];
    assert_eq!(e["code"], -32029, "{v}");
    let message = e["message"].as_str().expect("message");
    assert!(message.contains(names), "{message}");
    assert!(message.contains("retry in"), "{message}");
    Duration::from_millis(e["data"]["retryAfterMs"].as_u64().expect("retryAfterMs"))
}

/// `mcpgw limit ...` on `database`: (exit success, stdout then stderr).
fn limit_cli(database: &str, args: &[&str]) -> (bool, String) {
    let mut all = vec!["limit"];
    all.extend_from_slice(args);
    mcpgw_tests::mcpgw_cli(database, &all)
}

/// The value of a metrics line.
async fn metric(gw: &TestGateway, line: &str) -> u64 {
    let text = gw
        .admin(Method::GET, "/metrics")
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix(line))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_over_a_limit_is_told_when_to_retry_and_nobody_else_is_counted() {
    let db = TestDb::sqlite();
    let ci = Toolbox::new(&[
        ("deploy", "Deploy the service", "deployed"),
        ("status", "Show the deploy status", "all green"),
    ]);
    let (ci_url, _c) = ci.serve(false).await;
    let gw = TestGateway::start(&db.url).await;
    let tokens = gw
        .seed(&Seed {
            workspace: "acme",
            enforce: true,
            servers: &[("ci", &ci_url)],
            members: &[
                ("alice", &["ci:*"]),
                ("bob", &["ci:*"]),
                ("carol", &["ci:*"]),
            ],
        })
        .await;
    let (alice, bob, carol) = (&tokens[0], &tokens[1], &tokens[2]);
    let base = gw.mcp_url.as_str();

    // Alice: two deploys a minute (burst defaults to the rate's N). Set through the admin API,
    // which holds on this gateway before it answers.
    let set = gw
        .admin_call(
            Method::PUT,
            "/v1/workspaces/acme/limits",
            json!({"subject": "alice", "pattern": "ci:deploy", "rate": "2/min"}),
        )
        .await;
    assert_eq!(set[0]["subject"], "member:alice", "{set}");
    assert_eq!(set[0]["rate"], "2/min");
    assert_eq!(set[0]["burst"], 2);
    for _ in 0..2 {
        assert_eq!(
            text(&call(base, alice, "ci", "deploy").await),
            Some("deployed")
        );
    }
    let upstream_before = ci.calls.load(Ordering::SeqCst);
    let wait = refused(
        &call(base, alice, "ci", "deploy").await,
        "rate limit 2/min on ci:deploy for member:alice",
    );
    assert!(
        wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
        "{wait:?}"
    );
    assert_eq!(
        ci.calls.load(Ordering::SeqCst),
        upstream_before,
        "a refused call reached the upstream"
    );
    // The same bucket on `/mcp` (a 2025-11-25 session; the tool is `ci_deploy` there).
    let session = mcpgw_tests::open_session(&format!("{base}/mcp"), alice).await;
    let aggregated = reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .bearer_auth(alice)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .json(&json!({"jsonrpc": "2.0", "id": "d", "method": "tools/call",
            "params": {"name": "ci_deploy", "arguments": {}}}))
        .send()
        .await
        .expect("tools/call");
    let v = mcp_answer(aggregated).await;
    assert_eq!(v["id"], "d", "{v}");
    refused(&v, "for member:alice");
    // Her other tools, and the other members, are not counted.
    for _ in 0..4 {
        assert_eq!(
            text(&call(base, alice, "ci", "status").await),
            Some("all green")
        );
        assert_eq!(
            text(&call(base, carol, "ci", "deploy").await),
            Some("deployed")
        );
    }

    // A role's limit, set through the CLI from another process: bob holds the role and is
    // limited within a second; waiting as long as he is told is enough.
    gw.admin_call(
        Method::POST,
        "/v1/workspaces/acme/roles",
        json!({"name": "intern", "patterns": []}),
    )
    .await;
    gw.admin_call(
        Method::PUT,
        "/v1/workspaces/acme/members/bob/roles/intern",
        json!({}),
    )
    .await;
    let (ok, out) = limit_cli(&db.url, &["set", "acme", "intern", "ci:*", "1/s"]);
    assert!(ok, "{out}");
    assert!(out.contains("role:intern on ci:*, 1/s, burst 1"), "{out}");
    let set_at = Instant::now();
    let wait = loop {
        let v = call(base, bob, "ci", "status").await;
        if v.get("error").is_some() {
            break refused(&v, "rate limit 1/s on ci:* for role:intern");
        }
        assert!(
            set_at.elapsed() < Duration::from_secs(1),
            "the role's limit did not hold within a second"
        );
    };
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
    tokio::time::sleep(wait).await;
    assert_eq!(
        text(&call(base, bob, "ci", "status").await),
        Some("all green")
    );

    // Each refusal is audited against its caller, without arguments, and counted.
    let denied = audit_records(&gw, "workspace=acme&decision=deny", 3).await;
    let of = |member: &str| {
        denied
            .iter()
            .filter(|r| r["member"] == member && r["module"] == "rate-limit")
            .count()
    };
    assert_eq!(of("alice"), 2, "{denied:?}");
    assert!(of("bob") >= 1, "{denied:?}");
    assert!(
        denied
            .iter()
            .all(|r| r["error_code"] == "rate-limited" && r["status"] == "denied"),
        "{denied:?}"
    );
    let counted = metric(&gw, "mcpgw_rate_limited_total{decision=\"deny\"}").await;
    assert_eq!(counted, 2 + of("bob") as u64);

    // Enforcement off: over the limit, the call goes through as a would-deny.
    let resp = gw
        .admin(Method::PUT, "/v1/workspaces/acme/enforce")
        .json(&json!({"enforce": false}))
        .send()
        .await
        .expect("enforce");
    assert!(resp.status().is_success());
    let v = call(base, alice, "ci", "deploy").await;
    assert_eq!(text(&v), Some("deployed"), "{v}");
    assert_eq!(
        metric(&gw, "mcpgw_rate_limited_total{decision=\"would-deny\"}").await,
        1
    );
    let would = audit_records(&gw, "workspace=acme&decision=would-deny", 1).await;
    assert_eq!(would[0]["module"], "rate-limit", "{would:?}");
    assert_eq!(would[0]["status"], "success", "{would:?}");

    // The CLI lists and removes limits, and says why it refuses bad ones.
    let (ok, out) = limit_cli(&db.url, &["list", "acme"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("member:alice") && out.contains("2/min"),
        "{out}"
    );
    assert!(out.contains("role:intern") && out.contains("1/s"), "{out}");
    let (ok, out) = limit_cli(&db.url, &["remove", "acme", "alice", "ci:deploy"]);
    assert!(ok, "{out}");
    let (_, out) = limit_cli(&db.url, &["list", "acme"]);
    assert!(!out.contains("member:alice"), "{out}");
    for (args, why) in [
        (
            ["set", "acme", "alice", "ci:deploy", "0/s"],
            "N/s, N/min or N/h",
        ),
        (
            ["set", "acme", "alice", "ci:deploy", "5/day"],
            "N/s, N/min or N/h",
        ),
        (
            ["set", "acme", "nobody", "ci:deploy", "5/s"],
            "unknown member or role",
        ),
        (["set", "acme", "alice", "ci:[", "5/s"], "pattern"),
    ] {
        let (ok, out) = limit_cli(&db.url, &args);
        assert!(!ok, "{args:?} was accepted: {out}");
        assert!(out.contains(why), "{args:?}: {out}");
    }
    gw.stop().await;
}

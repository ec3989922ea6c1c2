//! The audit trail end to end, on SQLite and PostgreSQL: one record per `tools/call` on every path,
//! no payload anywhere in the store, tamper evidence, pruning, and a stalled store.

use mcpgw::audit::{self, AuditConfig, Filter, Record};
use mcpgw::policy::PolicyConfig;
use mcpgw::store::Store;
use mcpgw_tests::db::TestDb;
use mcpgw_tests::upstream::Upstream;
use mcpgw_tests::{TestGateway, guests, install, mcp_client, secrets_guard_dir};
use reqwest::{Method, StatusCode};
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use sqlx::Connection as _;
use std::time::Duration;

const CANARY: &str = "CANARY-5f1e0c7d-payload-must-not-be-stored";
const AWS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";

fn args(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().cloned().unwrap()
}

/// A JSON-RPC POST with a bearer token; answers read from JSON or SSE.
async fn rpc(url: &str, token: &str, body: Value, timeout: Option<Duration>) -> Option<Value> {
    let mut req = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(&body);
    if let Some(t) = timeout {
        req = req.timeout(t);
    }
    let resp = req.send().await.ok()?;
    let sse = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
    let text = resp.text().await.ok()?;
    if !sse {
        return serde_json::from_str(&text).ok();
    }
    text.split("\n\n").find_map(|e| {
        let data: String = e
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .collect();
        serde_json::from_str::<Value>(&data)
            .ok()
            .filter(|v| v.get("id").is_some())
    })
}

fn call(id: u64, tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": tool, "arguments": arguments}})
}

async fn token(gw: &TestGateway, workspace: &str, member: &str) -> String {
    let v: Value = gw
        .admin(Method::POST, &format!("/v1/workspaces/{workspace}/tokens"))
        .json(&json!({"member": member}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["token"].as_str().unwrap().to_owned()
}

/// Every record in the store, oldest first (read after the gateway flushed on stop).
async fn records(url: &str) -> Vec<Record> {
    let store = Store::connect(url).await.unwrap();
    let filter = Filter {
        limit: Some(100_000),
        ..Filter::default()
    };
    audit::store::query(store.db(), &filter).await.unwrap()
}

fn one<'a>(records: &'a [Record], what: &str, pred: impl Fn(&Record) -> bool) -> &'a Record {
    let found: Vec<&Record> = records.iter().filter(|r| pred(r)).collect();
    assert_eq!(found.len(), 1, "exactly one record for {what}: {found:#?}");
    found[0]
}

async fn every_path_yields_one_record(db: TestDb) {
    let backend = db.backend;
    let stateful = Upstream::start(true).await;
    let stateless = Upstream::start(false).await;
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_url = format!("http://{}/mcp", hole.local_addr().unwrap());
    let policies = secrets_guard_dir();
    let dir = policies.path().to_owned();
    let gw = TestGateway::start_config(&db.url, |c| {
        c.policy = PolicyConfig {
            dir: Some(dir),
            ..PolicyConfig::default()
        };
        c.upstream_timeout = Duration::from_millis(800);
        // The made-up tool below must reach its upstream, which lists no such tool: with
        // pinning enforced the gateway refuses it as unknown itself (flows.rs tests that).
        c.session.pinning = mcpgw::catalog::PinMode::Warn;
    })
    .await;
    gw.admin_post("/v1/workspaces", json!({"name": "acme"}))
        .await;
    gw.admin(Method::PUT, "/v1/workspaces/acme/enforce")
        .json(&json!({"enforce": true}))
        .send()
        .await
        .unwrap();
    for (name, url) in [
        ("db", stateful.url.as_str()),
        ("search", stateless.url.as_str()),
        ("down", "http://127.0.0.1:9/mcp"),
        ("hole", hole_url.as_str()),
        ("trapped", stateless.url.as_str()),
    ] {
        gw.admin_post(
            "/v1/workspaces/acme/servers",
            json!({"name": name, "url": url}),
        )
        .await;
    }
    for m in ["alice", "bob"] {
        gw.admin_post("/v1/workspaces/acme/members", json!({"name": m}))
            .await;
    }
    gw.admin_post("/v1/workspaces/acme/grants",
        json!({"member": "alice", "patterns": ["db:*", "search:*", "down:*", "hole:*", "trapped:*"]}),
    )
    .await;
    gw.admin_post(
        "/v1/workspaces/acme/grants",
        json!({"member": "bob", "patterns": ["db:schema"]}),
    )
    .await;
    // A second workspace that only watches: denials are would-deny.
    gw.admin_post("/v1/workspaces", json!({"name": "beta"}))
        .await;
    gw.admin_post(
        "/v1/workspaces/beta/servers",
        json!({"name": "search", "url": stateless.url}),
    )
    .await;
    gw.admin_post("/v1/workspaces/beta/members", json!({"name": "carol"}))
        .await;
    let alice = token(&gw, "acme", "alice").await;
    let bob = token(&gw, "acme", "bob").await;
    let carol = token(&gw, "beta", "carol").await;
    let url = |s: &str| format!("{}/mcp/{s}", gw.mcp_url);

    // allow / success, through a 2025-11-25 session (rmcp client).
    let client = mcp_client(&url("db"), &alice).await.unwrap();
    let r = client
        .call_tool(
            CallToolRequestParams::new("query").with_arguments(args(json!({"sql": "select 1"}))),
        )
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true));
    // deny: bob may not see db:query.
    let bob_client = mcp_client(&url("db"), &bob).await.unwrap();
    assert!(
        bob_client
            .call_tool(
                CallToolRequestParams::new("query")
                    .with_arguments(args(json!({"sql": "select 2"})))
            )
            .await
            .is_err()
    );
    // tool-error.
    let v = rpc(
        &url("search"),
        &alice,
        call(1, "fail", json!({"text": "boom"})),
        None,
    )
    .await
    .unwrap();
    assert_eq!(v["result"]["isError"], true, "{v}");
    // The canary goes upstream in the arguments and comes back in the result.
    let v = rpc(
        &url("search"),
        &alice,
        call(2, "echo", json!({"text": CANARY})),
        None,
    )
    .await
    .unwrap();
    assert_eq!(v["result"]["content"][0]["text"], CANARY, "{v}");
    // deny by a module reading the arguments.
    let v = rpc(
        &url("search"),
        &alice,
        call(3, "echo", json!({"text": AWS_KEY})),
        None,
    )
    .await
    .unwrap();
    assert_eq!(v["result"]["isError"], true, "{v}");
    // The upstream's own JSON-RPC error.
    let v = rpc(&url("search"), &alice, call(4, "nosuch", json!({})), None)
        .await
        .unwrap();
    assert!(v["error"]["code"].is_i64(), "{v}");
    // upstream-error and timeout.
    let v = rpc(&url("down"), &alice, call(5, "query", json!({})), None)
        .await
        .unwrap();
    assert!(v["error"].is_object(), "{v}");
    let v = rpc(&url("hole"), &alice, call(6, "query", json!({})), None)
        .await
        .unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{v}"
    );
    // cancelled: the client gives up while the tool runs.
    let gave_up = rpc(
        &url("search"),
        &alice,
        call(7, "slow", json!({"steps": 0, "delay_ms": 3000})),
        Some(Duration::from_millis(300)),
    )
    .await;
    assert!(gave_up.is_none());
    // The aggregated endpoint resolves the exposed name to server and tool.
    let v = rpc(
        &format!("{}/mcp", gw.mcp_url),
        &alice,
        call(8, "db_schema", json!({})),
        None,
    )
    .await
    .unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "users(id, name)", "{v}");
    // would-deny: carol has no grants, but beta does not enforce.
    let v = rpc(
        &url("search"),
        &carol,
        call(9, "echo", json!({"text": "watched"})),
        None,
    )
    .await
    .unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "watched", "{v}");
    // Failed authentication: a made-up token, and none at all.
    let v = rpc(
        &url("search"),
        "mcpgw_not-a-real-token",
        call(10, "echo", json!({})),
        None,
    )
    .await
    .unwrap();
    assert!(v["error"].is_object());
    let resp = reqwest::Client::new()
        .post(url("search"))
        .json(&call(11, "echo", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    client.cancel().await.ok();
    bob_client.cancel().await.ok();

    // A policy error: a module that traps on server `trapped`, loaded by a second gateway on the
    // same database (both append to acme's chain).
    let hostile_dir = tempfile::tempdir().unwrap();
    install(
        hostile_dir.path(),
        "50-hostile.wasm",
        &guests::bytes(guests::HOSTILE),
    );
    std::fs::write(
        hostile_dir.path().join("50-hostile.toml"),
        "mode = \"panic\"\nonly_server = \"trapped\"\n",
    )
    .unwrap();
    let hd = hostile_dir.path().to_owned();
    let gw2 = TestGateway::start_config(&db.url, |c| {
        c.policy = PolicyConfig {
            dir: Some(hd),
            ..PolicyConfig::default()
        };
    })
    .await;
    let v = rpc(
        &format!("{}/mcp/trapped", gw2.mcp_url),
        &alice,
        call(12, "echo", json!({"text": "x"})),
        None,
    )
    .await
    .unwrap();
    assert!(v["error"].is_object(), "{v}");

    // Filters on the admin API.
    let filtered = wait_for_records(&gw, "/v1/audit?workspace=acme&member=bob", 1).await;
    assert_eq!(filtered[0]["decision"], "deny");
    let denied = wait_for_records(&gw, "/v1/audit?workspace=acme&decision=deny", 2).await;
    assert!(denied.iter().all(|r| r["decision"] == "deny"));
    let bad = gw
        .admin(Method::GET, "/v1/audit?decision=maybe")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    // Stop both: shutdown flushes the trail. Then read the store itself.
    gw2.stop().await;
    gw.stop().await;
    let all = records(&db.url).await;
    let acme: Vec<Record> = all
        .iter()
        .filter(|r| r.workspace == "acme")
        .cloned()
        .collect();
    assert_eq!(
        acme.len(),
        11,
        "{backend}: one record per tools/call in acme: {acme:#?}"
    );
    let at = |server: &str, tool: &str, member: &str| {
        let (s, t, m) = (server.to_owned(), tool.to_owned(), member.to_owned());
        move |r: &Record| r.server == s && r.tool == t && r.member.as_deref() == Some(m.as_str())
    };
    let r = one(&acme, "allow/success", at("db", "query", "alice"));
    assert_eq!(
        (r.decision.as_str(), r.status.as_str()),
        ("allow", "success")
    );
    assert!(r.session_id.is_some(), "the session is recorded");
    assert!(r.token_id.as_deref().unwrap().starts_with("tok_"));
    assert!(
        r.upstream_latency_us
            .is_some_and(|u| u > 0 && u <= r.latency_us)
    );
    assert!(r.latency_us > 0 && r.module.is_none() && r.error_code.is_none());
    let r = one(&acme, "deny", at("db", "query", "bob"));
    assert_eq!((r.decision.as_str(), r.status.as_str()), ("deny", "denied"));
    assert_eq!(r.module.as_deref(), Some("allowlist"));
    assert_eq!(r.module_digest.as_ref().map(String::len), Some(64));
    assert!(r.upstream_latency_us.is_none(), "never went upstream");
    let r = one(&acme, "tool-error", at("search", "fail", "alice"));
    assert_eq!(
        (r.decision.as_str(), r.status.as_str()),
        ("allow", "tool-error")
    );
    let echoes: Vec<&Record> = acme
        .iter()
        .filter(|r| r.server == "search" && r.tool == "echo")
        .collect();
    assert_eq!(echoes.len(), 2);
    assert!(echoes.iter().any(|r| r.status == "success"));
    let guarded = echoes.iter().find(|r| r.status == "denied").unwrap();
    assert_eq!(guarded.decision, "deny");
    assert!(
        guarded.module.as_deref().unwrap().contains("secrets-guard"),
        "{guarded:?}"
    );
    let r = one(
        &acme,
        "upstream JSON-RPC error",
        at("search", "nosuch", "alice"),
    );
    assert_eq!(r.status, "upstream-error");
    assert!(
        r.error_code.as_deref().unwrap().starts_with("-326"),
        "{r:?}"
    );
    let r = one(&acme, "unreachable", at("down", "query", "alice"));
    assert_eq!(r.status, "upstream-error");
    let r = one(&acme, "timeout", at("hole", "query", "alice"));
    assert_eq!(r.status, "timeout");
    let r = one(&acme, "cancelled", at("search", "slow", "alice"));
    assert_eq!(r.status, "cancelled");
    assert!(r.latency_us >= 250_000, "{r:?}");
    let r = one(&acme, "aggregated", at("db", "schema", "alice"));
    assert_eq!(r.status, "success");
    let r = one(&acme, "policy error", at("trapped", "echo", "alice"));
    assert_eq!(
        (r.decision.as_str(), r.status.as_str()),
        ("error", "denied")
    );
    assert!(r.module.as_deref().unwrap().contains("hostile"), "{r:?}");
    let beta: Vec<&Record> = all.iter().filter(|r| r.workspace == "beta").collect();
    assert_eq!(beta.len(), 1);
    assert_eq!(
        (beta[0].decision.as_str(), beta[0].status.as_str()),
        ("would-deny", "success")
    );
    assert_eq!(beta[0].module.as_deref(), Some("allowlist"));
    let auth: Vec<&Record> = all.iter().filter(|r| r.kind == audit::KIND_AUTH).collect();
    assert_eq!(auth.len(), 2, "{auth:#?}");
    assert!(auth.iter().all(|r| r.workspace.is_empty()
        && r.member.is_none()
        && r.token_id.is_none()
        && r.server == "search"));
    let mut why: Vec<&str> = auth
        .iter()
        .map(|r| r.error_code.as_deref().unwrap())
        .collect();
    why.sort();
    assert_eq!(why, ["invalid-token", "missing-token"]);
    let mut ids: Vec<&str> = all.iter().map(|r| r.request_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), all.len(), "request ids are unique");

    // Every chain verifies; the chains are per workspace.
    let store = Store::connect(&db.url).await.unwrap();
    let report = audit::store::verify(store.db(), None, &[]).await.unwrap();
    assert!(report.broken.is_none(), "{report:?}");
    assert_eq!(report.records as usize, all.len());
    let mut chains: Vec<&str> = report.chains.iter().map(|c| c.workspace.as_str()).collect();
    chains.sort();
    assert_eq!(chains, ["", "acme", "beta"]);

    // No payload anywhere in the store: neither the canary (arguments and result), nor the secret,
    // nor a token.
    let needles = [CANARY, AWS_KEY, alice.as_str(), bob.as_str(), "boom"];
    match &db.sqlite_path {
        Some(path) => {
            for suffix in ["", "-wal", "-shm"] {
                let file = format!("{}{suffix}", path.display());
                let Ok(bytes) = std::fs::read(&file) else {
                    continue;
                };
                for n in needles {
                    assert!(
                        !bytes.windows(n.len()).any(|w| w == n.as_bytes()),
                        "{n} found in {file}"
                    );
                }
            }
        }
        None => {
            let schema = db.pg_schema().unwrap();
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
            )
            .bind(schema)
            .fetch_all(&mut conn)
            .await
            .unwrap();
            assert!(tables.iter().any(|t| t == "audit_records"));
            for t in tables {
                let dump: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT string_agg(x::text, '|') FROM {schema}.{t} x"
                )))
                .fetch_one(&mut conn)
                .await
                .unwrap();
                let dump = dump.unwrap_or_default();
                for n in needles {
                    assert!(!dump.contains(n), "{n} found in table {t}");
                }
            }
        }
    }
}

async fn wait_for_records(gw: &TestGateway, path: &str, n: usize) -> Vec<Value> {
    for _ in 0..500 {
        let v: Value = gw
            .admin(Method::GET, path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let records = v["records"].as_array().cloned().unwrap_or_default();
        if records.len() >= n {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("fewer than {n} records at {path}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tools_call_path_yields_exactly_one_record_and_no_payload() {
    for db in TestDb::all().await {
        every_path_yields_one_record(db).await;
    }
}

/// A record as a writer would queue it.
fn record(workspace: &str, ts_ms: i64, tool: &str) -> Record {
    Record {
        id: 0,
        workspace: workspace.into(),
        seq: 0,
        ts_ms,
        kind: audit::KIND_CALL.into(),
        member: Some("alice".into()),
        token_id: Some("tok_x".into()),
        server: "db".into(),
        tool: tool.into(),
        decision: "allow".into(),
        module: None,
        module_digest: None,
        status: "success".into(),
        error_code: None,
        latency_us: 100,
        upstream_latency_us: Some(80),
        request_id: format!("r-{ts_ms}"),
        session_id: None,
        prev_hash: String::new(),
        hash: String::new(),
        subject: None,
        issuer: None,
        labels: None,
    }
}

async fn tamper_and_prune(db: TestDb) {
    let store = Store::connect(&db.url).await.unwrap();
    let mut batch: Vec<Record> = (1..=6)
        .map(|i| record("acme", i * 1000, "query"))
        .chain((1..=3).map(|i| record("beta", i * 1000, "schema")))
        .collect();
    let appender = audit::store::Appender::new(store.db());
    appender.append(&mut batch).await.unwrap();
    let mut more = vec![record("acme", 7000, "query")];
    appender.append(&mut more).await.unwrap();
    let report = audit::store::verify(store.db(), None, &[]).await.unwrap();
    assert!(report.broken.is_none(), "{report:?}");
    assert_eq!(report.records, 10);
    let heads = audit::store::heads(store.db()).await.unwrap();
    let acme_head = heads
        .iter()
        .find(|h| h.workspace == "acme")
        .unwrap()
        .clone();
    assert_eq!(acme_head.seq, 7);

    // Retention: records before t=2500 go; acme's chain now starts at seq 3 and still verifies,
    // from the checkpoint pruning recorded and against the head kept elsewhere.
    let pruned = audit::store::prune(store.db(), 2500).await.unwrap();
    let acme_cut = pruned.iter().find(|p| p.workspace == "acme").unwrap();
    assert_eq!((acme_cut.removed, acme_cut.checkpoint.seq), (2, 2));
    let report = audit::store::verify(store.db(), None, std::slice::from_ref(&acme_head))
        .await
        .unwrap();
    assert!(report.broken.is_none(), "{report:?}");
    assert_eq!(report.records, 6);

    // Edit one row: verify names it.
    let all = records(&db.url).await;
    let victim = all
        .iter()
        .find(|r| r.workspace == "acme" && r.seq == 5)
        .unwrap();
    let sql = "UPDATE audit_records SET decision = 'deny' WHERE id = $1";
    mcpgw_tests::db::execute(&db.url, sql, victim.id).await;
    let report = audit::store::verify(store.db(), None, &[]).await.unwrap();
    let broken = report.broken.expect("the edit is found");
    assert_eq!(
        (broken.workspace.as_str(), broken.id),
        ("acme", Some(victim.id))
    );
    assert!(broken.why.contains("altered"), "{broken:?}");

    // Give that row any other hash too: still named.
    let sql = "UPDATE audit_records SET hash = 'f00d' WHERE id = $1";
    mcpgw_tests::db::execute(&db.url, sql, victim.id).await;
    let report = audit::store::verify(store.db(), Some("acme"), &[])
        .await
        .unwrap();
    let b = report.broken.unwrap();
    assert_eq!(b.seq, 5, "{b:?}");

    // Beta is untouched; removing its last row is caught by the head.
    let beta_last = all
        .iter()
        .filter(|r| r.workspace == "beta")
        .max_by_key(|r| r.seq)
        .unwrap();
    mcpgw_tests::db::execute(
        &db.url,
        "DELETE FROM audit_records WHERE id = $1",
        beta_last.id,
    )
    .await;
    let report = audit::store::verify(store.db(), Some("beta"), &[])
        .await
        .unwrap();
    let b = report.broken.unwrap();
    assert!(b.why.contains("last rows were removed"), "{b:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_an_edited_row_and_pruning_keeps_the_chain_verifiable() {
    for db in TestDb::all().await {
        tamper_and_prune(db).await;
    }
}

/// Two writers on one store, as two gateway processes sharing it would be (on SQLite each with its
/// own connection), appending to the same chains at once: they take turns at the heads, so every
/// chain comes out gapless, unforked and verifiable.
async fn writers_take_turns(db: TestDb) {
    const BATCHES: i64 = 20;
    let store = Store::connect(&db.url).await.unwrap();
    let mut writers = Vec::new();
    for w in 0..2i64 {
        let other = Store::connect(&db.url).await.unwrap();
        let appender = audit::store::Appender::new(other.db());
        writers.push(tokio::spawn(async move {
            for b in 0..BATCHES {
                let t = (w * BATCHES + b) * 100;
                let acme = (0..8).map(|i| record("acme", t + i, "query"));
                let beta = [record("beta", t, "schema")];
                // The second writer queues beta first: heads are still locked in name order,
                // or the two would wait on each other.
                let mut batch: Vec<Record> = if w == 0 {
                    acme.chain(beta).collect()
                } else {
                    beta.into_iter().chain(acme).collect()
                };
                appender.append(&mut batch).await.unwrap();
                assert!(batch.iter().all(|r| r.seq > 0 && r.hash.len() == 64));
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let report = audit::store::verify(store.db(), None, &[]).await.unwrap();
    assert!(report.broken.is_none(), "{}: {report:?}", db.backend);
    assert_eq!(report.records, 2 * BATCHES as u64 * 9);
    let all = records(&db.url).await;
    for (chain, n) in [("acme", 2 * BATCHES * 8), ("beta", 2 * BATCHES)] {
        let mut seqs: Vec<i64> = all
            .iter()
            .filter(|r| r.workspace == chain)
            .map(|r| r.seq)
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "{}: {chain}", db.backend);
        // Each writer's records keep their queue order along the chain.
        for w in 0..2 {
            let mine = (w * BATCHES * 100)..((w + 1) * BATCHES * 100);
            let mut in_chain: Vec<(i64, i64)> = all
                .iter()
                .filter(|r| r.workspace == chain && mine.contains(&r.ts_ms))
                .map(|r| (r.seq, r.ts_ms))
                .collect();
            in_chain.sort_unstable();
            assert!(
                in_chain.windows(2).all(|p| p[0].1 < p[1].1),
                "{}: {chain}: writer {w}'s records out of order",
                db.backend
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_take_turns_and_keep_every_chain_whole() {
    for db in TestDb::all().await {
        writers_take_turns(db).await;
    }
}

/// Holds the audit table's write lock from another connection until dropped.
enum Stall {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Stall {
    async fn start(db: &TestDb) -> Stall {
        match &db.sqlite_path {
            Some(path) => {
                let mut conn =
                    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                        .await
                        .unwrap();
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                Stall::Sqlite(conn)
            }
            None => {
                let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
                sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
                sqlx::query("LOCK TABLE audit_records IN ACCESS EXCLUSIVE MODE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                Stall::Postgres(conn)
            }
        }
    }

    async fn end(self) {
        match self {
            Stall::Sqlite(mut c) => {
                sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
            }
            Stall::Postgres(mut c) => {
                sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
            }
        }
    }
}

async fn stalled_store(db: TestDb) {
    let backend = db.backend;
    let upstream = Upstream::start(false).await;
    let gw = TestGateway::start_config(&db.url, |c| {
        c.audit = AuditConfig {
            queue_capacity: 4,
            batch_size: 2,
            ..AuditConfig::default()
        };
    })
    .await;
    gw.admin_post("/v1/workspaces", json!({"name": "acme"}))
        .await;
    gw.admin_post(
        "/v1/workspaces/acme/servers",
        json!({"name": "search", "url": upstream.url}),
    )
    .await;
    gw.admin_post("/v1/workspaces/acme/members", json!({"name": "alice"}))
        .await;
    gw.admin_post(
        "/v1/workspaces/acme/grants",
        json!({"member": "alice", "patterns": ["search:*"]}),
    )
    .await;
    let alice = token(&gw, "acme", "alice").await;
    let url = format!("{}/mcp/search", gw.mcp_url);
    // One call before the stall, so the chain exists.
    let v = rpc(&url, &alice, call(0, "schema", json!({})), None)
        .await
        .unwrap();
    assert!(v["result"].is_object(), "{v}");
    wait_for_records(&gw, "/v1/audit", 1).await;

    let stall = Stall::start(&db).await;
    let mut served = 1;
    let mut refusal = None;
    for i in 1..=40 {
        let v = rpc(&url, &alice, call(i, "schema", json!({})), None)
            .await
            .unwrap();
        if v["result"].is_object() {
            served += 1;
        } else {
            refusal = Some(v);
            break;
        }
    }
    let refusal = refusal.unwrap_or_else(|| panic!("{backend}: a stalled store never refused"));
    assert_eq!(refusal["error"]["code"], -32603, "{refusal}");
    assert!(
        refusal["error"]["message"]
            .as_str()
            .unwrap()
            .contains("audit trail is not keeping up"),
        "{refusal}"
    );
    eprintln!("{backend}: {served} calls served before the refusal");
    assert!(
        served <= 1 + 4 + 2,
        "{backend}: {served} calls ran past a full queue"
    );
    let ran_upstream = upstream.calls();
    assert_eq!(
        ran_upstream, served,
        "the refused call never reached the upstream"
    );

    // The store comes back: the backlog is written and calls run again.
    stall.end().await;
    let mut again = None;
    for i in 100..1100 {
        let v = rpc(&url, &alice, call(i, "schema", json!({})), None)
            .await
            .unwrap();
        if v["result"].is_object() {
            again = Some(i);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(again.is_some(), "{backend}: calls never resumed");
    served += 1;
    gw.stop().await;
    let all = records(&db.url).await;
    let calls: Vec<&Record> = all.iter().filter(|r| r.kind == audit::KIND_CALL).collect();
    assert_eq!(
        calls.len(),
        served,
        "{backend}: every call that ran has its record, and only those"
    );
    assert!(calls.iter().all(|r| r.status == "success"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_store_refuses_new_calls_clearly_and_loses_nothing() {
    for db in TestDb::all().await {
        stalled_store(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_calls_decisions_reloads_and_the_audit_trail() {
    let db = TestDb::sqlite();
    let upstream = Upstream::start(false).await;
    let policies = secrets_guard_dir();
    let dir = policies.path().to_owned();
    let gw = TestGateway::start_config(&db.url, |c| {
        c.policy = PolicyConfig {
            dir: Some(dir),
            ..PolicyConfig::default()
        };
    })
    .await;
    gw.admin_post("/v1/workspaces", json!({"name": "acme"}))
        .await;
    gw.admin(Method::PUT, "/v1/workspaces/acme/enforce")
        .json(&json!({"enforce": true}))
        .send()
        .await
        .unwrap();
    gw.admin_post(
        "/v1/workspaces/acme/servers",
        json!({"name": "search", "url": upstream.url}),
    )
    .await;
    gw.admin_post("/v1/workspaces/acme/members", json!({"name": "alice"}))
        .await;
    gw.admin_post(
        "/v1/workspaces/acme/grants",
        json!({"member": "alice", "patterns": ["search:echo"]}),
    )
    .await;
    let alice = token(&gw, "acme", "alice").await;
    let url = format!("{}/mcp/search", gw.mcp_url);
    // The second call's text holds one of secrets-guard's call triggers ("sk-"), the others none.
    for (i, (tool, text)) in [("echo", "hi"), ("echo", "ask-me"), ("schema", "hi")]
        .iter()
        .enumerate()
    {
        rpc(
            &url,
            &alice,
            call(i as u64, tool, json!({ "text": text })),
            None,
        )
        .await
        .unwrap();
    }
    wait_for_records(&gw, "/v1/audit", 3).await;
    // Without the admin token: refused.
    let resp = reqwest::get(format!("{}/metrics", gw.admin_url))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let text = gw
        .admin(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "mcpgw_tool_calls_total{decision=\"allow\",status=\"success\"} 2",
        "mcpgw_tool_calls_total{decision=\"deny\",status=\"denied\"} 1",
        "mcpgw_http_requests_total{endpoint=\"mcp_server\",status=\"200\"} 3",
        "mcpgw_policy_modules_live 2",
        "mcpgw_policy_decisions_total{module=\"secrets-guard\",outcome=\"pass\"} 1",
        "mcpgw_policy_calls_skipped_total{module=\"secrets-guard\"} 1",
        // echo's listing question went to the allowlist once (the first call, before the
        // server was first listed: a tool the caller may not see is refused before that) and was
        // answered from the chain's memory twice (that call's decision, then the second call).
        "mcpgw_policy_decisions_total{module=\"allowlist\",outcome=\"pass\"} 1",
        "mcpgw_policy_listing_cache_hits_total 2",
        "mcpgw_policy_reloads_total ",
        "mcpgw_policy_reload_failures_total 0",
        // Two calls forwarded, and the gateway's own session listing the tools first to check
        // their pins (initialize, initialized, tools/list).
        "mcpgw_upstream_latency_seconds_count 5",
        "mcpgw_audit_queue_depth 0",
        "mcpgw_audit_records_written_total 3",
        "mcpgw_audit_records_dropped_total 0",
        "mcpgw_audit_calls_refused_total 0",
    ] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }
    assert!(
        text.contains("mcpgw_policy_decisions_total{module=\"allowlist\",outcome=\"deny\"} "),
        "{text}"
    );
    gw.stop().await;
}

//! Organisation scale (issue 22), a benchmark rather than a test: run it on a release build,
//!
//! ```sh
//! cargo test --release -p mcpgw-tests --test e2e scale -- --ignored --nocapture
//! ```
//!
//! On SQLite and PostgreSQL (`DATABASE_URL`): 100,000 members, each with a grant, a role and a
//! token, onboarded with `member import`; two real `mcpgw serve` processes on that database (their
//! memory against an empty one's); 100 identity changes made through one process's admin API, each
//! timed until the other refuses the credential; and 10,000 users (and 10 groups of 1,000)
//! provisioned through SCIM with 8 concurrent clients. Figures go to docs/benchmarks.md.

use mcpgw::store::Store;
use mcpgw::store::import::ImportRow;
use mcpgw_tests::ServeProcess;
use mcpgw_tests::db::TestDb;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const MEMBERS: usize = 100_000;

async fn initialize(url: &str, token: &str) -> StatusCode {
    reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "scale", "version": "1"}}}),
        )
        .send()
        .await
        .unwrap()
        .status()
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test --release -p mcpgw-tests --test e2e scale -- --ignored --nocapture"]
async fn identity_at_100000_tokens_and_scim_onboarding_of_10000() {
    for db in TestDb::all().await {
        let b = db.backend;
        let store = Store::connect(&db.url).await.unwrap();
        let empty = ServeProcess::start(&db.url);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_empty = empty.rss_kib();
        drop(empty);

        store.workspace_create("acme").await.unwrap();
        store
            .role_create("acme", "db-readers", &["db:query".into()])
            .await
            .unwrap();
        let rows: Vec<ImportRow> = (0..MEMBERS)
            .map(|i| ImportRow {
                member: format!("user{i:06}@example.com"),
                grants: vec![format!("team{}:*", i % 50)],
                roles: vec!["db-readers".into()],
            })
            .collect();
        let started = Instant::now();
        let report = store
            .member_import("acme", &rows, Some(None))
            .await
            .unwrap();
        let import_took = started.elapsed();
        eprintln!(
            "{b}: member import of {MEMBERS} members with a grant, a role and a token: {import_took:?}"
        );

        let started = Instant::now();
        let (a, other) = (ServeProcess::start(&db.url), ServeProcess::start(&db.url));
        let start_took = started.elapsed();
        let url = format!("{}/mcp", other.mcp_url);
        assert_eq!(
            initialize(&url, &report.tokens[MEMBERS - 1].token).await,
            StatusCode::OK,
            "{b}"
        );
        let rss = other.rss_kib();
        eprintln!(
            "{b}: two processes started with {MEMBERS} tokens in {start_took:?}; RSS {rss} KiB against {rss_empty} KiB empty: {:.0} bytes per token",
            (rss.saturating_sub(rss_empty) as f64 * 1024.0) / MEMBERS as f64
        );

        // 100 changes through A, each timed until B refuses the member's token.
        let mut took = Vec::new();
        for i in 0..100 {
            let member = &rows[i * 997].member;
            let token = &report.tokens[i * 997].token;
            let started = Instant::now();
            a.admin_call(
                Method::PUT,
                &format!("/v1/workspaces/acme/members/{member}/disabled"),
                json!({"disabled": true}),
            )
            .await;
            while initialize(&url, token).await != StatusCode::UNAUTHORIZED {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "{b}: change {i} never arrived"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            took.push(started.elapsed());
        }
        took.sort();
        eprintln!(
            "{b}: at {MEMBERS} tokens, a member disabled through A is refused by B after p50 {:?}, p99 {:?}, max {:?} (100 changes)",
            quantile(&took, 0.5),
            quantile(&took, 0.99),
            took[99]
        );
        assert!(
            quantile(&took, 0.99) < Duration::from_secs(1),
            "{b}: p99 {:?}",
            quantile(&took, 0.99)
        );

        // SCIM onboarding of 10,000 users with 8 concurrent clients, then 10 groups of 1,000.
        a.admin_call(Method::POST, "/v1/workspaces", json!({"name": "org"}))
            .await;
        let scim_token = a
            .admin_call(Method::POST, "/v1/workspaces/org/scim/token", json!({}))
            .await["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let client = reqwest::Client::new();
        let base = format!("{}/scim/v2/org", a.admin_url);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for worker in 0..8usize {
            let (client, base, token) = (client.clone(), base.clone(), scim_token.clone());
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in (worker..10_000).step_by(8) {
                    let resp = client
                        .post(format!("{base}/Users"))
                        .bearer_auth(&token)
                        .header("content-type", "application/scim+json")
                        .body(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                            "userName": format!("person{i:05}@example.org"), "active": true,
                            "name": {"givenName": "P", "familyName": format!("{i}")},
                            "emails": [{"type": "work", "primary": true, "value": format!("person{i:05}@example.org")}]}).to_string())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), StatusCode::CREATED);
                    let user: Value = resp.json().await.unwrap();
                    ids.push((i, user["id"].as_str().unwrap().to_owned()));
                }
                ids
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.extend(t.await.unwrap());
        }
        ids.sort();
        let users_took = started.elapsed();
        for g in 0..10 {
            let resp = client
                .post(format!("{base}/Groups"))
                .bearer_auth(&scim_token)
                .header("content-type", "application/scim+json")
                .body(json!({"displayName": format!("team-{g}")}).to_string())
                .send()
                .await
                .unwrap();
            let group: Value = resp.json().await.unwrap();
            let gid = group["id"].as_str().unwrap().to_owned();
            for chunk in ids[g * 1000..(g + 1) * 1000].chunks(100) {
                let members: Vec<Value> =
                    chunk.iter().map(|(_, id)| json!({"value": id})).collect();
                let resp = client
                    .patch(format!("{base}/Groups/{gid}"))
                    .bearer_auth(&scim_token)
                    .header("content-type", "application/scim+json")
                    .body(
                        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                        "Operations": [{"op": "Add", "path": "members", "value": members}]})
                        .to_string(),
                    )
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::NO_CONTENT);
            }
        }
        let scim_took = started.elapsed();
        eprintln!(
            "{b}: SCIM onboarding of 10,000 users: {users_took:?}; with 10 groups of 1,000 (PATCHes of 100): {scim_took:?}"
        );
        assert!(scim_took < Duration::from_secs(60), "{b}: {scim_took:?}");
        let _ = Instant::now();
    }
}

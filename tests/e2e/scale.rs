//! Organisation scale (issue 22), a benchmark rather than a test: run it on a release build,
//!
//! ```sh
//! cargo build --release -p mcpgw    # the `mcpgw serve` processes it starts
//! cargo test --release -p mcpgw-tests --test e2e scale -- --ignored --nocapture --test-threads 1
//! ```
//!
//! (`MCPGW_SCALE_BACKEND=sqlite` or `postgres` for one database.)
//!
//! On SQLite and PostgreSQL (`DATABASE_URL`), two benchmarks. Identity: 100,000 members, each
//! with a grant, a role and a token, onboarded with `member import`; two real `mcpgw serve`
//! processes on that database (their memory against an empty one's); 100 identity changes made
//! through one process's admin API, each timed until the other refuses the credential; and
//! 10,000 users (and 10 groups of 1,000) provisioned through SCIM with 8 concurrent clients.
//! Audit: 10,000,000 records, then the list filters, verify and prune
//! (`audit_at_10_million_records`). Figures go to docs/benchmarks.md.

use mcpgw::store::Store;
use mcpgw::store::import::ImportRow;
use mcpgw_tests::ServeProcess;
use mcpgw_tests::db::TestDb;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const MEMBERS: usize = 100_000;

async fn initialize(url: &str, token: &str) -> StatusCode {
    mcpgw_tests::initialize_status(url, token).await.0
}

/// The databases to measure: both, or the one `MCPGW_SCALE_BACKEND` names (sqlite, postgres).
async fn backends() -> Vec<TestDb> {
    let only = std::env::var("MCPGW_SCALE_BACKEND").ok();
    TestDb::all()
        .await
        .into_iter()
        .filter(|d| only.as_deref().is_none_or(|o| o == d.backend))
        .collect()
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: see the module documentation for the command"]
async fn identity_at_100000_tokens_and_scim_onboarding_of_10000() {
    for db in backends().await {
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

/// The audit trail at 10 million records (`MCPGW_SCALE_AUDIT_RECORDS` to change), on both
/// databases: written through the real appender (hash chains, 20 workspaces, 1,000 members, 50
/// tools, 1 % denials, over 30 days); then `audit list` by member, tool, decision and time window
/// (the newest 100 each); `verify` of one workspace and of everything, with its rate; and `prune`
/// of the oldest 10 % while a writer keeps appending, with the writer's longest wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: see the module documentation for the command"]
async fn audit_at_10_million_records() {
    use mcpgw::audit::{self, Record, store::Appender, store::Filter};
    let total: usize = std::env::var("MCPGW_SCALE_AUDIT_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    const DAY: i64 = 86_400_000;
    for db in backends().await {
        let b = db.backend;
        let store = Store::connect(&db.url).await.unwrap();
        let appender = Appender::new(store.db());
        let base = mcpgw::store::now_ms() - 31 * DAY;
        let step = (30 * DAY) as f64 / total as f64;
        let record = move |i: usize| Record {
            workspace: format!("ws{:02}", i % 20),
            ts_ms: base + (i as f64 * step) as i64,
            kind: audit::KIND_CALL.into(),
            member: Some(format!("m{:04}", (i / 20) % 1000)),
            token_id: Some(format!("tok_{:04}", (i / 20) % 1000)),
            server: format!("s{}", i % 5),
            tool: format!("t{:02}", (i / 7) % 50),
            decision: match i % 100 {
                3 => "deny",
                1 | 2 => "would-deny",
                _ => "allow",
            }
            .into(),
            status: if i % 100 == 3 { "denied" } else { "success" }.into(),
            latency_us: 800,
            upstream_latency_us: Some(500),
            request_id: format!("req-{i}"),
            ..Record::default()
        };
        let started = Instant::now();
        let mut batch = Vec::with_capacity(1000);
        for i in 0..total {
            batch.push(record(i));
            if batch.len() == 1000 {
                appender.append(&mut batch).await.unwrap();
                batch.clear();
            }
        }
        appender.append(&mut batch).await.unwrap();
        let wrote = started.elapsed();
        eprintln!(
            "{b}: {total} records appended in {wrote:?} ({:.0} records/s)",
            total as f64 / wrote.as_secs_f64()
        );
        if let mcpgw::store::Db::Postgres(pool) = store.db() {
            // What autovacuum does after a bulk load: the planner needs the table's statistics.
            sqlx::query("ANALYZE audit_records")
                .execute(pool)
                .await
                .unwrap();
        }

        let timed = |name: &'static str, filter: Filter| {
            let db = store.db().clone();
            async move {
                let mut best = Duration::MAX;
                let mut n = 0;
                for _ in 0..3 {
                    let t = Instant::now();
                    n = audit::store::query(&db, &filter).await.unwrap().len();
                    best = best.min(t.elapsed());
                }
                eprintln!("{b}: audit list {name}: {n} records in {best:?} (best of 3)");
                assert!(n > 0, "{b}: {name} found nothing");
                best
            }
        };
        let mid = base + 15 * DAY;
        let some = |v: &str| Some(v.to_owned());
        let mut worst = Duration::ZERO;
        for (name, f) in [
            (
                "--member m0500",
                Filter {
                    member: some("m0500"),
                    ..Filter::default()
                },
            ),
            (
                "--tool t07",
                Filter {
                    tool: some("t07"),
                    ..Filter::default()
                },
            ),
            (
                "--decision deny",
                Filter {
                    decision: some("deny"),
                    ..Filter::default()
                },
            ),
            (
                "--since/--until (one hour, mid-range)",
                Filter {
                    since_ms: Some(mid),
                    until_ms: Some(mid + 3_600_000),
                    ..Filter::default()
                },
            ),
            (
                "--member m0500 --since/--until (one day)",
                Filter {
                    member: some("m0500"),
                    since_ms: Some(mid),
                    until_ms: Some(mid + DAY),
                    ..Filter::default()
                },
            ),
            (
                "--workspace ws03 --decision deny",
                Filter {
                    workspace: some("ws03"),
                    decision: some("deny"),
                    ..Filter::default()
                },
            ),
        ] {
            worst = worst.max(timed(name, f).await);
        }

        let report = audit::store::verify(store.db(), Some("ws03"), &[])
            .await
            .unwrap();
        assert!(report.broken.is_none(), "{b}: {:?}", report.broken);
        eprintln!(
            "{b}: verify one workspace: {} records in {} ms ({} records/s)",
            report.records, report.elapsed_ms, report.records_per_s
        );
        let report = audit::store::verify(store.db(), None, &[]).await.unwrap();
        assert!(report.broken.is_none(), "{b}: {:?}", report.broken);
        assert_eq!(report.records as usize, total);
        eprintln!(
            "{b}: verify everything: {} records in {} ms ({} records/s)",
            report.records, report.elapsed_ms, report.records_per_s
        );

        // Prune the oldest 10 % while a writer appends a batch of 100 every 10 ms.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (stop, db) = (stop.clone(), store.db().clone());
            tokio::spawn(async move {
                let appender = Appender::new(&db);
                let (mut longest, mut batches) = (Duration::ZERO, 0);
                let mut i = total;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut batch: Vec<Record> = (0..100)
                        .map(|k| Record {
                            ts_ms: mcpgw::store::now_ms(),
                            ..record(i + k)
                        })
                        .collect();
                    i += 100;
                    let t = Instant::now();
                    appender.append(&mut batch).await.unwrap();
                    longest = longest.max(t.elapsed());
                    batches += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                (longest, batches)
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t = Instant::now();
        let pruned = audit::store::prune(store.db(), base + 3 * DAY)
            .await
            .unwrap();
        let prune_took = t.elapsed();
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (longest, batches) = writer.await.unwrap();
        let removed: u64 = pruned.iter().map(|p| p.removed).sum();
        eprintln!(
            "{b}: prune of {removed} records in {prune_took:?} ({:.0} records/s); meanwhile {batches} appends of 100, the longest {longest:?}",
            removed as f64 / prune_took.as_secs_f64()
        );
        let report = audit::store::verify(store.db(), Some("ws03"), &[])
            .await
            .unwrap();
        assert!(
            report.broken.is_none(),
            "{b}: after prune: {:?}",
            report.broken
        );
        assert!(
            worst < Duration::from_millis(100),
            "{b}: a list took {worst:?}"
        );
    }
}

//! Several `mcpgw serve` processes on one database: a change made through one holds on the others
//! within a second. Real processes, real HTTP, SQLite file and PostgreSQL schema.

#[path = "../../tests/src/db.rs"]
#[allow(dead_code)] // shared with tests/, which uses all of it
mod db;

use db::TestDb;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN_TOKEN: &str = "cluster-admin-token-0123456789";

struct Gateway {
    child: Child,
    url: String,
    _data: tempfile::TempDir,
}

impl Gateway {
    fn start(database: &str) -> Gateway {
        let data = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_mcpgw"))
            .args([
                "serve",
                "--database",
                database,
                "--admin-listen",
                "127.0.0.1:0",
                "--listen",
                "127.0.0.1:0",
            ])
            .env("MCPGW_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("MCPGW_DATA_DIR", data.path())
            .env("MCPGW_LOG", "warn")
            .current_dir(data.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mcpgw serve");
        // The ready lines on stdout say where the listeners are.
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut url = String::new();
        for _ in 0..2 {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            if line.contains("admin API listening on") {
                url = line.trim().rsplit(' ').next().unwrap_or("").to_owned();
            }
        }
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "no admin API ready line"
        );
        Gateway {
            child,
            url,
            _data: data,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let resp = reqwest::Client::new()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    async fn valid(&self, token: &str) -> bool {
        self.call(
            reqwest::Method::POST,
            "/v1/tokens/verify",
            json!({"token": token}),
        )
        .await["valid"]
            == true
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn until(gw: &Gateway, token: &str, want: bool) -> Duration {
    let started = Instant::now();
    while gw.valid(token).await != want {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{} never saw the token as valid={want}",
            gw.url
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_through_one_process_holds_on_the_other_within_a_second() {
    for db in TestDb::all().await {
        let (a, b) = (Gateway::start(&db.url), Gateway::start(&db.url));
        use reqwest::Method;
        a.call(Method::POST, "/v1/workspaces", json!({"name": "acme"}))
            .await;
        a.call(
            Method::POST,
            "/v1/workspaces/acme/members",
            json!({"name": "alice"}),
        )
        .await;
        a.call(
            Method::POST,
            "/v1/workspaces/acme/members",
            json!({"name": "bob"}),
        )
        .await;
        let alice = a
            .call(
                Method::POST,
                "/v1/workspaces/acme/tokens",
                json!({"member": "alice"}),
            )
            .await;
        let bob = a
            .call(
                Method::POST,
                "/v1/workspaces/acme/tokens",
                json!({"member": "bob"}),
            )
            .await;
        let (token, id) = (
            alice["token"].as_str().unwrap(),
            alice["id"].as_str().unwrap(),
        );
        let bob_token = bob["token"].as_str().unwrap();
        until(&b, token, true).await;
        until(&b, bob_token, true).await;

        let started = Instant::now();
        a.call(
            Method::DELETE,
            &format!("/v1/workspaces/acme/tokens/{id}"),
            json!({}),
        )
        .await;
        let local = until(&a, token, false).await;
        until(&b, token, false).await;
        let total = started.elapsed();
        eprintln!(
            "{}: revoked through A; refused by A after {local:?}, by B after {total:?}",
            db.backend
        );
        assert!(
            local < Duration::from_millis(100),
            "{}: same process {local:?}",
            db.backend
        );
        assert!(
            total < Duration::from_secs(1),
            "{}: other process {total:?}",
            db.backend
        );
        assert!(b.valid(bob_token).await, "nobody else is touched");

        // The CLI, a third process, revokes too.
        let out = Command::new(env!("CARGO_BIN_EXE_mcpgw"))
            .args([
                "token",
                "revoke",
                bob["id"].as_str().unwrap(),
                "--database",
                &db.url,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let started = Instant::now();
        until(&a, bob_token, false).await;
        until(&b, bob_token, false).await;
        eprintln!(
            "{}: revoked by the CLI; refused by both after {:?}",
            db.backend,
            started.elapsed()
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}

/// The effective grants process `gw` gives `token`, or `None` when it refuses the token.
async fn grants(gw: &Gateway, token: &str) -> Option<Value> {
    let v = gw
        .call(
            reqwest::Method::POST,
            "/v1/tokens/verify",
            json!({"token": token}),
        )
        .await;
    (v["valid"] == true).then(|| v["grants"].clone())
}

/// Polls `gw` until `token`'s grants are `want` (`None`: refused); the time it took.
async fn until_grants(gw: &Gateway, token: &str, want: Option<Value>) -> Duration {
    let started = Instant::now();
    loop {
        let got = grants(gw, token).await;
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{} never gave {want:?} (last {got:?})",
            gw.url
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_changes_and_member_disable_through_one_process_hold_on_the_other_within_a_second() {
    for db in TestDb::all().await {
        let (a, b) = (Gateway::start(&db.url), Gateway::start(&db.url));
        use reqwest::Method;
        a.call(Method::POST, "/v1/workspaces", json!({"name": "acme"}))
            .await;
        a.call(
            Method::POST,
            "/v1/workspaces/acme/members",
            json!({"name": "alice"}),
        )
        .await;
        a.call(
            Method::POST,
            "/v1/workspaces/acme/grants",
            json!({"member": "alice", "patterns": ["web:search"]}),
        )
        .await;
        a.call(
            Method::POST,
            "/v1/workspaces/acme/roles",
            json!({"name": "db-readers", "patterns": ["db:query"]}),
        )
        .await;
        let token = a
            .call(
                Method::POST,
                "/v1/workspaces/acme/tokens",
                json!({"member": "alice"}),
            )
            .await["token"]
            .as_str()
            .unwrap()
            .to_owned();
        until_grants(&b, &token, Some(json!(["web:search"]))).await;

        // Assigned through A: B gives the role's grants too.
        let started = Instant::now();
        a.call(
            Method::PUT,
            "/v1/workspaces/acme/members/alice/roles/db-readers",
            json!({}),
        )
        .await;
        let want = Some(json!(["db:query", "web:search"]));
        until_grants(&a, &token, want.clone()).await;
        until_grants(&b, &token, want).await;
        let assigned = started.elapsed();

        // The role changed through the CLI (a third process): both follow.
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_mcpgw"))
            .args([
                "role",
                "grant",
                "acme",
                "db-readers",
                "db:schema",
                "--database",
                &db.url,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let want = Some(json!(["db:query", "db:schema", "web:search"]));
        until_grants(&a, &token, want.clone()).await;
        until_grants(&b, &token, want).await;
        let granted = started.elapsed();

        // Disabled through B: refused by both; enabled through the CLI: back on both.
        let started = Instant::now();
        b.call(
            Method::PUT,
            "/v1/workspaces/acme/members/alice/disabled",
            json!({"disabled": true}),
        )
        .await;
        until_grants(&b, &token, None).await;
        until_grants(&a, &token, None).await;
        let disabled = started.elapsed();
        let out = Command::new(env!("CARGO_BIN_EXE_mcpgw"))
            .args(["member", "enable", "acme", "alice", "--database", &db.url])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let started = Instant::now();
        let want = Some(json!(["db:query", "db:schema", "web:search"]));
        until_grants(&a, &token, want.clone()).await;
        until_grants(&b, &token, want).await;
        let enabled = started.elapsed();
        eprintln!(
            "{}: role assigned {assigned:?}, role grant by the CLI {granted:?}, \
             disabled {disabled:?}, enabled {enabled:?} (until both processes agree)",
            db.backend
        );
        for (what, took) in [
            ("assign", assigned),
            ("role grant", granted),
            ("disable", disabled),
            ("enable", enabled),
        ] {
            assert!(
                took < Duration::from_secs(1),
                "{}: {what} took {took:?}",
                db.backend
            );
        }
    }
}

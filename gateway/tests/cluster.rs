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

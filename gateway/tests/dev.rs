//! `mcpgw dev` and `mcpgw audit` as a user runs them: the built binary, real demo servers, real
//! clients, SIGTERM under load, then the audit commands on what was recorded. SQLite and PostgreSQL.

#[path = "../../tests/src/db.rs"]
#[allow(dead_code)] // shared with tests/, which uses all of it
mod db;

use db::TestDb;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A running `mcpgw dev`, with what its banner printed.
struct Dev {
    child: Child,
    mcp: String,
    alice: String,
    bob: String,
    banner: String,
}

fn start_dev(data: &std::path::Path, database: Option<&str>) -> Dev {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcpgw"));
    cmd.args(["dev", "--data-dir"]).arg(data).args([
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    if let Some(url) = database {
        cmd.args(["--database", url]);
    }
    let mut child = cmd
        .env("MCPGW_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn mcpgw dev");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "mcpgw dev exited early: {banner}"
        );
        banner.push_str(&line);
        if line.starts_with("mcpgw admin API listening") {
            break;
        }
    }
    // Keep draining stdout so the gateway never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let token = |who: &str| {
        banner
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{who} ")) && l.contains(" token "))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or_else(|| panic!("no token for {who} in:\n{banner}"))
            .to_owned()
    };
    let (alice, bob) = (token("alice"), token("bob"));
    let mcp = banner
        .lines()
        .find_map(|l| l.strip_prefix("  endpoints  "))
        .and_then(|l| l.split_whitespace().next())
        .expect("endpoint line")
        .to_owned();
    Dev {
        child,
        mcp,
        alice,
        bob,
        banner,
    }
}

/// A 2026-07-28 `tools/call` on the aggregated endpoint.
async fn call(
    client: &reqwest::Client,
    dev_mcp: &str,
    token: &str,
    tool: &str,
    args: Value,
) -> Option<Value> {
    let resp = client
        .post(dev_mcp)
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": tool, "arguments": args, "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}}}}))
        .send()
        .await
        .ok()?;
    let text = resp.text().await.ok()?;
    let data = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .find(|d| d.contains("\"id\""))
        .unwrap_or(text.as_str())
        .to_owned();
    serde_json::from_str(&data).ok()
}

fn mcpgw(database: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mcpgw"))
        .args(args)
        .args(["--database", database])
        .env("MCPGW_LOG", "warn")
        .output()
        .expect("run mcpgw")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

async fn dev_then_sigterm_then_audit(db: TestDb) {
    let backend = db.backend;
    let data = tempfile::tempdir().unwrap();
    let database = match db.backend {
        "sqlite" => format!("sqlite://{}", data.path().join("mcpgw.db").display()),
        _ => db.url.clone(),
    };
    let explicit = (db.backend != "sqlite").then_some(database.as_str());
    let mut dev = start_dev(data.path(), explicit);
    for needle in [
        "claude_desktop_config.json",
        "~/.cursor/mcp.json",
        ".vscode/mcp.json",
        "\"Authorization\": \"Bearer mcpgw_",
    ] {
        assert!(
            dev.banner.contains(needle),
            "{needle} missing:\n{}",
            dev.banner
        );
    }
    let client = reqwest::Client::new();

    // The demo works with the printed tokens: alice may deploy, bob may not.
    let v = call(
        &client,
        &dev.mcp,
        &dev.alice,
        "ci_deploy",
        json!({"service": "api"}),
    )
    .await
    .unwrap();
    assert_eq!(
        v["result"]["content"][0]["text"], "deployed api to staging",
        "{v}"
    );
    let v = call(
        &client,
        &dev.mcp,
        &dev.bob,
        "ci_deploy",
        json!({"service": "api"}),
    )
    .await
    .unwrap();
    assert_eq!(v["error"]["message"], "Unknown tool: ci_deploy", "{v}");
    let v = call(&client, &dev.mcp, &dev.bob, "db_schema", json!({}))
        .await
        .unwrap();
    assert!(
        v["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("users("),
        "{v}"
    );

    // `audit tail --follow` prints records as they are written.
    let mut tail = Command::new(env!("CARGO_BIN_EXE_mcpgw"))
        .args([
            "audit",
            "tail",
            "--follow",
            "-n",
            "1",
            "--database",
            &database,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut tail_out = BufReader::new(tail.stdout.take().unwrap());
    let mut header = String::new();
    tail_out.read_line(&mut header).unwrap();
    assert!(header.starts_with("TIME"), "{header}");

    // Load: 8 clients call as fast as they can; SIGTERM lands in the middle.
    let completed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, url, token) = (client.clone(), dev.mcp.clone(), dev.alice.clone());
        let (completed, stop) = (completed.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match call(
                    &client,
                    &url,
                    &token,
                    "db_query",
                    json!({"sql": "select 1"}),
                )
                .await
                {
                    Some(v) if v["result"]["isError"] == false => {
                        completed.fetch_add(1, Ordering::SeqCst);
                    }
                    Some(_) => {}
                    None => break,
                }
            }
        }));
    }
    let started = Instant::now();
    while completed.load(Ordering::SeqCst) < 100 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pid = dev.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || dev.child.wait())
        .await
        .unwrap()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        status.success(),
        "{backend}: mcpgw dev exited with {status}"
    );
    let done = completed.load(Ordering::SeqCst);
    assert!(done >= 100, "{backend}: only {done} calls completed");

    // tail saw the load.
    let mut seen = String::new();
    for _ in 0..5 {
        let mut line = String::new();
        tail_out.read_line(&mut line).unwrap();
        seen.push_str(&line);
        if line.contains("alice") && line.contains("query") {
            break;
        }
    }
    assert!(seen.contains("alice") && seen.contains("query"), "{seen}");
    let _ = tail.kill();
    let _ = tail.wait();

    // Every call the clients saw complete has its record.
    let o = mcpgw(
        &database,
        &[
            "audit",
            "export",
            "--format",
            "jsonl",
            "--workspace",
            "demo",
            "--tool",
            "query",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let records: Vec<Value> = out(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let successes = records.iter().filter(|r| r["status"] == "success").count();
    assert!(
        successes >= done,
        "{backend}: {done} calls completed but only {successes} success records"
    );
    eprintln!(
        "{backend}: {done} calls completed before SIGTERM; {} query records, {successes} successes",
        records.len()
    );

    // list, --json, filters, csv.
    let o = mcpgw(
        &database,
        &["audit", "list", "--member", "bob", "--decision", "deny"],
    );
    let text = out(&o);
    assert!(o.status.success() && text.lines().count() == 2, "{text}");
    assert!(
        text.contains("deploy") && text.contains("not-granted"),
        "{text}"
    );
    let o = mcpgw(
        &database,
        &["audit", "list", "--json", "--limit", "3", "--since", "1h"],
    );
    let listed: Vec<Value> = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(listed.len(), 3);
    let o = mcpgw(
        &database,
        &["audit", "export", "--format", "csv", "--member", "bob"],
    );
    let csv = out(&o);
    assert!(csv.starts_with("id,workspace,seq,ts_ms,"), "{csv}");
    assert_eq!(csv.lines().count(), 3, "header and bob's two calls: {csv}");

    // checkpoint → verify against it; an edited row is named; prune keeps the rest verifiable.
    let o = mcpgw(&database, &["audit", "checkpoint"]);
    assert!(out(&o).starts_with("demo\t"), "{o:?}");
    let checkpoint = data.path().join("checkpoint.txt");
    std::fs::write(&checkpoint, out(&o)).unwrap();
    let o = mcpgw(
        &database,
        &[
            "audit",
            "verify",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{o:?}");
    assert!(out(&o).starts_with("ok: "), "{o:?}");
    let victim = records[records.len() / 2]["id"].as_i64().unwrap();
    db::execute(
        &database,
        "UPDATE audit_records SET member = 'mallory' WHERE id = $1",
        victim,
    )
    .await;
    let o = mcpgw(&database, &["audit", "verify", "--workspace", "demo"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("row id {victim} ")), "{err}");
    let o = mcpgw(&database, &["audit", "prune", "--before", "2999-01-01"]);
    assert!(out(&o).contains("demo: removed"), "{o:?}");
    let o = mcpgw(&database, &["audit", "verify"]);
    assert!(o.status.success(), "after pruning: {o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_the_demo_and_sigterm_under_load_loses_no_record() {
    for db in TestDb::all().await {
        dev_then_sigterm_then_audit(db).await;
    }
}

//! The audit trail's costs: sustained records per second into SQLite and PostgreSQL through the
//! real writer, and the time a call spends on its record (reserve, mark, hand over) against the
//! same call with the trail off.
//!
//! `cargo bench -p mcpgw --bench audit` (PostgreSQL when `DATABASE_URL` is set). Prints a table of
//! figures at the end; `docs/benchmarks.md` records the latest.

#[path = "../../tests/src/db.rs"]
#[allow(dead_code)] // shared with tests/, which uses all of it
mod db;

use criterion::Criterion;
use mcpgw::audit::{Audit, AuditConfig, CallStart, Decision, QueueFull};
use mcpgw::mcp::jsonrpc::Answer;
use serde_json::json;
use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn start(request_id: &str) -> CallStart<'_> {
    CallStart {
        workspace: "acme",
        member: Some("alice"),
        token_id: "tok_0123456789abcdef",
        server: "db",
        tool: "query",
        request_id,
        session_id: Some("2f1c8e0a-5b7d-4c1e-9a3f-0d6b8e2c4a10"),
        subject: None,
        issuer: None,
        received: Instant::now(),
    }
}

/// What a call does with its record on the request path, reading the answer's outcome from its
/// text included.
fn one_call(audit: &Audit, answer: &[u8]) -> Result<(), QueueFull> {
    if let Some(call) = audit.begin_call(&start("9f3a0c1e-42"))? {
        call.decided(Decision::Allow, None);
        call.upstream_started();
        if let Ok(read) = Answer::read(answer) {
            call.answered(read.outcome);
        }
    }
    Ok(())
}

/// Records per second written by the real writer: `n` calls queued as fast as the queue takes them.
async fn throughput(url: &str, n: u64) -> f64 {
    let store = mcpgw::store::Store::connect(url).await.expect("store");
    let audit = Audit::start(store, &AuditConfig::default());
    let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {"content": []}}).to_string();
    let started = Instant::now();
    let mut queued = 0;
    while queued < n {
        match one_call(&audit, answer.as_bytes()) {
            Ok(()) => queued += 1,
            Err(QueueFull) => tokio::task::yield_now().await,
        }
    }
    while audit.stats().written.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    audit.shutdown().await;
    n as f64 / secs
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut c = Criterion::default().configure_from_args();
    let answer =
        json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "ok"}]}})
            .to_string();
    let mut g = c.benchmark_group("audit_per_call");
    let on = rt.block_on(async { Audit::discarding(100_000) });
    let off = Audit::disabled();
    g.bench_function("on", |b| {
        b.iter(|| {
            loop {
                if one_call(&on, black_box(answer.as_bytes())).is_ok() {
                    break;
                }
                std::thread::yield_now();
            }
        })
    });
    g.bench_function("off", |b| {
        b.iter(|| one_call(&off, black_box(answer.as_bytes())))
    });
    g.finish();
    c.final_summary();

    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = format!("sqlite://{}", dir.path().join("bench.db").display());
    let n = 200_000;
    let sqlite_rate = rt.block_on(throughput(&sqlite, n));
    // A schema of its own, dropped afterwards (the tests' helper).
    let pg_rate = rt.block_on(async {
        let pg = db::TestDb::postgres().await?;
        Some(throughput(&pg.url, n).await)
    });
    let median = |name: &str| -> Option<f64> {
        let path = format!("target/criterion/audit_per_call/{name}/new/estimates.json");
        let text = std::fs::read_to_string(path)
            .or_else(|_| {
                std::fs::read_to_string(format!(
                    "../target/criterion/audit_per_call/{name}/new/estimates.json"
                ))
            })
            .ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["median"]["point_estimate"].as_f64()
    };
    println!("\n| Measure | Result |\n|---|---|");
    println!("| records/s into SQLite ({n} records, WAL) | {sqlite_rate:.0} |");
    match pg_rate {
        Some(r) => println!("| records/s into PostgreSQL ({n} records) | {r:.0} |"),
        None => println!("| records/s into PostgreSQL | not measured (DATABASE_URL unset) |"),
    }
    if let (Some(on), Some(off)) = (median("on"), median("off")) {
        println!("| per call, audit on (median) | {:.3} µs |", on / 1000.0);
        println!("| per call, audit off (median) | {:.3} µs |", off / 1000.0);
        println!("| added per call | {:.3} µs |", (on - off) / 1000.0);
    }
}

//! Cost of one policy decision through real Wasm modules, against the same rule compiled natively.
//!
//! `cargo bench -p mcpgw --bench policy`. Prints criterion's estimates, then a table of medians
//! with the ratio of each case to the native baseline measured in the same run.

use criterion::Criterion;
use mcpgw::policy::{
    BUILTIN_ALLOWLIST, BUILTIN_SOURCE, InstanceStrategy, Limits, PolicyChain, PolicyEngine,
    Principal, Question, SECRETS_GUARD,
};
use policy_sdk::{Policy, ToolCall};
use std::hint::black_box;
use std::sync::Arc;

/// The SDK's worked example, built by `build.rs` beside the embedded plugins.
static ROW_LIMIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/row_limit.wasm"));

const ARGS: &str = r#"{"sql":"select id, name, email from users where created_at > now() - interval '7 days' order by id limit 50","database":"analytics","limit":50}"#;

fn principal() -> Principal {
    Principal {
        workspace: "acme".into(),
        member: Some("alice".into()),
        grants: vec!["ci:status".into(), "search:*".into(), "db:*".into()],
    }
}

fn source(i: usize, bytes: &[u8]) -> String {
    if std::ptr::eq(bytes, BUILTIN_ALLOWLIST) {
        BUILTIN_SOURCE.to_owned()
    } else {
        format!("m{i}.wasm")
    }
}

fn chain(strategy: InstanceStrategy, modules: &[(&[u8], &str)]) -> PolicyChain {
    let engine = PolicyEngine::new(
        Limits {
            strategy,
            ..Limits::default()
        },
        None,
    )
    .expect("engine");
    let loaded = modules
        .iter()
        .enumerate()
        .map(|(i, (bytes, settings))| {
            Arc::new(
                // The allowlist as the gateway loads it (the built-in source), so that a chain
                // whose listing phase it is alone remembers listings, as the gateway's does.
                engine
                    .load(&source(i, bytes), bytes, settings)
                    .expect("load"),
            )
        })
        .collect();
    PolicyChain::new(loaded, vec![])
}

fn benches(c: &mut Criterion) {
    let p = principal();
    let q = Question {
        request_id: "req-1",
        principal: &p,
        server: "db",
        tool: "query",
        arguments: Some(ARGS),
    };
    let mut g = c.benchmark_group("decision");

    let native_call = ToolCall::new("db", "query")
        .with_member("alice")
        .with_grants(p.grants.clone())
        .with_arguments(serde_json::from_str(ARGS).unwrap());
    let allow_settings = allowlist::AllowlistSettings::default();
    let guard_settings = secrets_guard::GuardSettings::default();
    g.bench_function("native allowlist", |b| {
        b.iter(|| allowlist::Allowlist::call(black_box(&native_call), &allow_settings))
    });
    g.bench_function("native secrets-guard", |b| {
        b.iter(|| secrets_guard::SecretsGuard::call(black_box(&native_call), &guard_settings))
    });
    let rows: row_limit::RowLimitSettings =
        policy_sdk::parse_settings(r#"{"max_rows":100}"#).unwrap();
    g.bench_function("native chain of three", |b| {
        b.iter(|| {
            (
                allowlist::Allowlist::call(black_box(&native_call), &allow_settings),
                secrets_guard::SecretsGuard::call(black_box(&native_call), &guard_settings),
                row_limit::RowLimit::call(black_box(&native_call), &rows),
            )
        })
    });

    let allow = chain(InstanceStrategy::Warm, &[(BUILTIN_ALLOWLIST, "{}")]);
    let listing = Question {
        arguments: None,
        ..q
    };
    // The module itself, called: what a listing costs the first time the chain is asked it.
    g.bench_function("wasm allowlist listing (warm)", |b| {
        b.iter(|| allow.modules()[0].decide(black_box(&listing)))
    });
    // Through the chain, which remembers listing answers: every later call of the tool.
    g.bench_function("allowlist listing, remembered", |b| {
        b.iter(|| allow.decide(black_box(&listing)))
    });
    let guard = chain(InstanceStrategy::Warm, &[(SECRETS_GUARD, "{}")]);
    // The guard run: what its call phase costs on arguments holding one of its triggers.
    g.bench_function("wasm secrets-guard (warm)", |b| {
        b.iter(|| guard.modules()[0].decide(black_box(&q)))
    });
    // The call phase on these arguments, which hold none of its triggers: the guard is not run.
    g.bench_function("secrets-guard, skipped by its triggers", |b| {
        b.iter(|| guard.veto(black_box(&q)))
    });
    let three = chain(
        InstanceStrategy::Warm,
        &[
            (BUILTIN_ALLOWLIST, "{}"),
            (SECRETS_GUARD, "{}"),
            (ROW_LIMIT, r#"{"max_rows":100}"#),
        ],
    );
    // A call with nothing remembered or skipped: the allowlist's listing, then both call phases.
    g.bench_function("wasm chain of three (warm)", |b| {
        b.iter(|| {
            (
                three.modules()[0].decide(black_box(&listing)),
                three.modules()[1].decide(black_box(&q)),
                three.modules()[2].decide(black_box(&q)),
            )
        })
    });
    // The same call as the chain answers it: listing remembered, the guard skipped.
    g.bench_function("chain of three, listing remembered", |b| {
        b.iter(|| three.decide(black_box(&q)))
    });
    let fresh = chain(InstanceStrategy::Fresh, &[(BUILTIN_ALLOWLIST, "{}")]);
    g.bench_function("wasm allowlist (fresh instance)", |b| {
        b.iter(|| fresh.modules()[0].decide(black_box(&listing)))
    });
    g.finish();
}

/// Reads criterion's median estimates back and prints them with ratios to the native baselines.
fn print_ratios() {
    let Some(dir) = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .nth(3)
            .map(|t| t.join("criterion").join("decision"))
    }) else {
        return;
    };
    let median = |id: &str| -> Option<f64> {
        let path = dir.join(id).join("new").join("estimates.json");
        let text = std::fs::read_to_string(path).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["median"]["point_estimate"].as_f64()
    };
    let rows = [
        ("wasm allowlist listing (warm)", "native allowlist"),
        ("allowlist listing, remembered", "native allowlist"),
        ("wasm secrets-guard (warm)", "native secrets-guard"),
        (
            "secrets-guard, skipped by its triggers",
            "native secrets-guard",
        ),
        ("wasm chain of three (warm)", "native chain of three"),
        (
            "chain of three, listing remembered",
            "native chain of three",
        ),
        ("wasm allowlist (fresh instance)", "native allowlist"),
    ];
    println!(
        "\n{:<40} {:>12} {:>12} {:>10}",
        "case", "median", "baseline", "ratio"
    );
    for (case, base) in rows {
        if let (Some(m), Some(b)) = (median(case), median(base)) {
            println!(
                "{case:<40} {:>10.2}µs {:>10.3}µs {:>9.1}x",
                m / 1000.0,
                b / 1000.0,
                m / b
            );
        }
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
    print_ratios();
}

//! The policy engine with real Wasm: the built plugins and hostile fixtures.

use mcpgw::policy::{
    BUILTIN_ALLOWLIST, BUILTIN_SOURCE, Error, InstanceStrategy, Limits, Outcome, PolicyChain,
    PolicyConfig, PolicyEngine, PolicySet, Verdict,
};
use mcpgw_tests::{ask, guests, install, member, wait_until_async, workspace_token};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn denial_code(v: &Verdict) -> Option<&str> {
    match v {
        Verdict::Allow => None,
        Verdict::Deny(d) => Some(d.code.as_str()),
    }
}

fn engine() -> Arc<PolicyEngine> {
    PolicyEngine::new(Limits::default(), None).expect("engine")
}

fn hostile(engine: &PolicyEngine, mode: &str) -> Arc<mcpgw::policy::Module> {
    let settings = json!({ "mode": mode }).to_string();
    Arc::new(
        engine
            .load("hostile.wasm", &guests::bytes(guests::HOSTILE), &settings)
            .expect("hostile loads"),
    )
}

/// The built-in allowlist followed by the modules in `dir`, default settings.
fn load_dir(dir: &std::path::Path) -> Arc<PolicySet> {
    PolicySet::load(PolicyConfig {
        dir: Some(dir.into()),
        ..PolicyConfig::default()
    })
    .unwrap()
}

/// The built-in allowlist and secrets-guard, installed as `file` in a new directory (returned, so
/// it lives as long as the test).
fn with_guard(file: &str) -> (tempfile::TempDir, Arc<PolicySet>) {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), file, &guests::bytes(guests::SECRETS_GUARD));
    let set = load_dir(dir.path());
    (dir, set)
}

fn builtin_only() -> Arc<PolicySet> {
    PolicySet::load(PolicyConfig::default()).expect("policy set")
}

#[test]
fn allowlist_grants_decide_listing_and_calls() {
    let set = builtin_only();
    let chain = set.chain();
    // (grants, server, tool, allowed)
    let table: &[(&[&str], &str, &str, bool)] = &[
        (&["db:*"], "db", "query", true),
        (&["db:*"], "ci", "deploy", false),
        (&["*:search"], "web", "search", true),
        (&["*:search"], "web", "fetch", false),
        (&["ci:deploy"], "ci", "deploy", true),
        (&["ci:deploy"], "ci", "deploy-prod", false),
        (&["ci:deploy-*", "db:schema"], "ci", "deploy-prod", true),
        (&["ci:deploy-*", "db:schema"], "db", "query", false),
        (&[], "db", "query", false),
    ];
    for &(grants, server, tool, want) in table {
        let p = member("alice", grants);
        for args in [None, Some(r#"{"sql":"select 1"}"#)] {
            let v = chain.decide(&ask(&p, server, tool, args));
            assert_eq!(
                v == Verdict::Allow,
                want,
                "{grants:?} {server}:{tool} args={args:?}: {v:?}"
            );
            if !want {
                assert_eq!(denial_code(&v), Some("not-granted"));
            }
        }
    }
    // The workspace token is system access by default...
    assert_eq!(
        chain.decide(&ask(&workspace_token(), "ci", "deploy", Some("{}"))),
        Verdict::Allow
    );
    // ...and only its grants when the settings say so.
    let strict = PolicySet::load(PolicyConfig {
        allowlist_settings: json!({"workspace_token": "grants"}),
        ..PolicyConfig::default()
    })
    .unwrap();
    assert_eq!(
        denial_code(
            &strict
                .chain()
                .decide(&ask(&workspace_token(), "ci", "deploy", Some("{}")))
        ),
        Some("not-granted")
    );
}

#[test]
fn builtin_refuses_bad_settings() {
    let err = PolicySet::load(PolicyConfig {
        allowlist_settings: json!({"workspace_token": 3}),
        ..PolicyConfig::default()
    })
    .err()
    .expect("bad allowlist settings must fail");
    assert!(err.to_string().contains("settings refused"), "{err}");
}

#[test]
fn chain_runs_in_file_name_order_and_first_deny_wins() {
    let dir = tempfile::tempdir().unwrap();
    install(
        dir.path(),
        "10-guard.wasm",
        &guests::bytes(guests::SECRETS_GUARD),
    );
    install(
        dir.path(),
        "20-hostile.wasm",
        &guests::bytes(guests::HOSTILE),
    ); // default mode: deny
    let set = load_dir(dir.path());
    let names: Vec<String> = set
        .status()
        .modules
        .iter()
        .map(|m| m.source.clone())
        .collect();
    assert_eq!(names, ["built-in", "10-guard.wasm", "20-hostile.wasm"]);

    let p = member("alice", &["db:*"]);
    let secret = format!("{{\"token\":\"ghp_{}\"}}", "x".repeat(36));
    // The call phase on its own: modules in file-name order.
    let v = set.chain().veto(&ask(&p, "db", "query", Some(&secret)));
    assert_eq!(
        denial_code(&v),
        Some("secret-in-arguments"),
        "guard comes first: {v:?}"
    );
    let v = set
        .chain()
        .veto(&ask(&p, "db", "query", Some(r#"{"sql":"select 1"}"#)));
    assert_eq!(
        denial_code(&v),
        Some("hostile-deny"),
        "clean args pass the guard, hostile denies: {v:?}"
    );
    // A whole call is its listing first: the allowlist (first) denies before anything else runs,
    // and a listing-phase deny comes before any call-phase module.
    let v = set.chain().decide(&ask(&p, "ci", "deploy", Some(&secret)));
    assert_eq!(denial_code(&v), Some("not-granted"));
    let v = set.chain().decide(&ask(&p, "db", "query", Some(&secret)));
    assert_eq!(denial_code(&v), Some("hostile-deny"), "{v:?}");

    // Rename the guard after the hostile module: now the hostile deny comes first.
    std::fs::rename(
        dir.path().join("10-guard.wasm"),
        dir.path().join("30-guard.wasm"),
    )
    .unwrap();
    assert!(set.reload());
    let v = set.chain().veto(&ask(&p, "db", "query", Some(&secret)));
    assert_eq!(denial_code(&v), Some("hostile-deny"), "{v:?}");
    // A later deny wins over an earlier allow.
    if let Verdict::Deny(d) = v {
        assert_eq!(d.module, "guest-hostile");
        assert!(!d.fault);
    }
}

#[test]
fn a_call_needs_a_listing_allow_and_no_call_phase_deny() {
    let (_dir, set) = with_guard("10-guard.wasm");
    let p = member("alice", &["db:*"]);
    // The guard abstains on clean arguments: the allowlist's listing allow carries the call.
    let clean = ask(&p, "db", "query", Some(r#"{"sql":"select 1"}"#));
    assert_eq!(set.chain().veto(&clean), Verdict::Allow);
    assert_eq!(set.chain().decide(&clean), Verdict::Allow);
    // Not granted: hidden, so not callable whatever the call phase says.
    let hidden = ask(&p, "ci", "deploy", Some("{}"));
    assert_eq!(
        denial_code(&set.chain().decide(&hidden)),
        Some("not-granted")
    );
    // Arguments holding one of the guard's call triggers ("sk-") but no credential: the guard is
    // asked, and abstains.
    let near = ask(&p, "db", "query", Some(r#"{"task":"sk-short"}"#));
    assert_eq!(set.chain().veto(&near), Verdict::Allow);
    // The allowlist takes part in the listing only: asked once for each of the two tools. The
    // guard's call phase came up three times (the veto and the decide of `select 1`, the veto of
    // `sk-short`): `select 1` holds none of its triggers, so it was not run on it.
    let counts: Vec<(String, u64, u64)> = set
        .status()
        .modules
        .into_iter()
        .map(|m| (m.name, m.decisions, m.skipped))
        .collect();
    assert_eq!(
        counts,
        [
            ("allowlist".to_owned(), 2, 0),
            ("secrets-guard".to_owned(), 1, 2)
        ],
    );
}

#[test]
fn all_abstain_denies_and_one_allow_allows() {
    let engine = engine();
    let p = member("bob", &[]);
    let abstain = PolicyChain::new(
        vec![hostile(&engine, "abstain"), hostile(&engine, "abstain")],
        vec![],
    );
    let v = abstain.decide(&ask(&p, "db", "query", Some("{}")));
    assert_eq!(denial_code(&v), Some("no-module-allowed"));
    let allow = PolicyChain::new(
        vec![hostile(&engine, "abstain"), hostile(&engine, "allow")],
        vec![],
    );
    assert_eq!(
        allow.decide(&ask(&p, "db", "query", Some("{}"))),
        Verdict::Allow
    );
    // Results pass unless someone denies.
    assert_eq!(
        abstain.inspect_result(&ask(&p, "db", "query", Some("{}")), r#"{"content":[]}"#),
        Verdict::Allow
    );
    let deny = PolicyChain::new(vec![hostile(&engine, "deny")], vec![]);
    assert_eq!(
        denial_code(&deny.inspect_result(&ask(&p, "db", "query", Some("{}")), "{}")),
        Some("hostile-deny")
    );
}

#[test]
fn secrets_guard_blocks_each_kind_and_passes_clean_arguments() {
    let (_dir, set) = with_guard("guard.wasm");
    let p = member("alice", &["*:*"]);
    let cases = [
        (
            "an AWS access key id",
            format!("AKIA{}", "IOSFODNN7EXAMPLE"),
        ),
        (
            "a private key block",
            format!("-----BEGIN {} PRIVATE KEY-----\nMIIE", "EC"),
        ),
        ("a GitHub token", format!("ghp_{}", "Z".repeat(36))),
        (
            "a Slack token",
            format!("xoxp-{}", "1234567890-abcdefghijk"),
        ),
        (
            "an OpenAI-style API key",
            format!("sk-{}", "abcdefghijklmnopqrstuvwxyz123456"),
        ),
        (
            "a JSON Web Token",
            format!(
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.{}",
                "abcdefghijklmnopqrstuvwxyz"
            ),
        ),
    ];
    for (kind, secret) in cases {
        let args = json!({"query": "x", "headers": {"auth": secret}}).to_string();
        match set.chain().decide(&ask(&p, "search", "web", Some(&args))) {
            Verdict::Deny(d) => {
                assert_eq!(d.code, "secret-in-arguments");
                assert_eq!(d.module, "secrets-guard");
                assert!(d.reason.contains(kind), "{} should name {kind}", d.reason);
                assert!(!d.reason.contains(&secret), "reason leaks the secret");
            }
            Verdict::Allow => panic!("{kind} passed"),
        }
    }
    let clean = json!({"query": "rust wasm components", "limit": 10}).to_string();
    assert_eq!(
        set.chain().decide(&ask(&p, "search", "web", Some(&clean))),
        Verdict::Allow
    );
    // Listing is never blocked by the guard (it has no list phase).
    assert_eq!(
        set.chain().decide(&ask(&p, "search", "web", None)),
        Verdict::Allow
    );
}

#[test]
fn enforcement_off_turns_a_deny_into_would_deny() {
    let set = builtin_only();
    let p = member("carol", &["db:*"]);
    let v = set.chain().decide(&ask(&p, "ci", "deploy", Some("{}")));
    let enforced = Outcome::enforce(v.clone(), true);
    assert!(matches!(&enforced, Outcome::Denied(d) if d.code == "not-granted"));
    assert!(!enforced.proceeds());
    let watching = Outcome::enforce(v, false);
    assert!(matches!(&watching, Outcome::WouldDeny(d) if d.code == "not-granted"));
    assert!(watching.proceeds());
    assert_eq!(Outcome::enforce(Verdict::Allow, true), Outcome::Allowed);
}

#[test]
fn misbehaving_modules_fail_closed_and_the_host_survives() {
    let engine = engine();
    let timeout = engine.limits().timeout;
    let p = member("mallory", &["*:*"]);
    let cases = [
        ("loop", "policy-timeout"),
        ("bomb", "policy-trap"),
        ("panic", "policy-trap"),
        ("bad-code", "policy-invalid-output"),
        ("huge-reason", "policy-invalid-output"),
    ];
    for (mode, code) in cases {
        let module = hostile(&engine, mode);
        let chain = PolicyChain::new(vec![module.clone()], vec![]);
        for round in 0..3 {
            let started = Instant::now();
            let cpu_before = thread_cpu_time();
            let v = chain.decide(&ask(&p, "db", "query", Some("{}")));
            let took = started.elapsed();
            let cpu = thread_cpu_time() - cpu_before;
            match &v {
                Verdict::Deny(d) => {
                    assert_eq!(d.code, code, "{mode}: {d:?}");
                    assert!(d.fault, "{mode}");
                    assert_eq!(d.module, "guest-hostile");
                    assert!(
                        d.reason.contains("guest-hostile"),
                        "the reason names the module: {}",
                        d.reason
                    );
                }
                Verdict::Allow => panic!("{mode} let a call through"),
            }
            if mode == "loop" {
                // Stopped within twice the budget of CPU time (policy::host::Budget) plus an
                // epoch tick and the check's own slack, however busy the machine (wall-clock
                // time is bounded by the 1 s backstop).
                assert!(
                    cpu < 2 * timeout + Duration::from_millis(15),
                    "{mode} round {round} used {cpu:?} of CPU"
                );
                assert!(
                    took < Duration::from_millis(1100),
                    "{mode} round {round} took {took:?}"
                );
            }
            // Listing and result phases fail closed the same way.
            assert!(matches!(
                chain.decide(&ask(&p, "db", "query", None)),
                Verdict::Deny(_)
            ));
            assert!(matches!(
                chain.inspect_result(&ask(&p, "db", "query", Some("{}")), "{}"),
                Verdict::Deny(_)
            ));
        }
        let status = chain.status();
        assert_eq!(status.modules[0].errors, 9, "{mode}: each fault is counted");
        assert_eq!(status.modules[0].denies, 9);
        assert!(status.modules[0].last_error.is_some());
        // The host is unharmed: a healthy module on the same engine still answers.
        let ok = PolicyChain::new(vec![hostile(&engine, "allow")], vec![]);
        assert_eq!(
            ok.decide(&ask(&p, "db", "query", Some("{}"))),
            Verdict::Allow,
            "after {mode}"
        );
    }
}

#[test]
fn bad_modules_are_refused_at_load() {
    let engine = engine();
    let hostile_bytes = guests::bytes(guests::HOSTILE);
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "wrong world",
            guests::bytes(guests::WRONG_WORLD),
            "{}",
            "does not implement mcpgw:policy/policy",
        ),
        (
            "random bytes",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
            "{}",
            "not a WebAssembly binary",
        ),
        (
            "WAT text",
            b"(component (core module))".to_vec(),
            "{}",
            "WAT text",
        ),
        (
            "core module",
            b"\0asm\x01\0\0\0".to_vec(),
            "{}",
            "core Wasm module, not a component",
        ),
        (
            "truncated component",
            hostile_bytes[..hostile_bytes.len() / 2].to_vec(),
            "{}",
            "compile failed",
        ),
        (
            "filesystem import",
            guests::bytes(guests::FS_READER),
            "{}",
            "imports wasi:filesystem",
        ),
        (
            "socket import",
            guests::bytes(guests::NET_CLIENT),
            "{}",
            "imports wasi:sockets",
        ),
        (
            "refused settings",
            hostile_bytes.clone(),
            r#"{"mode":"refuse-settings"}"#,
            "settings refused",
        ),
        (
            "unknown settings field",
            hostile_bytes.clone(),
            r#"{"mode":"deny","typo":1}"#,
            "unknown field",
        ),
        (
            "trial evaluation hangs",
            hostile_bytes.clone(),
            r#"{"mode":"trap-trial"}"#,
            "trial evaluation failed",
        ),
    ];
    for (what, bytes, settings, expected) in cases {
        match engine.load("x.wasm", &bytes, settings) {
            Ok(_) => panic!("{what} was accepted"),
            Err(e) => assert!(e.to_string().contains(expected), "{what}: {e}"),
        }
    }
    let forbidden = engine
        .load("x.wasm", &guests::bytes(guests::FS_READER), "{}")
        .err()
        .unwrap();
    assert!(matches!(forbidden, Error::ForbiddenImport(_)));
}

#[test]
fn warm_instances_keep_state_fresh_ones_do_not() {
    let p = member("dave", &[]);
    let count = |strategy| {
        let engine = PolicyEngine::new(
            Limits {
                strategy,
                ..Limits::default()
            },
            None,
        )
        .unwrap();
        let chain = PolicyChain::new(vec![hostile(&engine, "count")], vec![]);
        // The call phase: listing answers are remembered by the chain, so they would not show it.
        (0..3)
            .map(|_| match chain.veto(&ask(&p, "db", "query", Some("{}"))) {
                Verdict::Deny(d) => d.reason,
                v => panic!("{v:?}"),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(count(InstanceStrategy::Warm), ["1", "2", "3"]);
    assert_eq!(count(InstanceStrategy::Fresh), ["1", "1", "1"]);
}

#[test]
fn only_the_builtin_allowlist_has_its_listing_answers_remembered() {
    let engine = engine();
    let p = member("dave", &["db:*"]);
    // The built-in allowlist alone: a listing is evaluated once, then answered from memory, for
    // a listing and for a call of the same tool alike.
    let builtin = Arc::new(
        engine
            .load(BUILTIN_SOURCE, BUILTIN_ALLOWLIST, "{}")
            .expect("built-in"),
    );
    let chain = PolicyChain::new(vec![builtin.clone()], vec![]);
    assert_eq!(chain.decide(&ask(&p, "db", "query", None)), Verdict::Allow);
    assert_eq!(chain.decide(&ask(&p, "db", "query", None)), Verdict::Allow);
    assert_eq!(
        chain.decide(&ask(&p, "db", "query", Some("{}"))),
        Verdict::Allow
    );
    assert_eq!(chain.listing_cache().hits(), 2);
    // Other grants are another question: evaluated, and here denied.
    let regranted = member("dave", &["ci:*"]);
    assert!(matches!(
        chain.decide(&ask(&regranted, "db", "query", None)),
        Verdict::Deny(d) if d.code == "not-granted"
    ));
    assert_eq!(chain.listing_cache().hits(), 2);
    // A reload builds a new chain, with nothing remembered.
    let reloaded = PolicyChain::new(vec![builtin.clone()], vec![]);
    assert_eq!(
        reloaded.decide(&ask(&p, "db", "query", None)),
        Verdict::Allow
    );
    assert_eq!(reloaded.listing_cache().hits(), 0);
    // A listing-phase module from the policy directory may keep state ("count" answers with how
    // many times its instance was asked): a chain with one asks it every time.
    let counting = PolicyChain::new(vec![builtin, hostile(&engine, "count")], vec![]);
    let listing = || match counting.decide(&ask(&p, "db", "query", None)) {
        Verdict::Deny(d) => d.reason,
        v => panic!("{v:?}"),
    };
    assert_eq!([listing(), listing(), listing()], ["1", "2", "3"]);
    assert_eq!(counting.listing_cache().hits(), 0);
}

#[test]
fn a_trapped_warm_instance_is_thrown_away() {
    // "panic" traps on every real call; if a trapped instance were reused, the next call would run
    // on poisoned state. Each call must start from a new instance and fail the same clean way.
    let engine = engine();
    let chain = PolicyChain::new(vec![hostile(&engine, "panic")], vec![]);
    let p = member("erin", &[]);
    for _ in 0..5 {
        match chain.decide(&ask(&p, "db", "query", Some("{}"))) {
            Verdict::Deny(d) => assert_eq!(d.code, "policy-trap"),
            v => panic!("{v:?}"),
        }
    }
}

#[test]
fn compiled_modules_are_cached_by_content_hash() {
    let cache = tempfile::tempdir().unwrap();
    let bytes = guests::bytes(guests::SECRETS_GUARD);
    let first = PolicyEngine::new(Limits::default(), Some(cache.path().into())).unwrap();
    let t = Instant::now();
    first.load("guard.wasm", &bytes, "{}").unwrap();
    let cold = t.elapsed();
    let entries: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .collect();
    assert_eq!(entries.len(), 1, "one artifact per content hash");
    let name = entries[0].file_name().to_string_lossy().into_owned();
    assert!(name.ends_with(".cwasm") && name.len() > 64, "{name}");
    // A restart (a new engine) loads from the cache instead of compiling.
    let second = PolicyEngine::new(Limits::default(), Some(cache.path().into())).unwrap();
    let t = Instant::now();
    let m = second.load("guard.wasm", &bytes, "{}").unwrap();
    let warm = t.elapsed();
    eprintln!("load: cold {cold:?}, from cache {warm:?}");
    assert!(
        warm < cold,
        "cache hit {warm:?} should beat compile {cold:?}"
    );
    assert_eq!(m.name(), "secrets-guard");
    // A corrupt cache entry is ignored and rewritten, never trusted.
    std::fs::write(entries[0].path(), b"garbage").unwrap();
    let third = PolicyEngine::new(Limits::default(), Some(cache.path().into())).unwrap();
    third.load("guard.wasm", &bytes, "{}").unwrap();
    assert!(std::fs::metadata(entries[0].path()).unwrap().len() > 1000);
}

#[test]
fn a_bad_file_keeps_the_last_good_module_and_deleting_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "x.wasm", &guests::bytes(guests::HOSTILE));
    let set = load_dir(dir.path());
    let p = member("frank", &["*:*"]);
    let decide =
        || denial_code(&set.chain().decide(&ask(&p, "db", "query", Some("{}")))).map(str::to_owned);
    assert_eq!(decide().as_deref(), Some("hostile-deny"));

    for (what, bad) in [
        ("garbage", b"garbage bytes".to_vec()),
        ("wrong world", guests::bytes(guests::WRONG_WORLD)),
        ("filesystem import", guests::bytes(guests::FS_READER)),
    ] {
        install(dir.path(), "x.wasm", &bad);
        set.reload();
        assert_eq!(
            decide().as_deref(),
            Some("hostile-deny"),
            "after {what}, the last good module serves"
        );
        let status = set.status();
        assert_eq!(status.rejected.len(), 1, "{what}");
        assert!(status.rejected[0].serving_previous);
        assert_eq!(status.rejected[0].file, "x.wasm");
        let m = status
            .modules
            .iter()
            .find(|m| m.source == "x.wasm")
            .unwrap();
        assert!(
            m.last_error
                .as_deref()
                .unwrap_or("")
                .contains("reload rejected"),
            "{what}"
        );
    }
    // Bad settings beside a good module are refused the same way.
    install(dir.path(), "x.wasm", &guests::bytes(guests::HOSTILE));
    std::fs::write(dir.path().join("x.toml"), "mode = 'refuse-settings'").unwrap();
    set.reload();
    assert_eq!(decide().as_deref(), Some("hostile-deny"));
    assert!(set.status().rejected[0].reason.contains("settings refused"));
    std::fs::write(dir.path().join("x.toml"), "mode = 'allow'").unwrap();
    set.reload();
    assert_eq!(decide(), None, "new settings live");
    assert!(set.status().rejected.is_empty());

    std::fs::remove_file(dir.path().join("x.wasm")).unwrap();
    set.reload();
    assert_eq!(set.status().modules.len(), 1, "only the built-in is left");
    // A new file that never loaded is reported, and nothing else changes.
    install(dir.path(), "y.wasm", b"(module)");
    set.reload();
    let status = set.status();
    assert_eq!(status.modules.len(), 1);
    assert_eq!(status.rejected[0].file, "y.wasm");
    assert!(!status.rejected[0].serving_previous);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_picks_up_new_changed_and_deleted_files() {
    let dir = tempfile::tempdir().unwrap();
    let set = load_dir(dir.path());
    let _watch = set.watch().unwrap();
    let p = member("gina", &["*:*"]);
    let code = |set: &PolicySet| {
        denial_code(&set.chain().decide(&ask(&p, "db", "q", Some("{}")))).map(str::to_owned)
    };
    assert_eq!(code(&set), None);

    install(dir.path(), "h.wasm", &guests::bytes(guests::HOSTILE));
    let t = wait_until_async(Duration::from_secs(5), || {
        code(&set).as_deref() == Some("hostile-deny")
    })
    .await;
    assert!(t.is_some(), "new module goes live");

    // A partial write (no rename) settles once complete.
    std::fs::write(dir.path().join("h.toml"), "mode = 'allow'").unwrap();
    let t = wait_until_async(Duration::from_secs(5), || code(&set).is_none()).await;
    assert!(t.is_some(), "settings change goes live");
    let bytes = guests::bytes(guests::SECRETS_GUARD);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(dir.path().join("h.wasm"))
            .unwrap();
        f.write_all(&bytes[..bytes.len() / 3]).unwrap();
        f.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        f.write_all(&bytes[bytes.len() / 3..]).unwrap();
    }
    std::fs::remove_file(dir.path().join("h.toml")).unwrap();
    let t = wait_until_async(Duration::from_secs(5), || {
        set.status()
            .modules
            .iter()
            .any(|m| m.source == "h.wasm" && m.name == "secrets-guard")
    })
    .await;
    assert!(
        t.is_some(),
        "the completed write is live: {:?}",
        set.status()
    );

    std::fs::remove_file(dir.path().join("h.wasm")).unwrap();
    let t = wait_until_async(Duration::from_secs(5), || set.status().modules.len() == 1).await;
    assert!(t.is_some(), "deleted module is removed");
}

#[test]
fn calls_in_flight_keep_their_chain_and_duplicates_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "x.wasm", &guests::bytes(guests::HOSTILE));
    let set = load_dir(dir.path());
    let p = member("hal", &["*:*"]);
    let in_flight = set.chain();

    // Same bytes again (a touch, a duplicate event): nothing is recompiled or swapped.
    install(dir.path(), "x.wasm", &guests::bytes(guests::HOSTILE));
    assert!(!set.reload(), "unchanged content is skipped");
    assert!(Arc::ptr_eq(&in_flight, &set.chain()));

    install(dir.path(), "x.wasm", &guests::bytes(guests::ROW_LIMIT));
    std::fs::write(dir.path().join("x.toml"), "max_rows = 10").unwrap();
    assert!(set.reload());
    // The request that loaded the old chain still decides with it...
    assert_eq!(
        denial_code(&in_flight.decide(&ask(&p, "db", "query", Some("{}")))),
        Some("hostile-deny")
    );
    // ...while new requests see the new one.
    assert_eq!(
        set.chain()
            .decide(&ask(&p, "db", "query", Some(r#"{"limit":5}"#))),
        Verdict::Allow
    );
    assert_eq!(
        denial_code(
            &set.chain()
                .decide(&ask(&p, "db", "query", Some(r#"{"limit":50}"#)))
        ),
        Some("too-many-rows")
    );
    let m = set
        .status()
        .modules
        .into_iter()
        .find(|m| m.source == "x.wasm")
        .unwrap();
    assert_eq!(
        (m.name.as_str(), m.decisions, m.denies, m.errors),
        ("row-limit", 2, 1, 0)
    );
    assert!(m.loaded_at_ms > 0 && m.digest.len() == 64);
}

/// The CPU time the calling thread has used (the clock policy budgets count).
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

//! The `mcpgw policy` commands, run as a user would: the built binary on real components.

use std::process::{Command, Output};

const ALLOWLIST: &str = concat!(env!("OUT_DIR"), "/allowlist.wasm");
const SECRETS_GUARD: &str = concat!(env!("OUT_DIR"), "/secrets_guard.wasm");

fn mcpgw(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mcpgw"))
        .args(args)
        .output()
        .expect("run mcpgw")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn policy_check_accepts_a_good_module() {
    let o = mcpgw(&["policy", "check", ALLOWLIST]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    assert!(
        out.starts_with("ok: ") && out.contains("module allowlist (phases: list, call)"),
        "{out}"
    );
}

#[test]
fn policy_check_rejects_bad_modules_and_settings_with_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"definitely not wasm").unwrap();
    let o = mcpgw(&["policy", "check", junk.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("rejected:") && stdout(&o).contains("not a WebAssembly binary"),
        "{o:?}"
    );

    let settings = dir.path().join("guard.toml");
    std::fs::write(&settings, "tools = ['nocolon']").unwrap();
    let o = mcpgw(&[
        "policy",
        "check",
        SECRETS_GUARD,
        "--settings",
        settings.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("settings refused: invalid pattern"),
        "{o:?}"
    );
}

#[test]
fn policy_run_prints_the_decision_and_fuel() {
    let key = format!("AKIA{}", "IOSFODNN7EXAMPLE");
    let call = serde_json::json!({"server": "db", "tool": "query", "member": "alice", "arguments": {"k": key}});
    let o = mcpgw(&["policy", "run", SECRETS_GUARD, "--call", &call.to_string()]);
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["code"], "secret-in-arguments");
    assert!(!v["reason"].as_str().unwrap().contains(&key));
    assert!(v["fuel"].as_u64().unwrap() > 100, "{v}");

    let call = r#"{"server":"db","tool":"query","member":"alice","grants":["db:*"]}"#;
    let o = mcpgw(&["policy", "run", ALLOWLIST, "--call", call]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["decision"], "allow", "{v}");
}

#[test]
fn policy_status_lists_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(SECRETS_GUARD, dir.path().join("10-guard.wasm")).unwrap();
    std::fs::write(dir.path().join("20-bad.wasm"), b"(component)").unwrap();
    let o = mcpgw(&[
        "policy",
        "status",
        "--dir",
        dir.path().to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let names: Vec<&str> = v["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["allowlist", "secrets-guard"]);
    assert_eq!(v["rejected"][0]["file"], "20-bad.wasm");
    assert!(
        v["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("WAT text")
    );
}

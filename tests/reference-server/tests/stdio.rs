//! `reference-server --stdio` as a stdio client sees it, byte for byte: nothing on stdout but
//! JSON-RPC lines, a clean exit on end of input, `debug_crash` dying without an answer.
//!
//! Also what makes `cargo test --workspace` build `target/debug/reference-server` at all (cargo
//! builds a package's binaries for its integration tests only), which the end-to-end tests of
//! `mcpgw-tests` spawn.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

/// Runs `reference-server --stdio` with `lines` on stdin, then end of input; its whole output.
fn run(lines: &[Value]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_reference-server"))
        .arg("--stdio")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn reference-server --stdio");
    let mut stdin = child.stdin.take().expect("stdin");
    for line in lines {
        writeln!(stdin, "{line}").expect("write a line");
    }
    drop(stdin);
    child.wait_with_output().expect("wait for reference-server")
}

/// Each stdout line as JSON-RPC; panics on anything else.
fn messages(output: &Output) -> Vec<Value> {
    String::from_utf8(output.stdout.clone())
        .expect("stdout is UTF-8")
        .lines()
        .map(|line| {
            let message: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON on stdout ({e}): {line:?}"));
            assert_eq!(message["jsonrpc"], "2.0", "not JSON-RPC on stdout: {line}");
            message
        })
        .collect()
}

fn initialize() -> [Value; 2] {
    [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "stdio-test", "version": "0"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    ]
}

fn response(messages: &[Value], id: u64) -> Option<&Value> {
    messages
        .iter()
        .find(|m| m["id"] == id && m.get("method").is_none())
}

#[test]
fn stdout_carries_only_protocol_lines_and_end_of_input_exits_cleanly() {
    let [init, initialized] = initialize();
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let output = run(&[init, initialized, list]);
    assert!(output.status.success(), "{output:?}");
    let messages = messages(&output);
    assert_eq!(messages.len(), 2, "{messages:?}");
    let init = response(&messages, 1).expect("initialize answered");
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25");
    let tools = &response(&messages, 2).expect("tools/list answered")["result"]["tools"];
    let names: Vec<&str> = tools
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for name in [
        "test_simple_text",
        "test_tool_with_progress",
        "test_sampling",
        "debug_environment",
        "debug_crash",
    ] {
        assert!(names.contains(&name), "{name} is not listed: {names:?}");
    }
}

#[test]
fn a_client_that_closes_stdin_at_once_is_a_clean_exit() {
    let output = run(&[]);
    assert!(output.status.success(), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
}

#[test]
fn the_stateless_revision_needs_no_initialize() {
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "stdio-test", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    let output = run(&[
        json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta}}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "test_simple_text", "_meta": meta}}),
    ]);
    assert!(output.status.success(), "{output:?}");
    let messages = messages(&output);
    let discover = response(&messages, 1).expect("server/discover answered");
    assert!(
        discover["result"]["supportedVersions"]
            .as_array()
            .is_some_and(|v| v.contains(&json!("2026-07-28"))),
        "{discover}"
    );
    let call = response(&messages, 2).expect("tools/call answered");
    assert_eq!(
        call["result"]["content"][0]["text"],
        "This is a simple text response for testing."
    );
}

#[test]
fn debug_crash_exits_with_its_code_and_answers_nothing() {
    let [init, initialized] = initialize();
    let crash = |id: u64, args: Value| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": "debug_crash", "arguments": args}})
    };
    let output = run(&[
        init.clone(),
        initialized.clone(),
        crash(2, json!({"code": 42})),
    ]);
    assert_eq!(output.status.code(), Some(42), "{output:?}");
    let messages = messages(&output);
    assert!(response(&messages, 1).is_some(), "{messages:?}");
    assert!(response(&messages, 2).is_none(), "{messages:?}");

    let output = run(&[init, initialized, crash(2, json!({}))]);
    assert_eq!(
        output.status.code(),
        Some(3),
        "the default code: {output:?}"
    );
}

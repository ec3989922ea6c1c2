//! Two tools for the gateway's stdio-upstream tests, listed only in `--stdio` mode (the HTTP mode
//! serves exactly the conformance fixtures): `debug_environment` shows what the process was
//! started with, `debug_crash` ends it abruptly.
//!
//! They stay out of the HTTP mode on purpose: the conformance run shares one HTTP server between
//! all its scenarios and legs (a crash would take it down for the rest), and an HTTP endpoint has
//! no business handing out its environment.

use std::collections::BTreeMap;

use rmcp::{
    ErrorData,
    model::{CallToolResponse, CallToolResult, ContentBlock, JsonObject, Tool},
};
use serde_json::{Value, json};

/// The exit code of `debug_crash` when the call names none.
const DEFAULT_CRASH_CODE: i64 = 3;

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        other => panic!("a debug tool schema is not an object: {other}"),
    }
}

/// The debug tools, appended to the fixtures' list in `--stdio` mode.
pub fn tools() -> Vec<Tool> {
    vec![
        Tool::new(
            "debug_environment",
            "Returns this process's environment, uid and pid as JSON text: \
             {\"env\": {NAME: VALUE, ...}, \"uid\": N, \"pid\": N}",
            object(json!({ "type": "object", "properties": {} })),
        ),
        Tool::new(
            "debug_crash",
            "Exits the process at once with exit code `code` (default 3), without answering or \
             flushing anything",
            object(json!({
                "type": "object",
                "properties": {
                    "code": { "type": "integer", "description": "The exit code (default 3)" }
                }
            })),
        ),
    ]
}

/// Runs debug tool `name`; `None` when `name` is not one.
pub fn call(name: &str, args: &JsonObject) -> Option<Result<CallToolResponse, ErrorData>> {
    match name {
        "debug_environment" => Some(Ok(environment())),
        "debug_crash" => Some(crash(args)),
        _ => None,
    }
}

fn environment() -> CallToolResponse {
    // Lossy for names or values that are not UTF-8: a test reads them, nothing round-trips them.
    let env: BTreeMap<String, String> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let body = json!({ "env": env, "uid": uid, "pid": std::process::id() });
    CallToolResult::success(vec![ContentBlock::text(body.to_string())]).into()
}

fn crash(args: &JsonObject) -> Result<CallToolResponse, ErrorData> {
    let code = match args.get("code") {
        None | Some(Value::Null) => DEFAULT_CRASH_CODE,
        Some(value) => value
            .as_i64()
            .ok_or_else(|| ErrorData::invalid_params("code must be an integer", None))?,
    };
    let code = i32::try_from(code)
        .map_err(|_| ErrorData::invalid_params("code must fit in 32 bits", None))?;
    // No answer, no flush, no destructors: what a crashing server looks like to the gateway.
    std::process::exit(code)
}

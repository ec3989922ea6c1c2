//! Shared helpers of the end-to-end tests.

use mcpgw::policy::{Principal, Question};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Paths of the Wasm components built from `plugins/` and `tests/guests/` by `build.rs`.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));

    /// The bytes of a built guest.
    pub fn bytes(path: &str) -> Vec<u8> {
        std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
    }
}

/// Installs `src` as `dir/name` the way deploy tools do: write a hidden temp file, then rename.
pub fn install(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).expect("write temp module");
    let dest = dir.join(name);
    std::fs::rename(&tmp, &dest).expect("rename module into place");
    dest
}

/// Polls `cond` every millisecond until it holds or `timeout` passes; returns the time it took.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Async form of [`wait_until`].
pub async fn wait_until_async(
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A member of workspace `acme` with these grants.
pub fn member(name: &str, grants: &[&str]) -> Principal {
    Principal {
        workspace: "acme".into(),
        member: Some(name.into()),
        grants: grants.iter().map(|g| g.to_string()).collect(),
    }
}

/// The workspace token of `acme`.
pub fn workspace_token() -> Principal {
    Principal {
        workspace: "acme".into(),
        member: None,
        grants: vec![],
    }
}

/// A question for the policy chain.
pub fn ask<'a>(
    p: &'a Principal,
    server: &'a str,
    tool: &'a str,
    args: Option<&'a str>,
) -> Question<'a> {
    Question {
        request_id: "req-1",
        principal: p,
        server,
        tool,
        arguments: args,
    }
}

//! The README's commands, run as written: every line of every `sh` block in README.md is either run
//! here by `sh -c`, exactly as printed, in a scratch directory with the built `mcpgw` first on
//! `PATH` (placeholders like `tok_…` filled in, default ports moved to ephemeral ones through the
//! `MCPGW_*` environment), or named with the test or CI step that runs it. A README line this test
//! does not know fails it: a README that lies is a bug.

#[path = "../build_guests.rs"]
#[allow(dead_code)] // the build scripts' helper; this test needs only its list of build variables
mod build_guests;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The `sh` blocks of the README, each as its logical lines (`\` continuations joined).
fn readme_blocks() -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(repo_root().join("README.md")).expect("read README.md");
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    let mut pending = String::new();
    for line in text.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(_), "```") => blocks.push(current.take().expect("open block")),
            (Some(lines), l) => {
                if let Some(head) = l.strip_suffix('\\') {
                    pending.push_str(head);
                    continue;
                }
                pending.push_str(l);
                let full = std::mem::take(&mut pending);
                // A line that is only a comment continues the explanation of the line above.
                if !full.trim().is_empty() && !full.trim_start().starts_with('#') {
                    lines.push(full);
                }
            }
            (None, _) => {}
        }
    }
    blocks
}

/// The scratch directory the README's commands run in, as a user's checkout would look to them:
/// `plugins/` from the repository, `policies/`, `target/release/mcpgw` (the binary under test) and
/// `target/wasm32-wasip2` where `cargo build --target wasm32-wasip2` puts its output.
struct Scratch {
    dir: tempfile::TempDir,
    bin_dir: PathBuf,
    wasm_target_dir: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().expect("scratch dir");
        let root = repo_root();
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_mcpgw"));
        let bin_dir = dir.path().join("bin");
        std::fs::create_dir_all(&bin_dir).unwrap();
        std::os::unix::fs::symlink(&bin, bin_dir.join("mcpgw")).unwrap();
        std::os::unix::fs::symlink(root.join("plugins"), dir.path().join("plugins")).unwrap();
        std::fs::create_dir_all(dir.path().join("policies")).unwrap();
        std::fs::create_dir_all(dir.path().join("target/release")).unwrap();
        std::os::unix::fs::symlink(&bin, dir.path().join("target/release/mcpgw")).unwrap();
        // Its own target directory, so this build never waits on the outer cargo's lock; kept
        // between runs so only the first one compiles.
        let wasm_target_dir = root.join("target").join("readme");
        std::fs::create_dir_all(wasm_target_dir.join("wasm32-wasip2")).unwrap();
        std::os::unix::fs::symlink(
            wasm_target_dir.join("wasm32-wasip2"),
            dir.path().join("target/wasm32-wasip2"),
        )
        .unwrap();
        Scratch {
            dir,
            bin_dir,
            wasm_target_dir,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `sh -c LINE` in the scratch directory, `mcpgw` first on `PATH`, on the default database
    /// (`./mcpgw-data/mcpgw.db`), with nothing from the test's own environment steering mcpgw.
    fn sh(&self, line: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(line).current_dir(self.path());
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", self.bin_dir.display()));
        for (key, _) in std::env::vars() {
            if key.starts_with("MCPGW_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("MCPGW_LOG", "warn").env("DB_TOKEN", "db-secret");
        cmd
    }

    /// Runs a line to completion; it must succeed.
    fn run(&self, line: &str) -> String {
        let out = self.sh(line).output().expect("run sh");
        assert_ok(line, &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `cargo ...` from the repository root (where the README's cargo commands are typed), its
    /// output in this test's own target directory.
    fn cargo(&self, line: &str) {
        let mut cmd = self.sh(line);
        cmd.current_dir(repo_root())
            .env("CARGO_TARGET_DIR", &self.wasm_target_dir);
        for var in build_guests::OUTER_BUILD_VARS {
            cmd.env_remove(var);
        }
        let out = cmd.output().expect("run cargo");
        assert_ok(line, &out);
    }

    /// Starts a long-running line in its own process group, stdout piped.
    fn spawn(&self, line: &str, env: &[(&str, &str)]) -> Background {
        let mut cmd = self.sh(line);
        cmd.envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0);
        let mut child = cmd.spawn().expect("spawn sh");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Background {
            child,
            lines,
            line: line.to_owned(),
        }
    }
}

fn assert_ok(line: &str, out: &Output) {
    assert!(
        out.status.success(),
        "README command failed: {line}\nstatus: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A README command that runs until stopped.
struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
    line: String,
}

impl Background {
    /// The first stdout line satisfying `want`, within `within`.
    fn wait_for(&self, within: Duration, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if want(&l) => return l,
                Ok(_) => {}
                Err(_) => panic!("{}: no awaited output within {within:?}", self.line),
            }
        }
    }

    /// SIGTERM to the command; it must be gone within `within`, and when `clean`, with
    /// exit status 0 (a server that drains on SIGTERM) rather than killed by the signal.
    fn terminate(&mut self, within: Duration, clean: bool) {
        // The command itself gets the signal, as from a terminal's Ctrl-C or a service manager:
        // `sh` may have exec'd it, or be waiting on it (it then exits with the command's status).
        let pid = self.child.id().to_string();
        let to_children = Command::new("pkill")
            .args(["-TERM", "-P", &pid])
            .status()
            .expect("pkill");
        if !to_children.success() {
            let sent = Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("kill");
            assert!(sent.success());
        }
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(
                    status.success() || !clean,
                    "{} exited with {status}",
                    self.line
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running {within:?} after SIGTERM",
                self.line
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Background {
    /// A failed assertion must not leave the command running.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let group = format!("-{}", self.child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = self.child.wait();
        }
    }
}

/// One HTTP/1.1 request by hand; returns the status code.
fn http_status(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    let _ = stream.read_to_string(&mut resp);
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {resp:?}"))
}

/// A line's words, with `target/release/mcpgw` spelled `mcpgw`.
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace()
        .map(|w| if w.ends_with("/mcpgw") { "mcpgw" } else { w })
        .collect()
}

/// True when `words` holds `run`, in order and together.
fn has(words: &[&str], run: &[&str]) -> bool {
    words.windows(run.len()).any(|w| w == run)
}

/// The address in a `... listening on http://ADDR...` line.
fn listening_addr(line: &str) -> String {
    let rest = line.split("http://").nth(1).expect("an http:// address");
    rest.split('/').next().unwrap_or(rest).to_owned()
}

#[test]
fn every_readme_command_runs_as_written() {
    let blocks = readme_blocks();
    assert_eq!(
        blocks.len(),
        4,
        "README sh blocks: the two commands, running it for real, writing a policy, the audit trail"
    );
    let scratch = Scratch::new();

    // The two commands at the top. `scripts/test` is what CI runs (`.ci/run` execs it), so it is
    // running right now; `scripts/run` sets up, builds and execs `mcpgw dev`, whose every promise
    // the `dev` test checks on the built binary.
    let first: Vec<&str> = blocks[0]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(first, ["scripts/run", "scripts/test"]);
    let ci = std::fs::read_to_string(repo_root().join(".ci/run")).unwrap();
    assert!(
        ci.contains("exec scripts/test"),
        ".ci/run runs scripts/test"
    );
    let run = std::fs::read_to_string(repo_root().join("scripts/run")).unwrap();
    assert!(run.contains("scripts/setup") && run.contains("mcpgw dev"));

    // Running it for real: the walk-through, then `serve`, while the audit block runs against it.
    let mut token = String::new();
    let mut serving = None;
    for line in &blocks[1] {
        let words = words(line);
        match words.as_slice() {
            w if has(w, &["mcpgw", "serve"]) => {
                let gateway = scratch.spawn(
                    line,
                    &[
                        ("MCPGW_LISTEN", "127.0.0.1:0"),
                        ("MCPGW_ADMIN_LISTEN", "127.0.0.1:0"),
                    ],
                );
                let mcp = listening_addr(&gateway.wait_for(Duration::from_secs(60), |l| {
                    l.contains("MCP endpoint listening")
                }));
                let admin = listening_addr(&gateway.wait_for(Duration::from_secs(60), |l| {
                    l.contains("admin API listening")
                }));
                serving = Some((gateway, mcp, admin));
            }
            ["mcpgw", "token", "revoke", "tok_…", ..] => {
                let listed: serde_json::Value =
                    serde_json::from_str(&scratch.run("mcpgw token list acme --json")).unwrap();
                let id = listed[0]["id"].as_str().expect("a token id").to_owned();
                scratch.run(&line.replace("tok_…", &id));
                let after = scratch.run("mcpgw token list acme --json");
                assert!(!after.contains(&id), "{id} is revoked: {after}");
            }
            ["mcpgw", "token", "issue", ..] => {
                token = scratch.run(line).trim().to_owned();
                assert!(
                    token.starts_with("mcpgw_"),
                    "the token, shown once: {token}"
                );
            }
            ["mcpgw", "grant", "list", ..] => {
                let out = scratch.run(line);
                assert!(out.contains("db:*") && out.contains("*:search"), "{out}");
            }
            ["mcpgw", "token", "list", ..] => {
                let out = scratch.run(line);
                assert!(out.contains("tok_") && !out.contains(&token), "{out}");
            }
            ["mcpgw", ..] => {
                scratch.run(line);
            }
            _ => panic!("README command not exercised by this test: {line}"),
        }
    }
    let (mut gateway, mcp, admin) = serving.expect("the README starts mcpgw serve");
    // The revoked token is refused; the admin API wants its token.
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let bearer = format!("Bearer {token}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    assert_eq!(http_status(&mcp, "POST", "/mcp/db", &headers, call), 401);
    assert_eq!(http_status(&admin, "GET", "/metrics", &[], ""), 401);

    // Writing a policy.
    for line in &blocks[2] {
        let words = words(line);
        match words.as_slice() {
            ["cargo", "build", ..] => scratch.cargo(line),
            w if has(w, &["mcpgw", "policy", "run"]) => {
                let out = scratch.run(line);
                assert!(
                    out.contains("deny"),
                    "limit 1000 is over row-limit's 500: {out}"
                );
            }
            ["rustup", ..] | ["cp", ..] => {
                scratch.run(line);
            }
            w if has(w, &["mcpgw", "policy", "check"]) => {
                scratch.run(line);
            }
            _ => panic!("README command not exercised by this test: {line}"),
        }
    }
    let status = scratch.run("mcpgw policy status --dir policies");
    assert!(
        status.contains("row-limit"),
        "dropped in and live: {status}"
    );

    // The audit trail, on what `serve` recorded (the revoked token's attempt, at least).
    for line in &blocks[3] {
        let words = words(line);
        match words.as_slice() {
            ["mcpgw", "audit", "tail", "--follow", ..] => {
                let tail = scratch.spawn(line, &[]);
                // A failed authentication while it follows shows up in it (the revoked token's
                // attempt before was `invalid-token`; this one carries no token at all).
                let headers = [("content-type", "application/json")];
                assert_eq!(http_status(&mcp, "POST", "/mcp/db", &headers, call), 401);
                tail.wait_for(Duration::from_secs(30), |l| l.contains("missing-token"));
                let mut tail = tail;
                tail.terminate(Duration::from_secs(10), false);
            }
            ["mcpgw", "audit", "export", "--format", "csv", ..] => {
                scratch.run(line);
                let csv = std::fs::read_to_string(scratch.path().join("audit.csv")).unwrap();
                assert!(csv.lines().count() >= 2, "a header and records: {csv}");
            }
            ["mcpgw", "audit", "checkpoint", ..] => {
                scratch.run(line);
                let heads = std::fs::read_to_string(scratch.path().join("heads.txt")).unwrap();
                assert!(!heads.trim().is_empty());
            }
            ["mcpgw", "audit", ..] => {
                scratch.run(line);
            }
            _ => panic!("README command not exercised by this test: {line}"),
        }
    }
    gateway.terminate(Duration::from_secs(30), true);
}

//! Shared by the build scripts of `mcpgw` and `mcpgw-tests`: builds Wasm guest crates of this
//! workspace for `wasm32-wasip2` with the `plugin` profile.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The guests' target triple.
pub const TARGET: &str = "wasm32-wasip2";

/// The outer build's flags and wrappers (clippy, coverage): they are for the host, and a nested
/// cargo building Wasm guests must not inherit them.
pub const OUTER_BUILD_VARS: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_WRAPPER",
    "CARGO_BUILD_TARGET",
];

/// Runs `cargo build --target wasm32-wasip2 --profile plugin -p ...` and returns the output dir.
pub fn build_guests(root: &Path, manifest: &Path, packages: &[&str]) -> PathBuf {
    let target_dir = root.join("target").join("wasm-guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "--target",
        TARGET,
        "--profile",
        "plugin",
        "--manifest-path",
    ])
    .arg(manifest)
    .arg("--target-dir")
    .arg(&target_dir);
    for p in packages {
        cmd.args(["-p", p]);
    }
    for var in OUTER_BUILD_VARS.iter().chain(&["CARGO_TARGET_DIR"]) {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo for the wasm guests");
    if !status.success() {
        panic!(
            "building the policy components failed; if the {TARGET} target is missing, run \
             `rustup target add {TARGET}` (the README's commands do)"
        );
    }
    target_dir.join(TARGET).join("plugin")
}

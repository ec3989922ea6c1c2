//! Builds the built-in policy components (`plugins/allowlist`, `plugins/secrets-guard`) for
//! `wasm32-wasip2` and puts them in OUT_DIR, where `policy.rs` embeds them with `include_bytes!`.
//! A nested cargo with its own target directory avoids waiting on the outer build's lock.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const PLUGINS: &[(&str, &str)] = &[("allowlist", "allowlist.wasm"), ("secrets-guard", "secrets_guard.wasm")];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("workspace root").to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    for watched in ["wit", "policy-sdk/src", "policy-sdk/Cargo.toml", "plugins", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let names: Vec<&str> = PLUGINS.iter().map(|(p, _)| *p).collect();
    let built = build_guests(&root, &root.join("Cargo.toml"), &names);
    for (_, file) in PLUGINS {
        let from = built.join(file);
        std::fs::copy(&from, out_dir.join(file))
            .unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
}

/// Runs `cargo build --target wasm32-wasip2 --profile plugin -p ...` and returns the output dir.
fn build_guests(root: &Path, manifest: &Path, packages: &[&str]) -> PathBuf {
    let target_dir = root.join("target").join("wasm-guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--target", TARGET, "--profile", "plugin", "--manifest-path"])
        .arg(manifest)
        .arg("--target-dir")
        .arg(&target_dir);
    for p in packages {
        cmd.args(["-p", p]);
    }
    // The outer build's flags and wrappers (clippy, coverage) are for the host, not the guests.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
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

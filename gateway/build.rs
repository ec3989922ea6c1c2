//! Builds the built-in policy components (`plugins/allowlist`, `plugins/secrets-guard`) for
//! `wasm32-wasip2` and puts them in OUT_DIR, where `policy.rs` embeds them with `include_bytes!`.
//! A nested cargo with its own target directory avoids waiting on the outer build's lock.

#[path = "build_guests.rs"]
mod build_guests;

use build_guests::build_guests;
use std::path::PathBuf;

/// Embedded: allowlist and secrets-guard. row-limit (the SDK example), prompt-guard and
/// flow-guard are for the benchmarks.
const PLUGINS: &[(&str, &str)] = &[
    ("allowlist", "allowlist.wasm"),
    ("secrets-guard", "secrets_guard.wasm"),
    ("row-limit", "row_limit.wasm"),
    ("prompt-guard", "prompt_guard.wasm"),
    ("flow-guard", "flow_guard.wasm"),
];

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("workspace root").to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    for watched in [
        "wit",
        "policy-sdk/src",
        "policy-sdk/Cargo.toml",
        "plugins",
        "Cargo.lock",
        // The workspace manifest holds the `plugin` profile the guests are built with.
        "Cargo.toml",
    ] {
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

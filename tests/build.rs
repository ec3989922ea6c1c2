//! Builds the real plugins and the hostile guest fixtures for `wasm32-wasip2` and writes their
//! paths as constants to `OUT_DIR/guests.rs`.

#[path = "../gateway/build_guests.rs"]
mod build_guests;

use std::fmt::Write as _;
use std::path::PathBuf;

const GUESTS: &[(&str, &str, &str)] = &[
    ("ALLOWLIST", "allowlist", "allowlist.wasm"),
    ("SECRETS_GUARD", "secrets-guard", "secrets_guard.wasm"),
    ("ROW_LIMIT", "row-limit", "row_limit.wasm"),
    ("PROMPT_GUARD", "prompt-guard", "prompt_guard.wasm"),
    ("FLOW_GUARD", "flow-guard", "flow_guard.wasm"),
    ("SQL_GUARD", "sql-guard", "sql_guard.wasm"),
    ("EGRESS_GUARD", "egress-guard", "egress_guard.wasm"),
    ("HOSTILE", "guest-hostile", "guest_hostile.wasm"),
    ("FS_READER", "guest-fs-reader", "guest_fs_reader.wasm"),
    ("NET_CLIENT", "guest-net-client", "guest_net_client.wasm"),
    ("WRONG_WORLD", "guest-wrong-world", "guest_wrong_world.wasm"),
];

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("workspace root").to_path_buf();
    for watched in [
        "wit",
        "policy-sdk/src",
        "plugins",
        "tests/guests",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let packages: Vec<&str> = GUESTS.iter().map(|(_, p, _)| *p).collect();
    let dir = build_guests::build_guests(&root, &root.join("Cargo.toml"), &packages);
    let mut out = String::new();
    for (constant, package, file) in GUESTS {
        let path = dir.join(file);
        assert!(path.exists(), "{} was not built", path.display());
        writeln!(out, "/// `{package}` built for wasm32-wasip2.").unwrap();
        writeln!(
            out,
            "pub const {constant}: &str = {:?};",
            path.display().to_string()
        )
        .unwrap();
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(out_dir.join("guests.rs"), out).expect("write guests.rs");
}

//! Test fixture: decides by reading a file, which needs `wasi:filesystem`; the host must refuse it.
use policy_sdk::{Decision, NoSettings, Policy, ToolCall};

pub struct FsReader;

impl Policy for FsReader {
    type Settings = NoSettings;
    fn call(_: &ToolCall, _: &NoSettings) -> Decision {
        match std::fs::read_to_string("/etc/passwd") {
            Ok(text) => Decision::deny("read", text.len().to_string()),
            Err(_) => Decision::abstain(),
        }
    }
}

policy_sdk::export_policy!(FsReader);

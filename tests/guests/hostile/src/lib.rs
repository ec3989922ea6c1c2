//! Test fixture. Behaves per `mode` for every question except the host's trial call (server
//! `trial`), so that it loads and then misbehaves on real traffic.
use policy_sdk::{Decision, Phases, Policy, Settings, ToolCall, ToolResult, log};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mode {
    mode: String,
    /// When set, misbehave only on this server and abstain on the others.
    only_server: Option<String>,
}

impl Default for Mode {
    fn default() -> Self {
        Mode {
            mode: "deny".into(),
            only_server: None,
        }
    }
}

impl Settings for Mode {
    fn validate(&self) -> Result<(), String> {
        if self.mode == "refuse-settings" {
            return Err("mode refuse-settings refuses every settings".into());
        }
        Ok(())
    }
}

pub struct Hostile;

static mut COUNTER: u64 = 0;

fn act(call: &ToolCall, mode: &Mode) -> Decision {
    if mode.only_server.as_ref().is_some_and(|s| *s != call.server) {
        return Decision::abstain();
    }
    if (call.server == "trial" && mode.mode != "trap-trial") || mode.mode == "deny-results" {
        return Decision::abstain();
    }
    match mode.mode.as_str() {
        "allow" => Decision::allow(),
        "abstain" => Decision::abstain(),
        "deny" => Decision::deny("hostile-deny", "the hostile fixture denies"),
        "loop" | "trap-trial" => {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        "bomb" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                // Reserve without filling: memory grows as fast as the allocator can ask.
                let mut chunk = Vec::<u8>::with_capacity(1 << 20);
                chunk.push(1);
                hoard.push(chunk);
                std::hint::black_box(&hoard);
            }
        }
        "panic" => panic!("hostile fixture panics"),
        "bad-code" => Decision::deny("Not A Code!", "invalid code"),
        "huge-reason" => Decision::deny("huge", "x".repeat(100_000)),
        "log-spam" => {
            for i in 0..200 {
                log::warn("spam", &[("i", &i.to_string())]);
            }
            Decision::allow()
        }
        "count" => {
            // Warm instances keep globals between calls; fresh ones do not.
            // SAFETY: wasm guests are single-threaded.
            let n = unsafe {
                COUNTER += 1;
                COUNTER
            };
            Decision::deny("count", n.to_string())
        }
        other => Decision::deny("unknown-mode", other.to_owned()),
    }
}

impl Policy for Hostile {
    type Settings = Mode;
    const PHASES: Phases = Phases::LIST.union(Phases::CALL).union(Phases::RESULT);

    fn list(call: &ToolCall, mode: &Mode) -> Decision {
        act(call, mode)
    }
    fn call(call: &ToolCall, mode: &Mode) -> Decision {
        act(call, mode)
    }
    fn result(call: &ToolCall, result: &ToolResult, mode: &Mode) -> Decision {
        if mode.mode == "deny-results" {
            // A semantic result filter: refuse results that mention "secret".
            return if result.texts().iter().any(|t| t.contains("secret")) {
                Decision::deny("secret-in-result", "the result mentions a secret")
            } else {
                Decision::abstain()
            };
        }
        act(call, mode)
    }
}

policy_sdk::export_policy!(Hostile);

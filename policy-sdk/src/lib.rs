//! The SDK for mcpgw policy modules.
//!
//! A policy module is a WebAssembly component implementing `wit/policy.wit`. With this crate, it is a
//! type implementing [`Policy`] plus one [`export_policy!`] line; the WIT plumbing, settings parsing and
//! validation, and the conversions are done here. Rules stay plain Rust functions over [`ToolCall`], so
//! they are unit-tested natively with `cargo test`, no Wasm build needed.
//!
//! ```
//! use policy_sdk::{Decision, NoSettings, Phases, Policy, ToolCall};
//!
//! pub struct NoDeployOnFriday;
//! impl Policy for NoDeployOnFriday {
//!     type Settings = NoSettings;
//!     const PHASES: Phases = Phases::CALL;
//!     fn call(call: &ToolCall, _: &NoSettings) -> Decision {
//!         match call.argument::<String>("day") {
//!             Some(day) if call.tool == "deploy" && day == "friday" => {
//!                 Decision::deny("friday-deploy", "no deploys on Friday")
//!             }
//!             _ => Decision::abstain(),
//!         }
//!     }
//! }
//! // In the plugin crate: policy_sdk::export_policy!(NoDeployOnFriday);
//! ```
#![deny(missing_docs)]

extern crate self as policy_sdk;

use serde::de::DeserializeOwned;
use std::ops::BitOr;

/// Re-exported for typed settings: `#[derive(Deserialize)] #[serde(crate = "policy_sdk::serde")]`.
pub use serde::{self, Deserialize};
/// Re-exported for reading arguments and results as JSON values.
pub use serde_json;
/// Re-exported so that a plugin needs no dependency but this crate.
pub use wit_bindgen;

#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "policy",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_policy_world",
        default_bindings_module: "policy_sdk::bindings",
        runtime_path: "policy_sdk::wit_bindgen::rt",
        bitflags_path: "policy_sdk::wit_bindgen::rt::bitflags",
    });
}

pub mod log;
pub mod pattern;
#[doc(hidden)]
pub mod rt;

/// The question a module answers: may this principal see (list) or call this tool?
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolCall {
    /// Gateway request id, for correlating logs with the audit trail.
    pub request_id: String,
    /// Workspace of the caller's token.
    pub workspace: String,
    /// Member id; `None` for the workspace token (system access).
    pub member: Option<String>,
    /// The member's admin-set grants (`server:tool` patterns).
    pub grants: Vec<String>,
    /// Upstream server name.
    pub server: String,
    /// Tool name as the upstream names it.
    pub tool: String,
    /// Arguments as JSON text; `None` when only visibility (`tools/list`) is asked.
    pub arguments: Option<String>,
    /// What the upstream's listing says about the tool; `None` when the gateway has none.
    pub facts: Option<ToolFacts>,
    /// The MCP client as it named itself; `None` when it did not say.
    pub client: Option<ClientInfo>,
    /// The flow labels of the caller's session so far, sorted.
    pub labels: Vec<String>,
    /// Labels this answer attaches to the session (see [`ToolCall::label`]).
    attached: std::cell::RefCell<Vec<String>>,
}

/// A tool's facts from the upstream's latest `tools/list`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolFacts {
    /// `annotations.title`, else the tool's `title`.
    pub title: Option<String>,
    /// The tool's description.
    pub description: Option<String>,
    /// `annotations.readOnlyHint`.
    pub read_only_hint: Option<bool>,
    /// `annotations.destructiveHint`.
    pub destructive_hint: Option<bool>,
    /// `annotations.idempotentHint`.
    pub idempotent_hint: Option<bool>,
    /// `annotations.openWorldHint`.
    pub open_world_hint: Option<bool>,
    /// Hex SHA-256 of the canonical definition.
    pub fingerprint: String,
    /// The whole definition as JSON text; only in listing questions.
    pub definition: Option<String>,
}

/// The MCP client, as it named itself (self-declared: not a credential).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// `clientInfo.name`.
    pub name: String,
    /// `clientInfo.version`.
    pub version: String,
}

/// Longest flow label, in bytes.
pub const MAX_LABEL_BYTES: usize = 64;
/// Most labels one answer may attach.
pub const MAX_LABELS_PER_ANSWER: usize = 8;

/// True when `label` is a valid flow label: 1-64 bytes of `[a-z0-9._:-]`.
pub fn valid_label(label: &str) -> bool {
    (1..=MAX_LABEL_BYTES).contains(&label.len())
        && label.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b':' | b'-')
        })
}

impl ToolCall {
    /// A call of `server`'s `tool` by the workspace token, with no arguments (a listing question).
    /// Builder methods fill in the rest; meant for tests.
    pub fn new(server: impl Into<String>, tool: impl Into<String>) -> Self {
        ToolCall {
            server: server.into(),
            tool: tool.into(),
            ..ToolCall::default()
        }
    }

    /// Sets the member.
    pub fn with_member(mut self, member: impl Into<String>) -> Self {
        self.member = Some(member.into());
        self
    }

    /// Sets the grants.
    pub fn with_grants<S: Into<String>>(mut self, grants: impl IntoIterator<Item = S>) -> Self {
        self.grants = grants.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the arguments, turning a listing question into a call.
    pub fn with_arguments(mut self, arguments: serde_json::Value) -> Self {
        self.arguments = Some(arguments.to_string());
        self
    }

    /// Sets the session's labels (sorted and deduplicated here, as the host gives them).
    pub fn with_labels<S: Into<String>>(mut self, labels: impl IntoIterator<Item = S>) -> Self {
        self.labels = labels.into_iter().map(Into::into).collect();
        self.labels.sort();
        self.labels.dedup();
        self
    }

    /// Sets the tool's facts.
    pub fn with_facts(mut self, facts: ToolFacts) -> Self {
        self.facts = Some(facts);
        self
    }

    /// Sets the client.
    pub fn with_client(mut self, name: impl Into<String>, version: impl Into<String>) -> Self {
        self.client = Some(ClientInfo {
            name: name.into(),
            version: version.into(),
        });
        self
    }

    /// True when the caller's session carries `label`.
    pub fn has_label(&self, label: &str) -> bool {
        self.labels
            .binary_search_by(|l| l.as_str().cmp(label))
            .is_ok()
    }

    /// Attaches a flow label to the caller's session with this answer: in the call phase it
    /// holds once the call goes ahead, in the result phase once the result was inspected;
    /// ignored in the listing phase. Invalid labels (see [`valid_label`]) and any past
    /// [`MAX_LABELS_PER_ANSWER`] are dropped here, so an answer is never malformed.
    pub fn label(&self, label: impl Into<String>) {
        let label = label.into();
        let mut attached = self.attached.borrow_mut();
        if valid_label(&label)
            && attached.len() < MAX_LABELS_PER_ANSWER
            && !attached.contains(&label)
        {
            attached.push(label);
        }
    }

    /// The labels attached so far by [`ToolCall::label`]; for tests.
    pub fn attached_labels(&self) -> Vec<String> {
        self.attached.borrow().clone()
    }

    /// Takes the attached labels out (the runtime does this after each answer).
    pub fn take_attached_labels(&self) -> Vec<String> {
        std::mem::take(&mut self.attached.borrow_mut())
    }

    /// The tool's description from its facts, if the gateway has one.
    pub fn description(&self) -> Option<&str> {
        self.facts.as_ref()?.description.as_deref()
    }

    /// True when the caller used the workspace token rather than a member token.
    pub fn is_workspace_token(&self) -> bool {
        self.member.is_none()
    }

    /// True when the gateway only asks whether the tool may be listed.
    pub fn is_listing(&self) -> bool {
        self.arguments.is_none()
    }

    /// The arguments parsed as `T`; `None` when listing, `Err` when they do not fit `T`.
    pub fn arguments_as<T: DeserializeOwned>(&self) -> Option<serde_json::Result<T>> {
        self.arguments.as_deref().map(serde_json::from_str)
    }

    /// One top-level argument parsed as `T`; `None` when absent or of another shape.
    pub fn argument<T: DeserializeOwned>(&self, name: &str) -> Option<T> {
        let args: serde_json::Map<String, serde_json::Value> = self.arguments_as()?.ok()?;
        serde_json::from_value(args.get(name)?.clone()).ok()
    }
}

/// A module's verdict on one question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Permit. The chain allows when at least one module allows and none denies.
    Allow,
    /// Refuse, with a stable kebab-case code and a human reason (never echo secrets in it).
    Deny {
        /// Machine code, for example `not-granted`.
        code: String,
        /// Human reason, shown to the client for call-phase denials.
        reason: String,
    },
    /// No opinion.
    Abstain,
}

impl Decision {
    /// Permit.
    pub fn allow() -> Self {
        Decision::Allow
    }
    /// Refuse with a machine `code` and a human `reason`.
    pub fn deny(code: impl Into<String>, reason: impl Into<String>) -> Self {
        Decision::Deny {
            code: code.into(),
            reason: reason.into(),
        }
    }
    /// No opinion.
    pub fn abstain() -> Self {
        Decision::Abstain
    }
    /// True for [`Decision::Deny`].
    pub fn is_deny(&self) -> bool {
        matches!(self, Decision::Deny { .. })
    }
}

/// The phases a module takes part in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phases {
    /// `tools/list` visibility.
    pub list: bool,
    /// `tools/call` before forwarding.
    pub call: bool,
    /// Tool results before they reach the client.
    pub result: bool,
}

impl Phases {
    /// Visibility in `tools/list`.
    pub const LIST: Phases = Phases {
        list: true,
        call: false,
        result: false,
    };
    /// `tools/call` before forwarding.
    pub const CALL: Phases = Phases {
        list: false,
        call: true,
        result: false,
    };
    /// Tool results.
    pub const RESULT: Phases = Phases {
        list: false,
        call: false,
        result: true,
    };
}

impl Phases {
    /// Both sets of phases; usable in `const` items.
    pub const fn union(self, o: Phases) -> Phases {
        Phases {
            list: self.list || o.list,
            call: self.call || o.call,
            result: self.result || o.result,
        }
    }
}

impl BitOr for Phases {
    type Output = Phases;
    fn bitor(self, o: Phases) -> Phases {
        self.union(o)
    }
}

/// A tool result as the upstream returned it (the JSON-RPC `result` object).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolResult {
    /// The JSON text.
    pub json: String,
}

impl ToolResult {
    /// The result as a JSON value.
    pub fn value(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::from_str(&self.json)
    }

    /// The `text` of every text content item, in order.
    pub fn texts(&self) -> Vec<String> {
        let Ok(v) = self.value() else {
            return Vec::new();
        };
        v.get("content")
            .and_then(|c| c.as_array())
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.get("text").and_then(|t| t.as_str()).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Operator settings of a module: deserialized from the module's settings (TOML beside the module,
/// handed over as JSON) and validated once per load. A failure refuses the module.
pub trait Settings: DeserializeOwned + Send + Sync + 'static {
    /// Cross-field checks beyond what deserialization enforces.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Settings of a module that takes none; any field given is an error.
#[derive(Clone, Copy, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoSettings {}

impl Settings for NoSettings {}

/// A policy rule. Implement the phases you need; the others abstain.
pub trait Policy {
    /// The module's operator settings.
    type Settings: Settings;
    /// The phases the host calls this module for.
    const PHASES: Phases = Phases::CALL;
    /// A prefilter for the call phase: when set, the host runs [`Policy::call`] only for calls
    /// whose arguments' JSON text contains at least one of these strings (byte for byte); every
    /// other call is taken as an abstain without running the module. Declare it only when
    /// `call` abstains on every text containing none of them, escapes included (`\u` spells
    /// any character). `None` (the default): every call is asked.
    const CALL_TRIGGERS: Option<&'static [&'static str]> = None;

    /// May the principal see this tool in `tools/list`? (`call.arguments` is `None`.)
    fn list(call: &ToolCall, settings: &Self::Settings) -> Decision {
        let _ = (call, settings);
        Decision::Abstain
    }

    /// May the principal call this tool with these arguments?
    fn call(call: &ToolCall, settings: &Self::Settings) -> Decision {
        let _ = (call, settings);
        Decision::Abstain
    }

    /// May this result reach the client? A deny replaces it with an error.
    fn result(call: &ToolCall, result: &ToolResult, settings: &Self::Settings) -> Decision {
        let _ = (call, result, settings);
        Decision::Abstain
    }
}

/// Parses and validates settings from JSON text exactly as the host hands them over at load.
/// Use it in tests to check that a settings file is accepted or refused.
pub fn parse_settings<S: Settings>(json: &str) -> Result<S, String> {
    let settings: S = serde_json::from_str(json).map_err(|e| format!("invalid settings: {e}"))?;
    settings.validate()?;
    Ok(settings)
}

/// Exports a [`Policy`] as the module's implementation of the `mcpgw:policy` world.
/// Use it once, at the root of the plugin crate: `policy_sdk::export_policy!(MyRule);`.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        // Only Wasm builds export the world: natively (unit tests, benchmarks linking several
        // plugins into one binary) the rule is a plain Rust type.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            static SETTINGS: ::std::sync::OnceLock<<$policy as $crate::Policy>::Settings> =
                ::std::sync::OnceLock::new();

            struct Export;

            impl $crate::bindings::Guest for Export {
                fn metadata() -> $crate::rt::Metadata {
                    $crate::rt::metadata::<$policy>(
                        env!("CARGO_PKG_NAME"),
                        env!("CARGO_PKG_VERSION"),
                    )
                }
                fn configure(settings: String) -> Result<(), String> {
                    $crate::rt::configure::<$policy>(&SETTINGS, &settings)
                }
                fn decide(call: $crate::rt::WitToolCall) -> $crate::rt::WitVerdict {
                    $crate::rt::decide::<$policy>(&SETTINGS, call)
                }
                fn inspect_result(
                    call: $crate::rt::WitToolCall,
                    result: String,
                ) -> $crate::rt::WitVerdict {
                    $crate::rt::inspect_result::<$policy>(&SETTINGS, call, result)
                }
            }

    $crate::bindings::__export_policy_world!(Export with_types_in $crate::bindings);
        };
    };
}

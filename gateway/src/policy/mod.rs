//! Policy: every decision about a `tools/call`, and about which tools a member may see in
//! `tools/list`, is made by a chain of WebAssembly components implementing `wit/policy.wit`.
//!
//! - [`host`]: the wasmtime engine, module loading (compile, type-check, configure, trial), and
//!   bounded evaluation (epoch deadline, memory cap, no capabilities).
//! - [`PolicyChain`]: the built-in allowlist first, then the directory's modules in file-name order.
//!   First deny wins; a fault denies; all abstain denies.
//! - [`reload`]: scanning the policy directory and watching it; the chain is swapped atomically, so
//!   calls in flight finish on the chain they started with.
//!
//! See `docs/architecture.md` for the lifecycle.

pub mod cache;
pub mod host;
pub mod reload;

pub use host::{Fault, InstanceStrategy, Limits, Module, PolicyEngine};
pub use reload::{PolicyConfig, PolicySet, Rejected};

use host::wit;
use serde::Serialize;
use std::sync::Arc;

/// The source name of the built-in allowlist in a chain.
pub const BUILTIN_SOURCE: &str = "built-in";

/// The built-in allowlist component, built from `plugins/allowlist` by `build.rs`.
pub static BUILTIN_ALLOWLIST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/allowlist.wasm"));
/// The secrets-guard component, built from `plugins/secrets-guard` by `build.rs`; shipped for `mcpgw dev`.
pub static SECRETS_GUARD: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/secrets_guard.wasm"));

/// Errors of loading or reloading policy modules.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The wasmtime engine could not be set up.
    #[error("policy engine: {0}")]
    Engine(String),
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(String, String),
    /// The bytes are not a binary WebAssembly component.
    #[error("not a component: {0}")]
    NotAComponent(String),
    /// wasmtime refused to compile the component.
    #[error("compile failed: {0}")]
    Compile(String),
    /// The component imports something the host does not grant.
    #[error(
        "imports {0}, which the policy host does not grant (modules get no filesystem, network or environment)"
    )]
    ForbiddenImport(String),
    /// The component does not implement the `mcpgw:policy/policy` world.
    #[error("does not implement mcpgw:policy/policy@0.3.0: {0}")]
    WrongWorld(String),
    /// The settings file is not valid TOML.
    #[error("settings: {0}")]
    Settings(String),
    /// The module refused its settings, failed its metadata or its trial evaluation.
    #[error("{0}")]
    Rejected(String),
    /// The policy directory cannot be watched.
    #[error("watch {0}: {1}")]
    Watch(String, String),
}

/// The phases a module takes part in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Phases {
    /// `tools/list` visibility.
    pub list: bool,
    /// `tools/call` before forwarding.
    pub call: bool,
    /// Tool results before they reach the client.
    pub result: bool,
}

/// Who is asking: resolved from the bearer token by the identity layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Principal {
    /// Workspace of the token.
    pub workspace: String,
    /// Member id; `None` for the workspace token.
    pub member: Option<String>,
    /// The member's grants (`server:tool` patterns).
    pub grants: Vec<String>,
}

/// One question for the chain.
#[derive(Clone, Copy, Debug)]
pub struct Question<'a> {
    /// Gateway request id.
    pub request_id: &'a str,
    /// Who asks.
    pub principal: &'a Principal,
    /// Upstream server name.
    pub server: &'a str,
    /// Tool name.
    pub tool: &'a str,
    /// Call arguments (JSON text); `None` for a listing question.
    pub arguments: Option<&'a str>,
    /// The tool's facts from the upstream's listing, when the gateway has them.
    pub facts: Option<&'a ToolFacts>,
    /// The client, as it named itself.
    pub client: Option<&'a ClientInfo>,
    /// The flow labels of the caller's session so far, sorted.
    pub labels: &'a [String],
}

/// What the upstream's listing says about a tool (see `crate::tools`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolFacts {
    /// `annotations.title`, else `title`.
    pub title: Option<String>,
    /// The description.
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
    /// The canonical definition (JSON text).
    pub definition: String,
}

/// The MCP client as it named itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// `clientInfo.name`.
    pub name: String,
    /// `clientInfo.version`.
    pub version: String,
}

/// A refusal, attributed to the module that made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Denial {
    /// Name of the deciding module (`chain` when every module abstained).
    pub module: String,
    /// Hex SHA-256 of the deciding module (empty for `chain`).
    pub digest: String,
    /// Machine code: the module's own, or `policy-timeout` / `policy-trap` / `policy-invalid-output`
    /// when the module failed, or `no-module-allowed`.
    pub code: String,
    /// Human reason.
    pub reason: String,
    /// True when the module failed rather than decided.
    pub fault: bool,
}

/// What the chain concluded, before enforcement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// At least one module allowed and none denied (for results: none denied).
    Allow,
    /// Refused.
    Deny(Denial),
}

/// What happens to the request, after the workspace's enforcement switch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Proceed.
    Allowed,
    /// Refused.
    Denied(Denial),
    /// The chain refused but enforcement is off: proceed, and record the would-deny.
    WouldDeny(Denial),
}

impl Outcome {
    /// Applies the enforcement switch to a verdict.
    pub fn enforce(verdict: Verdict, enforced: bool) -> Outcome {
        match verdict {
            Verdict::Allow => Outcome::Allowed,
            Verdict::Deny(d) if enforced => Outcome::Denied(d),
            Verdict::Deny(d) => Outcome::WouldDeny(d),
        }
    }

    /// True when the request may go on.
    pub fn proceeds(&self) -> bool {
        !matches!(self, Outcome::Denied(_))
    }
}

/// The live, immutable chain of modules. Swapped whole on reload.
pub struct PolicyChain {
    modules: Vec<Arc<Module>>,
    rejected: Vec<Rejected>,
    /// Listing verdicts this chain has given (see [`cache`]).
    listings: cache::ListingCache,
    /// Whether listing verdicts are remembered: only when every listing-phase module is the
    /// built-in allowlist, whose listing answer is a function of the question by construction.
    /// A module from the policy directory may keep state or read the request id, so a chain with
    /// one asks it every time.
    remember_listings: bool,
}

impl PolicyChain {
    /// A chain of these modules, in order.
    pub fn new(modules: Vec<Arc<Module>>, rejected: Vec<Rejected>) -> Self {
        let remember_listings = modules
            .iter()
            .filter(|m| m.phases.list)
            .all(|m| m.source == BUILTIN_SOURCE);
        PolicyChain {
            modules,
            rejected,
            listings: cache::ListingCache::default(),
            remember_listings,
        }
    }

    /// The modules, in evaluation order.
    pub fn modules(&self) -> &[Arc<Module>] {
        &self.modules
    }

    /// Files that failed their last load and have no earlier good version in the chain.
    pub fn rejected(&self) -> &[Rejected] {
        &self.rejected
    }

    /// The listing verdicts this chain remembers.
    pub fn listing_cache(&self) -> &cache::ListingCache {
        &self.listings
    }

    /// True when some module wants to inspect tool results (so the proxy must buffer them).
    pub fn inspects_results(&self) -> bool {
        self.modules.iter().any(|m| m.phases.result)
    }

    /// Decides a listing (`arguments: None`) or a call. A listing runs the listing-phase modules
    /// in order: the first deny or fault wins; otherwise allow if any module allowed; all
    /// abstaining denies. A call is first its listing (a tool the caller may not see cannot be
    /// called), then [`Self::veto`] over the call-phase modules. When the listing phase is the
    /// built-in allowlist alone, the listing verdict comes from the chain's [`cache`] when this
    /// question (request id aside) was answered before.
    pub fn decide(&self, q: &Question<'_>) -> Verdict {
        let listing = Question {
            arguments: None,
            ..*q
        };
        let verdict = if !self.remember_listings {
            self.evaluate_listing(&listing)
        } else if let Some(verdict) = self.listings.get(&listing) {
            verdict
        } else {
            let verdict = self.evaluate_listing(&listing);
            self.listings.put(&listing, &verdict);
            verdict
        };
        match (verdict, q.arguments) {
            (Verdict::Allow, Some(_)) => self.veto(q),
            (verdict, _) => verdict,
        }
    }

    /// A listing question asked for a preview (the console's allowlist editor): evaluated by
    /// the listing-phase modules as [`Self::decide`] would, but never read from nor written to
    /// the listing cache, so drafts do not crowd out the verdicts live requests use.
    pub fn preview_listing(&self, q: &Question<'_>) -> Verdict {
        self.evaluate_listing(&Question {
            arguments: None,
            ..*q
        })
    }

    /// Runs the listing-phase modules on a listing question.
    fn evaluate_listing(&self, listing: &Question<'_>) -> Verdict {
        let mut allowed = false;
        for m in self.modules.iter().filter(|m| m.phases.list) {
            let answer = m.decide(listing).result;
            if let Some(denial) = m.denial(&answer) {
                return Verdict::Deny(denial);
            }
            allowed |= matches!(answer, Ok(wit::Decision::Allow));
        }
        if allowed {
            return Verdict::Allow;
        }
        Verdict::Deny(Denial {
            module: "chain".into(),
            digest: String::new(),
            code: "no-module-allowed".into(),
            reason: format!(
                "no policy module allows {}:{}",
                listing.server, listing.tool
            ),
            fault: false,
        })
    }

    /// The call phase of a `tools/call` whose listing the chain has already allowed:
    /// call-phase modules run in order and the first deny or fault wins; otherwise the call is
    /// allowed, on the strength of the listing allow (no call-phase module needs to allow, so a
    /// module whose call answer is its listing answer, like the allowlist, takes part in the
    /// listing phase only and costs one evaluation per call, not two).
    pub fn veto(&self, q: &Question<'_>) -> Verdict {
        self.veto_labelled(q, &mut Vec::new())
    }

    /// [`Self::veto`], collecting into `labels` the flow labels the modules that ran attached
    /// (for the caller to apply if the call goes ahead).
    pub fn veto_labelled(&self, q: &Question<'_>, labels: &mut Vec<String>) -> Verdict {
        for m in self.modules.iter().filter(|m| m.phases.call) {
            if !m.wants_call(q.arguments) {
                m.stats
                    .skipped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            let answer = m.decide(q);
            // The denying module's labels count too: with enforcement off the call goes ahead.
            labels.extend(answer.labels);
            if let Some(denial) = m.denial(&answer.result) {
                return Verdict::Deny(denial);
            }
        }
        Verdict::Allow
    }

    /// Runs the result phase: the first deny or fault blocks the result; otherwise it passes.
    pub fn inspect_result(&self, q: &Question<'_>, result_json: &str) -> Verdict {
        self.inspect_result_labelled(q, result_json, &mut Vec::new())
    }

    /// [`Self::inspect_result`], collecting the labels every module that ran attached, the
    /// denying one's included (a result a module refused was still read by the gateway, and
    /// what labelled it still says what the session met).
    pub fn inspect_result_labelled(
        &self,
        q: &Question<'_>,
        result_json: &str,
        labels: &mut Vec<String>,
    ) -> Verdict {
        for m in self.modules.iter().filter(|m| m.phases.result) {
            let answer = m.inspect_result(q, result_json);
            labels.extend(answer.labels);
            if let Some(denial) = m.denial(&answer.result) {
                return Verdict::Deny(denial);
            }
        }
        Verdict::Allow
    }
}

/// The observable state of one module, for `status()` and the admin API.
#[derive(Clone, Debug, Serialize)]
pub struct ModuleStatus {
    /// Name from the module's metadata.
    pub name: String,
    /// Version from the module's metadata.
    pub version: String,
    /// `built-in` or the file name in the policy directory.
    pub source: String,
    /// Hex SHA-256 of the component.
    pub digest: String,
    /// Phases it takes part in.
    pub phases: Phases,
    /// When this version went live, in Unix milliseconds.
    pub loaded_at_ms: u64,
    /// Evaluations answered.
    pub decisions: u64,
    /// Denials, faults included.
    pub denies: u64,
    /// Faults.
    pub errors: u64,
    /// Call-phase questions not asked: the arguments held none of its call triggers.
    pub skipped: u64,
    /// Last fault, or last failed reload of its file (the previous version kept serving).
    pub last_error: Option<String>,
}

impl ModuleStatus {
    fn of(m: &Module) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        ModuleStatus {
            name: m.name.to_string(),
            version: m.version.clone(),
            source: m.source.clone(),
            digest: m.digest.clone(),
            phases: m.phases,
            loaded_at_ms: m
                .loaded_at
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            decisions: m.stats.decisions.load(Relaxed),
            denies: m.stats.denies.load(Relaxed),
            errors: m.stats.errors.load(Relaxed),
            skipped: m.stats.skipped.load(Relaxed),
            last_error: host::lock(&m.stats.last_error).clone(),
        }
    }
}

/// The chain's state: live modules in order, and files rejected with no good version live.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// Live modules in evaluation order.
    pub modules: Vec<ModuleStatus>,
    /// Files refused at their last load that have no earlier good version live.
    pub rejected: Vec<Rejected>,
}

impl PolicyChain {
    /// Snapshot of every module's counters.
    pub fn status(&self) -> Status {
        Status {
            modules: self.modules.iter().map(|m| ModuleStatus::of(m)).collect(),
            rejected: self.rejected.clone(),
        }
    }
}

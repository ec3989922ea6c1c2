//! Glue between the WIT bindings and [`Policy`]; used by [`export_policy!`](crate::export_policy).
#![allow(missing_docs)]

use crate::bindings::mcpgw::policy::types as wit;
use crate::{ClientInfo, Decision, Policy, ToolCall, ToolFacts, ToolResult};
use std::sync::OnceLock;

pub use wit::{Metadata, ToolCall as WitToolCall, Verdict as WitVerdict};

pub fn metadata<P: Policy>(name: &str, version: &str) -> Metadata {
    let mut phases = wit::Phases::empty();
    phases.set(wit::Phases::LIST, P::PHASES.list);
    phases.set(wit::Phases::CALL, P::PHASES.call);
    phases.set(wit::Phases::RESULT, P::PHASES.result);
    Metadata {
        name: name.to_owned(),
        version: version.to_owned(),
        phases,
        call_triggers: P::CALL_TRIGGERS.map(|t| t.iter().map(|s| (*s).to_owned()).collect()),
    }
}

pub fn configure<P: Policy>(cell: &OnceLock<P::Settings>, json: &str) -> Result<(), String> {
    let settings = crate::parse_settings::<P::Settings>(json)?;
    cell.set(settings)
        .map_err(|_| "module already configured".to_owned())
}

fn from_wit(call: WitToolCall) -> ToolCall {
    let mut out = ToolCall {
        request_id: call.request_id,
        workspace: call.principal.workspace,
        member: call.principal.member,
        grants: call.principal.grants,
        server: call.server,
        tool: call.tool,
        arguments: call.arguments,
        facts: call.facts.map(|f| ToolFacts {
            title: f.title,
            description: f.description,
            read_only_hint: f.read_only_hint,
            destructive_hint: f.destructive_hint,
            idempotent_hint: f.idempotent_hint,
            open_world_hint: f.open_world_hint,
            fingerprint: f.fingerprint,
            definition: f.definition,
        }),
        client: call.client.map(|c| ClientInfo {
            name: c.name,
            version: c.version,
        }),
        ..ToolCall::default()
    };
    // The host sends them sorted; `has_label` relies on it.
    out.labels = call.labels;
    out.labels.sort();
    out
}

fn to_wit(decision: Decision, labels: Vec<String>) -> WitVerdict {
    let decision = match decision {
        Decision::Allow => wit::Decision::Allow,
        Decision::Abstain => wit::Decision::Abstain,
        Decision::Deny { code, reason } => wit::Decision::Deny(wit::Denial { code, reason }),
    };
    WitVerdict { decision, labels }
}

fn unconfigured() -> WitVerdict {
    to_wit(
        Decision::deny("not-configured", "policy module called before configure"),
        Vec::new(),
    )
}

pub fn decide<P: Policy>(cell: &OnceLock<P::Settings>, call: WitToolCall) -> WitVerdict {
    let Some(settings) = cell.get() else {
        return unconfigured();
    };
    let call = from_wit(call);
    let decision = if call.is_listing() {
        P::list(&call, settings)
    } else {
        P::call(&call, settings)
    };
    to_wit(decision, call.take_attached_labels())
}

pub fn inspect_result<P: Policy>(
    cell: &OnceLock<P::Settings>,
    call: WitToolCall,
    json: String,
) -> WitVerdict {
    let Some(settings) = cell.get() else {
        return unconfigured();
    };
    let call = from_wit(call);
    let decision = P::result(&call, &ToolResult { json }, settings);
    to_wit(decision, call.take_attached_labels())
}

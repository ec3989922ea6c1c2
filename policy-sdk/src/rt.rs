//! Glue between the WIT bindings and [`Policy`]; used by [`export_policy!`](crate::export_policy).
#![allow(missing_docs)]

use crate::bindings::mcpgw::policy::types as wit;
use crate::{Decision, Policy, ToolCall, ToolResult};
use std::sync::OnceLock;

pub use wit::{Decision as WitDecision, Metadata, ToolCall as WitToolCall};

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
    ToolCall {
        request_id: call.request_id,
        workspace: call.principal.workspace,
        member: call.principal.member,
        grants: call.principal.grants,
        server: call.server,
        tool: call.tool,
        arguments: call.arguments,
    }
}

fn to_wit(decision: Decision) -> WitDecision {
    match decision {
        Decision::Allow => WitDecision::Allow,
        Decision::Abstain => WitDecision::Abstain,
        Decision::Deny { code, reason } => WitDecision::Deny(wit::Denial { code, reason }),
    }
}

fn unconfigured() -> WitDecision {
    WitDecision::Deny(wit::Denial {
        code: "not-configured".to_owned(),
        reason: "policy module called before configure".to_owned(),
    })
}

pub fn decide<P: Policy>(cell: &OnceLock<P::Settings>, call: WitToolCall) -> WitDecision {
    let Some(settings) = cell.get() else {
        return unconfigured();
    };
    let call = from_wit(call);
    to_wit(if call.is_listing() {
        P::list(&call, settings)
    } else {
        P::call(&call, settings)
    })
}

pub fn inspect_result<P: Policy>(
    cell: &OnceLock<P::Settings>,
    call: WitToolCall,
    json: String,
) -> WitDecision {
    let Some(settings) = cell.get() else {
        return unconfigured();
    };
    to_wit(P::result(&from_wit(call), &ToolResult { json }, settings))
}

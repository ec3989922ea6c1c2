//! The built-in policy: a member may see and call a tool iff one of their grants matches it.
//!
//! Grants are `server:tool` patterns; `*` matches any run of characters on either side (`db:*`,
//! `*:search`, `ci:deploy`, `ci:deploy-*`). No grants, nothing. The workspace token is system access
//! (every tool) unless the settings say `workspace_token = "grants"`.
use policy_sdk::{Decision, Phases, Policy, Settings, ToolCall, pattern::grant_matches};
use serde::Deserialize;

/// Operator settings (`allowlist.toml`, or `[policy.allowlist]` in the gateway config).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllowlistSettings {
    /// What the workspace token may use: every tool (`all`, the default) or only what its grants say.
    pub workspace_token: WorkspaceToken,
}

/// Reach of the workspace token.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum WorkspaceToken {
    /// System access: every tool of every server.
    #[default]
    All,
    /// Only what the grants handed to the policy say, like a member.
    Grants,
}

impl Settings for AllowlistSettings {}

/// The allowlist rule.
pub struct Allowlist;

impl Policy for Allowlist {
    type Settings = AllowlistSettings;
    /// Listing only: a call's answer is the listing answer, and the gateway lets no call through
    /// without a listing allow, so asking again per call would cost a second evaluation for
    /// nothing. `call` still answers, for `mcpgw policy run` and unit tests.
    const PHASES: Phases = Phases::LIST;

    fn list(call: &ToolCall, settings: &AllowlistSettings) -> Decision {
        decide(call, settings)
    }

    fn call(call: &ToolCall, settings: &AllowlistSettings) -> Decision {
        decide(call, settings)
    }
}

fn decide(call: &ToolCall, settings: &AllowlistSettings) -> Decision {
    if call.is_workspace_token() && settings.workspace_token == WorkspaceToken::All {
        return Decision::allow();
    }
    if call
        .grants
        .iter()
        .any(|g| grant_matches(g, &call.server, &call.tool))
    {
        Decision::allow()
    } else {
        Decision::deny(
            "not-granted",
            format!("no grant matches {}:{}", call.server, call.tool),
        )
    }
}

policy_sdk::export_policy!(Allowlist);

#[cfg(test)]
mod tests {
    use super::*;
    use policy_sdk::parse_settings;

    #[test]
    fn grant_pattern_table() {
        let table: &[(&str, &str, &str, bool)] = &[
            ("db:*", "db", "query", true),
            ("db:*", "db", "", true),
            ("db:*", "dbx", "query", false),
            ("*:search", "web", "search", true),
            ("*:search", "web", "search2", false),
            ("ci:deploy", "ci", "deploy", true),
            ("ci:deploy", "ci", "deploy-prod", false),
            ("ci:deploy", "cd", "deploy", false),
            ("ci:deploy-*", "ci", "deploy-prod", true),
            ("ci:*-prod", "ci", "deploy-prod", true),
            ("ci:*-prod", "ci", "deploy-staging", false),
            ("*:*", "any", "thing", true),
            ("*", "any", "thing", false),
            ("db", "db", "query", false),
            ("", "db", "query", false),
            ("db:", "db", "query", false),
            ("db:q*y", "db", "query", true),
            ("db:q*y", "db", "queryx", false),
            ("DB:query", "db", "query", false),
            (
                "db:a*a*a*a*b",
                "db",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                false,
            ),
        ];
        for &(grant, server, tool, want) in table {
            assert_eq!(
                grant_matches(grant, server, tool),
                want,
                "{grant} vs {server}:{tool}"
            );
        }
    }

    fn member(grants: &[&str]) -> ToolCall {
        ToolCall::new("db", "query")
            .with_member("alice")
            .with_grants(grants.iter().copied())
    }

    #[test]
    fn member_needs_a_matching_grant() {
        let s = AllowlistSettings::default();
        assert_eq!(Allowlist::list(&member(&["db:*"]), &s), Decision::allow());
        assert!(Allowlist::list(&member(&["ci:*"]), &s).is_deny());
        assert!(Allowlist::list(&member(&[]), &s).is_deny());
        let call = member(&["db:query"]).with_arguments(serde_json::json!({"sql": "select 1"}));
        assert_eq!(Allowlist::call(&call, &s), Decision::allow());
    }

    #[test]
    fn workspace_token_is_system_access_unless_settings_say_grants() {
        let all = parse_settings::<AllowlistSettings>("{}").unwrap();
        let grants =
            parse_settings::<AllowlistSettings>(r#"{"workspace_token":"grants"}"#).unwrap();
        let system = ToolCall::new("ci", "deploy");
        assert_eq!(Allowlist::call(&system, &all), Decision::allow());
        assert!(Allowlist::call(&system, &grants).is_deny());
        assert_eq!(
            Allowlist::call(&system.with_grants(["ci:*"]), &grants),
            Decision::allow()
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(parse_settings::<AllowlistSettings>(r#"{"workspace_token":"some"}"#).is_err());
        assert!(parse_settings::<AllowlistSettings>(r#"{"typo":1}"#).is_err());
    }
}

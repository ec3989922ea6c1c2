//! The worked example of `policy-sdk/README.md`: refuse query calls that ask for too many rows.
use policy_sdk::{Decision, Deserialize, Policy, Settings, ToolCall};

#[derive(Deserialize)]
#[serde(crate = "policy_sdk::serde", deny_unknown_fields)]
pub struct RowLimitSettings {
    /// Largest `limit` argument allowed.
    pub max_rows: u64,
}

impl Settings for RowLimitSettings {
    fn validate(&self) -> Result<(), String> {
        if self.max_rows == 0 {
            Err("max_rows must be at least 1".into())
        } else {
            Ok(())
        }
    }
}

pub struct RowLimit;

impl Policy for RowLimit {
    type Settings = RowLimitSettings;

    fn call(call: &ToolCall, settings: &RowLimitSettings) -> Decision {
        match call.argument::<u64>("limit") {
            Some(n) if n > settings.max_rows => Decision::deny(
                "too-many-rows",
                format!(
                    "limit {n} is over {}; ask for fewer rows",
                    settings.max_rows
                ),
            ),
            _ => Decision::abstain(),
        }
    }
}

policy_sdk::export_policy!(RowLimit);

#[cfg(test)]
mod tests {
    use super::*;
    use policy_sdk::{parse_settings, serde_json::json};

    #[test]
    fn caps_the_limit_argument() {
        let s: RowLimitSettings = parse_settings(r#"{"max_rows": 100}"#).unwrap();
        let call = |args| {
            ToolCall::new("db", "query")
                .with_member("alice")
                .with_arguments(args)
        };
        assert!(RowLimit::call(&call(json!({"sql": "select 1", "limit": 1000})), &s).is_deny());
        assert_eq!(
            RowLimit::call(&call(json!({"sql": "select 1", "limit": 10})), &s),
            Decision::abstain()
        );
        assert_eq!(
            RowLimit::call(&call(json!({"sql": "select 1"})), &s),
            Decision::abstain()
        );
        assert!(parse_settings::<RowLimitSettings>(r#"{"max_rows": 0}"#).is_err());
        assert!(
            parse_settings::<RowLimitSettings>("{}").is_err(),
            "max_rows is required"
        );
    }
}

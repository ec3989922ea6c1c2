//! A workspace's identity provider: the OIDC issuer whose access tokens (JWTs) the gateway accepts
//! as member credentials, beside its own `mcpgw_` tokens. One per workspace; the settings are
//! stored as JSON and checked field by field before anything is stored. Validating tokens is
//! `crate::oidc`'s job.

use super::{Db, Error, Result, Store, now_ms, validate_name, with_db};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Longest claim name, group name, scope or audience taken.
const MAX_FIELD: usize = 256;
/// Most role-map entries and required scopes.
const MAX_ENTRIES: usize = 256;

/// A workspace's identity-provider settings (`mcpgw idp set`, `PUT /v1/workspaces/{ws}/idp`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IdpConfig {
    /// The issuer URL (`https://`), exactly as its tokens' `iss` and its discovery document say.
    pub issuer: String,
    /// What the tokens' `aud` must contain: the gateway's resource URL by default (RFC 8707).
    pub audience: String,
    /// The claim whose value is the member's name (default `sub`: always present and never
    /// reassigned; `email` reads better but can move to another person).
    #[serde(default = "default_member_claim")]
    pub member_claim: String,
    /// The claim listing the caller's groups (a string array, or one string), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_claim: Option<String>,
    /// Group → role: a member in the group has the role's grants while their token says so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub role_map: Vec<RoleMapping>,
    /// Create a member the first time a valid token names one (otherwise unknown members are
    /// refused).
    #[serde(default)]
    pub auto_create: bool,
    /// Scopes every token must carry (`scope` or `scp`); one missing is 403 `insufficient_scope`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// A PEM file of CA certificates to trust for the issuer instead of the platform's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// One `GROUP=ROLE` entry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RoleMapping {
    /// The group's name as the token lists it.
    pub group: String,
    /// The workspace role it gives.
    pub role: String,
}

fn default_member_claim() -> String {
    "sub".into()
}

impl RoleMapping {
    /// Parses `GROUP=ROLE`.
    pub fn parse(spec: &str) -> Result<RoleMapping> {
        match spec.rsplit_once('=') {
            Some((group, role)) if !group.is_empty() && !role.is_empty() => Ok(RoleMapping {
                group: group.to_owned(),
                role: role.to_owned(),
            }),
            _ => Err(Error::Invalid(format!(
                "role map {spec:?}: give GROUP=ROLE"
            ))),
        }
    }
}

fn claim_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{what}: invalid claim name {name:?}: use 1-64 of [A-Za-z0-9_.:/-]"
        )))
    }
}

impl IdpConfig {
    /// Checks every field; messages name the field.
    pub fn validate(&self) -> Result<()> {
        let url: http::Uri = self
            .issuer
            .parse()
            .map_err(|_| Error::Invalid(format!("issuer: not a URL: {:?}", self.issuer)))?;
        if url.scheme_str() != Some("https") || url.host().is_none() {
            return Err(Error::Invalid(
                "issuer: must be an https:// URL (tokens are only as good as the keys fetched from it)"
                    .into(),
            ));
        }
        if url.query().is_some() || self.issuer.contains('#') {
            return Err(Error::Invalid(
                "issuer: no query or fragment allowed".into(),
            ));
        }
        if self.audience.is_empty() || self.audience.len() > MAX_FIELD {
            return Err(Error::Invalid(format!(
                "audience: 1-{MAX_FIELD} characters"
            )));
        }
        claim_name("member_claim", &self.member_claim)?;
        if let Some(g) = &self.groups_claim {
            claim_name("groups_claim", g)?;
        }
        if self.role_map.len() > MAX_ENTRIES || self.scopes.len() > MAX_ENTRIES {
            return Err(Error::Invalid(format!(
                "role_map and scopes: at most {MAX_ENTRIES} entries each"
            )));
        }
        for m in &self.role_map {
            if m.group.is_empty()
                || m.group.len() > MAX_FIELD
                || m.group.chars().any(char::is_control)
            {
                return Err(Error::Invalid(format!(
                    "role_map: invalid group {:?}",
                    m.group
                )));
            }
            validate_name("role", &m.role)?;
        }
        if !self.role_map.is_empty() && self.groups_claim.is_none() {
            return Err(Error::Invalid(
                "role_map: needs groups_claim (the claim the groups are read from)".into(),
            ));
        }
        for s in &self.scopes {
            let ok = !s.is_empty()
                && s.len() <= MAX_FIELD
                && s.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
            if !ok {
                return Err(Error::Invalid(format!("scopes: invalid scope {s:?}")));
            }
        }
        if let Some(f) = &self.ca_file
            && !f.is_absolute()
        {
            return Err(Error::Invalid(format!(
                "ca_file: must be an absolute path, not {}",
                f.display()
            )));
        }
        Ok(())
    }
}

impl Store {
    /// Sets (or replaces) a workspace's identity provider.
    pub async fn idp_set(&self, workspace: &str, config: &IdpConfig) -> Result<()> {
        config.validate()?;
        let ws = self.workspace_id(workspace).await?;
        // A token names its issuer and audience, nothing else: two workspaces with the same
        // pair could not tell whose member a token is for.
        let others: Vec<(String, String)> = with_db!(&self.db, p => sqlx::query_as("SELECT w.name, i.config FROM idps i JOIN workspaces w ON w.id = i.workspace_id WHERE i.workspace_id <> $1")
            .bind(ws).fetch_all(p).await?);
        for (other, json) in others {
            if let Ok(c) = serde_json::from_str::<IdpConfig>(&json)
                && c.issuer == config.issuer
                && c.audience == config.audience
            {
                return Err(Error::Invalid(format!(
                    "workspace {other:?} already accepts {} for audience {}: give this workspace an audience of its own",
                    config.issuer, config.audience
                )));
            }
        }
        let json = serde_json::to_string(config).map_err(|e| Error::Invalid(e.to_string()))?;
        with_db!(&self.db, p => sqlx::query("INSERT INTO idps (workspace_id, config, created_ms) VALUES ($1, $2, $3) \
                ON CONFLICT (workspace_id) DO UPDATE SET config = excluded.config")
            .bind(ws).bind(&json).bind(now_ms()).execute(p).await?.rows_affected());
        Ok(())
    }

    /// A workspace's identity provider, if it has one.
    pub async fn idp_get(&self, workspace: &str) -> Result<Option<IdpConfig>> {
        let ws = self.workspace_id(workspace).await?;
        let json: Option<String> = with_db!(&self.db, p => sqlx::query_scalar("SELECT config FROM idps WHERE workspace_id = $1")
            .bind(ws).fetch_optional(p).await?);
        json.map(|j| {
            serde_json::from_str(&j)
                .map_err(|e| Error::Invalid(format!("stored idp settings unreadable: {e}")))
        })
        .transpose()
    }

    /// Removes a workspace's identity provider: its tokens stop working.
    pub async fn idp_remove(&self, workspace: &str) -> Result<()> {
        let ws = self.workspace_id(workspace).await?;
        let done = with_db!(&self.db, p => sqlx::query("DELETE FROM idps WHERE workspace_id = $1")
            .bind(ws).execute(p).await?.rows_affected());
        if done == 0 {
            return Err(Error::NotFound(
                "identity provider of",
                workspace.to_owned(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> IdpConfig {
        IdpConfig {
            issuer: "https://idp.example/realms/acme".into(),
            audience: "https://gw.example/mcp".into(),
            member_claim: "email".into(),
            groups_claim: Some("groups".into()),
            role_map: vec![RoleMapping::parse("eng=db-readers").unwrap()],
            auto_create: false,
            scopes: vec!["mcp".into()],
            ca_file: None,
        }
    }

    #[test]
    fn settings_are_checked_field_by_field() {
        config().validate().unwrap();
        type Change = fn(&mut IdpConfig);
        let bad: [(Change, &str); 8] = [
            (|c| c.issuer = "http://idp.example".into(), "https"),
            (|c| c.issuer = "https://idp.example/?x=1".into(), "query"),
            (|c| c.audience = String::new(), "audience"),
            (|c| c.member_claim = "a b".into(), "member_claim"),
            (|c| c.groups_claim = None, "needs groups_claim"),
            (|c| c.role_map[0].role = "bad role".into(), "role"),
            (|c| c.scopes = vec!["a\"b".into()], "scope"),
            (|c| c.ca_file = Some("relative.pem".into()), "absolute"),
        ];
        for (change, want) in bad {
            let mut c = config();
            change(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e} should say {want}");
        }
        assert!(RoleMapping::parse("no-equals").is_err());
        assert_eq!(
            RoleMapping::parse("cn=eng,ou=x=readers").unwrap().role,
            "readers"
        );
    }

    #[test]
    fn stored_json_defaults_the_member_claim_and_refuses_unknown_fields() {
        let c: IdpConfig =
            serde_json::from_str(r#"{"issuer":"https://i.example","audience":"a"}"#).unwrap();
        assert_eq!(c.member_claim, "sub");
        assert!(
            serde_json::from_str::<IdpConfig>(r#"{"issuer":"https://i","audience":"a","x":1}"#)
                .is_err()
        );
    }
}

//! Roles (named grant sets per workspace, assigned to members) and member disable.
//!
//! A member's effective grants are their own plus those of every role assigned to them (and, for
//! members signed in through the workspace's identity provider, the roles their groups map to);
//! the snapshot in `identity.rs` computes them. A disabled member keeps everything, but each of
//! their credentials is refused until they are enabled again.

use super::{Db, Error, Result, Store, duplicate_or, now_ms, validate_name, with_db};
use serde::Serialize;

/// A role as listed.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Role {
    /// Role name, unique in its workspace.
    pub name: String,
    /// Its `server:tool` patterns, sorted.
    pub patterns: Vec<String>,
    /// The members it is assigned to, sorted.
    pub members: Vec<String>,
    /// Creation time, Unix ms.
    pub created_ms: i64,
}

/// (id, name, created ms)
type RoleRow = (i64, String, i64);
/// (role id, pattern or member name)
type Pair = (i64, String);

impl Store {
    pub(super) async fn role_id(&self, ws: i64, name: &str) -> Result<i64> {
        let id: Option<i64> = with_db!(&self.db, p => sqlx::query_scalar("SELECT id FROM roles WHERE workspace_id = $1 AND name = $2")
            .bind(ws).bind(name).fetch_optional(p).await?);
        id.ok_or_else(|| Error::NotFound("role", name.to_owned()))
    }

    /// Creates a role with its patterns (none is allowed: patterns can be granted later).
    pub async fn role_create(
        &self,
        workspace: &str,
        name: &str,
        patterns: &[String],
    ) -> Result<()> {
        validate_name("role", name)?;
        for pattern in patterns {
            policy_sdk::pattern::validate(pattern).map_err(Error::Invalid)?;
        }
        let ws = self.workspace_id(workspace).await?;
        let now = now_ms();
        with_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            let id: i64 = sqlx::query_scalar("INSERT INTO roles (workspace_id, name, created_ms) VALUES ($1, $2, $3) RETURNING id")
                .bind(ws).bind(name).bind(now).fetch_one(&mut *tx).await
                .map_err(|e| duplicate_or(e, "role", name))?;
            for pattern in patterns {
                sqlx::query("INSERT INTO role_grants (role_id, pattern, created_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                    .bind(id).bind(pattern).bind(now).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Deletes a role; its members lose what it granted.
    pub async fn role_delete(&self, workspace: &str, name: &str) -> Result<()> {
        let ws = self.workspace_id(workspace).await?;
        let done = with_db!(&self.db, p => sqlx::query("DELETE FROM roles WHERE workspace_id = $1 AND name = $2")
            .bind(ws).bind(name).execute(p).await?.rows_affected());
        if done == 0 {
            return Err(Error::NotFound("role", name.to_owned()));
        }
        Ok(())
    }

    /// Adds patterns to a role; adding one it has is a no-op.
    pub async fn role_grant(&self, workspace: &str, role: &str, patterns: &[String]) -> Result<()> {
        for pattern in patterns {
            policy_sdk::pattern::validate(pattern).map_err(Error::Invalid)?;
        }
        let ws = self.workspace_id(workspace).await?;
        let id = self.role_id(ws, role).await?;
        let now = now_ms();
        with_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            for pattern in patterns {
                sqlx::query("INSERT INTO role_grants (role_id, pattern, created_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                    .bind(id).bind(pattern).bind(now).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Takes patterns away from a role; every pattern must be one it has.
    pub async fn role_revoke(
        &self,
        workspace: &str,
        role: &str,
        patterns: &[String],
    ) -> Result<()> {
        let ws = self.workspace_id(workspace).await?;
        let id = self.role_id(ws, role).await?;
        with_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            for pattern in patterns {
                let done = sqlx::query("DELETE FROM role_grants WHERE role_id = $1 AND pattern = $2")
                    .bind(id).bind(pattern).execute(&mut *tx).await?.rows_affected();
                if done == 0 {
                    return Err(Error::NotFound("role grant", format!("{role} {pattern}")));
                }
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Assigns a role to a member; assigning one they have is a no-op.
    pub async fn role_assign(&self, workspace: &str, member: &str, role: &str) -> Result<()> {
        let ws = self.workspace_id(workspace).await?;
        let m = self.member_id(ws, member).await?;
        let r = self.role_id(ws, role).await?;
        let now = now_ms();
        with_db!(&self.db, p => sqlx::query("INSERT INTO member_roles (member_id, role_id, created_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(m).bind(r).bind(now).execute(p).await?.rows_affected());
        Ok(())
    }

    /// Takes a role away from a member; they must have it.
    pub async fn role_unassign(&self, workspace: &str, member: &str, role: &str) -> Result<()> {
        let ws = self.workspace_id(workspace).await?;
        let m = self.member_id(ws, member).await?;
        let r = self.role_id(ws, role).await?;
        let done = with_db!(&self.db, p => sqlx::query("DELETE FROM member_roles WHERE member_id = $1 AND role_id = $2")
            .bind(m).bind(r).execute(p).await?.rows_affected());
        if done == 0 {
            return Err(Error::NotFound(
                "role assignment",
                format!("{member} {role}"),
            ));
        }
        Ok(())
    }

    /// The roles of a workspace by name, with their patterns and members.
    pub async fn role_list(&self, workspace: &str) -> Result<Vec<Role>> {
        let ws = self.workspace_id(workspace).await?;
        let (roles, grants, members): (Vec<RoleRow>, Vec<Pair>, Vec<Pair>) = with_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            let roles = sqlx::query_as("SELECT id, name, created_ms FROM roles WHERE workspace_id = $1 ORDER BY name")
                .bind(ws).fetch_all(&mut *tx).await?;
            let grants = sqlx::query_as("SELECT g.role_id, g.pattern FROM role_grants g JOIN roles r ON r.id = g.role_id WHERE r.workspace_id = $1 ORDER BY g.pattern")
                .bind(ws).fetch_all(&mut *tx).await?;
            let members = sqlx::query_as("SELECT mr.role_id, m.name FROM member_roles mr JOIN members m ON m.id = mr.member_id WHERE m.workspace_id = $1 ORDER BY m.name")
                .bind(ws).fetch_all(&mut *tx).await?;
            tx.commit().await?;
            (roles, grants, members)
        });
        Ok(roles
            .into_iter()
            .map(|(id, name, created_ms)| Role {
                name,
                patterns: grants
                    .iter()
                    .filter(|(r, _)| *r == id)
                    .map(|(_, p)| p.clone())
                    .collect(),
                members: members
                    .iter()
                    .filter(|(r, _)| *r == id)
                    .map(|(_, m)| m.clone())
                    .collect(),
                created_ms,
            })
            .collect())
    }

    /// Disables (`true`) or enables a member. Disabling one already disabled keeps the first
    /// time.
    pub async fn member_set_disabled(
        &self,
        workspace: &str,
        member: &str,
        disabled: bool,
    ) -> Result<()> {
        let ws = self.workspace_id(workspace).await?;
        let m = self.member_id(ws, member).await?;
        if disabled {
            with_db!(&self.db, p => sqlx::query("UPDATE members SET disabled_ms = $1 WHERE id = $2 AND disabled_ms IS NULL")
                .bind(now_ms()).bind(m).execute(p).await?.rows_affected());
        } else {
            with_db!(&self.db, p => sqlx::query("UPDATE members SET disabled_ms = NULL WHERE id = $1 AND disabled_ms IS NOT NULL")
                .bind(m).execute(p).await?.rows_affected());
        }
        Ok(())
    }
}

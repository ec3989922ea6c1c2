//! What SCIM provisioning (`gateway/src/scim.rs`) keeps: a bearer token per workspace, the SCIM
//! attributes of provisioned members, groups and their members, and each group's role.
//!
//! A SCIM User is a member (`userName` = member name, `active` = not disabled, `id` = the
//! member's row id); a Group is a `scim_groups` row whose members hold its role, if an admin
//! mapped one (`mcpgw scim map`). Membership and role changes reach every process through the
//! identity journal like any other identity change.

use super::{Db, Error, Result, Store, duplicate_or, now_ms, random_hex, validate_name, with_db};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Prefix of a SCIM bearer token (never accepted on the MCP endpoint).
pub const SCIM_TOKEN_PREFIX: &str = "mcpgw_scim_";

/// A provisioned (or any) member as SCIM sees them.
#[derive(Clone, Debug, PartialEq)]
pub struct ScimUser {
    /// The member's row id: the SCIM `id`.
    pub id: i64,
    /// The member's name: `userName`.
    pub user_name: String,
    /// Not disabled.
    pub active: bool,
    /// `externalId`, the provider's own id for them.
    pub external_id: Option<String>,
    /// The other attributes the provider sent (JSON object), `{}` when none.
    pub attributes: String,
    /// Creation time, Unix ms.
    pub created_ms: i64,
    /// Last change through SCIM (else creation), Unix ms.
    pub modified_ms: i64,
    /// Their groups: (id, displayName).
    pub groups: Vec<(i64, String)>,
}

/// A SCIM group.
#[derive(Clone, Debug, PartialEq)]
pub struct ScimGroup {
    /// Row id: the SCIM `id`.
    pub id: i64,
    /// `displayName`, unique in the workspace.
    pub display_name: String,
    /// `externalId`.
    pub external_id: Option<String>,
    /// The role its members hold, if an admin mapped one.
    pub role: Option<String>,
    /// Members: (id, userName); empty when not asked for.
    pub members: Vec<(i64, String)>,
    /// Creation time, Unix ms.
    pub created_ms: i64,
    /// Last change, Unix ms.
    pub modified_ms: i64,
}

/// Which users or groups a list returns.
#[derive(Clone, Debug)]
pub enum Filter {
    /// Everyone.
    All,
    /// `userName eq "…"` (case-insensitive) or `displayName eq "…"`.
    Name(String),
    /// `externalId eq "…"`.
    ExternalId(String),
    /// `id eq "…"`.
    Id(i64),
}

/// What a user is replaced with.
#[derive(Clone, Debug)]
pub struct UserFields {
    /// `userName`: the member name.
    pub user_name: String,
    /// `active`.
    pub active: bool,
    /// `externalId`.
    pub external_id: Option<String>,
    /// Every other attribute, as a JSON object.
    pub attributes: String,
}

type UserRow = (
    i64,
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
    i64,
    Option<i64>,
);
type GroupRow = (i64, String, Option<String>, Option<String>, i64, i64);

const USER_COLUMNS: &str = "SELECT id, name, disabled_ms, scim_external_id, scim, created_ms, scim_modified_ms FROM members";
const GROUP_COLUMNS: &str = "SELECT g.id, g.display_name, g.external_id, r.name, g.created_ms, g.modified_ms \
     FROM scim_groups g LEFT JOIN roles r ON r.id = g.role_id";

fn user((id, name, disabled, external_id, scim, created, modified): UserRow) -> ScimUser {
    ScimUser {
        id,
        user_name: name,
        active: disabled.is_none(),
        external_id,
        attributes: scim.unwrap_or_else(|| "{}".into()),
        created_ms: created,
        modified_ms: modified.unwrap_or(created),
        groups: Vec::new(),
    }
}

fn group((id, display_name, external_id, role, created, modified): GroupRow) -> ScimGroup {
    ScimGroup {
        id,
        display_name,
        external_id,
        role,
        members: Vec::new(),
        created_ms: created,
        modified_ms: modified,
    }
}

fn validate_group_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(Error::Invalid(
            "displayName: 1-256 characters, no control characters".into(),
        ));
    }
    Ok(())
}

impl Store {
    /// Issues the workspace's SCIM bearer token, replacing any previous one. The returned value
    /// is the only copy.
    pub async fn scim_token_issue(&self, workspace: &str) -> Result<String> {
        let ws = self.workspace_id(workspace).await?;
        let token = format!("{SCIM_TOKEN_PREFIX}{}", random_hex(32)?);
        let hash = super::token_hash(&token);
        let prefix = token[..SCIM_TOKEN_PREFIX.len() + 6].to_owned();
        let now = now_ms();
        with_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            sqlx::query("DELETE FROM scim_tokens WHERE workspace_id = $1").bind(ws).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO scim_tokens (workspace_id, hash, prefix, created_ms) VALUES ($1, $2, $3, $4)")
                .bind(ws).bind(&hash).bind(&prefix).bind(now).execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok(token)
    }

    /// Ends SCIM access to a workspace.
    pub async fn scim_token_revoke(&self, workspace: &str) -> Result<()> {
        let ws = self.workspace_id(workspace).await?;
        let done = with_db!(&self.db, p => sqlx::query("DELETE FROM scim_tokens WHERE workspace_id = $1").bind(ws).execute(p).await?.rows_affected());
        if done == 0 {
            return Err(Error::NotFound(
                "SCIM token of workspace",
                workspace.to_owned(),
            ));
        }
        Ok(())
    }

    /// Whether `token` is the workspace's SCIM token (compared as hashes, in constant time).
    /// An unknown workspace is simply `false`.
    pub async fn scim_token_check(&self, workspace: &str, token: &str) -> Result<bool> {
        let stored: Option<String> = with_db!(&self.db, p => sqlx::query_scalar(
            "SELECT t.hash FROM scim_tokens t JOIN workspaces w ON w.id = t.workspace_id WHERE w.name = $1")
            .bind(workspace).fetch_optional(p).await?);
        let Some(stored) = stored else {
            return Ok(false);
        };
        let given = format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())));
        Ok(bool::from(given.as_bytes().ct_eq(stored.as_bytes())))
    }

    /// Creates a member from a SCIM User. `userName` is unique case-insensitively.
    pub async fn scim_user_create(&self, workspace: &str, fields: &UserFields) -> Result<i64> {
        validate_name("userName", &fields.user_name)?;
        let ws = self.workspace_id(workspace).await?;
        let now = now_ms();
        let disabled = (!fields.active).then_some(now);
        // One statement (a read-then-write transaction fails with SQLITE_BUSY_SNAPSHOT when
        // another writer commits in between): insert unless the name is taken in any case.
        let id: Option<i64> = with_db!(&self.db, p => sqlx::query_scalar(
            "INSERT INTO members (workspace_id, name, created_ms, disabled_ms, scim, scim_external_id, scim_modified_ms) \
             SELECT $1, $2, $3, $4, $5, $6, $3 \
             WHERE NOT EXISTS (SELECT 1 FROM members WHERE workspace_id = $1 AND lower(name) = lower($2)) RETURNING id")
            .bind(ws).bind(&fields.user_name).bind(now).bind(disabled).bind(&fields.attributes).bind(&fields.external_id)
            .fetch_optional(p).await.map_err(|e| duplicate_or(e, "userName", &fields.user_name))?);
        let id = id.ok_or_else(|| Error::Duplicate("userName", fields.user_name.clone()))?;
        Ok(id)
    }

    /// One member as a SCIM User, with their groups.
    pub async fn scim_user(&self, workspace: &str, id: i64) -> Result<Option<ScimUser>> {
        let ws = self.workspace_id(workspace).await?;
        let row: Option<UserRow> = with_db!(&self.db, p => sqlx::query_as(sqlx::AssertSqlSafe(format!("{USER_COLUMNS} WHERE workspace_id = $1 AND id = $2")))
            .bind(ws).bind(id).fetch_optional(p).await?);
        let Some(row) = row else { return Ok(None) };
        let mut u = user(row);
        u.groups = with_db!(&self.db, p => sqlx::query_as(
            "SELECT g.id, g.display_name FROM scim_group_members gm JOIN scim_groups g ON g.id = gm.group_id WHERE gm.member_id = $1 ORDER BY g.id")
            .bind(id).fetch_all(p).await?);
        Ok(Some(u))
    }

    /// Members as SCIM Users in id order: (total matching, the page from `offset`, at most
    /// `count`), each with their groups.
    pub async fn scim_users(
        &self,
        workspace: &str,
        filter: &Filter,
        offset: i64,
        count: i64,
    ) -> Result<(i64, Vec<ScimUser>)> {
        let ws = self.workspace_id(workspace).await?;
        let (cond, text, num) = match filter {
            Filter::All => ("", None, None),
            Filter::Name(n) => (" AND lower(name) = lower($2)", Some(n.as_str()), None),
            Filter::ExternalId(e) => (" AND scim_external_id = $2", Some(e.as_str()), None),
            Filter::Id(i) => (" AND id = $2", None, Some(*i)),
        };
        let count_sql = format!("SELECT COUNT(*) FROM members WHERE workspace_id = $1{cond}");
        let page_sql = format!(
            "{USER_COLUMNS} WHERE workspace_id = $1{cond} ORDER BY id LIMIT {count} OFFSET {offset}",
            count = count.max(0),
            offset = offset.max(0)
        );
        let (total, rows): (i64, Vec<UserRow>) = with_db!(&self.db, p => {
            let mut c = sqlx::query_scalar(sqlx::AssertSqlSafe(count_sql)).bind(ws);
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(page_sql)).bind(ws);
            if let Some(t) = text { c = c.bind(t); q = q.bind(t); }
            if let Some(n) = num { c = c.bind(n); q = q.bind(n); }
            (c.fetch_one(p).await?, q.fetch_all(p).await?)
        });
        let mut users: Vec<ScimUser> = rows.into_iter().map(user).collect();
        if let (Some(first), Some(last)) = (users.first(), users.last()) {
            // The page's groups in one read: its ids are a range.
            let (lo, hi) = (first.id, last.id);
            let memberships: Vec<(i64, i64, String)> = with_db!(&self.db, p => sqlx::query_as(
                "SELECT gm.member_id, g.id, g.display_name FROM scim_group_members gm JOIN scim_groups g ON g.id = gm.group_id \
                 WHERE g.workspace_id = $1 AND gm.member_id BETWEEN $2 AND $3 ORDER BY g.id")
                .bind(ws).bind(lo).bind(hi).fetch_all(p).await?);
            for (member, gid, name) in memberships {
                if let Ok(i) = users.binary_search_by_key(&member, |u| u.id) {
                    users[i].groups.push((gid, name));
                }
            }
        }
        Ok((total, users))
    }

    /// Replaces a member's SCIM fields: a new `userName` renames them, `active: false`
    /// disables them (keeping the first disable time), `true` enables them.
    pub async fn scim_user_replace(
        &self,
        workspace: &str,
        id: i64,
        fields: &UserFields,
    ) -> Result<()> {
        validate_name("userName", &fields.user_name)?;
        let ws = self.workspace_id(workspace).await?;
        let now = now_ms();
        // One statement, as in `scim_user_create`; when it changes nothing, find out why.
        let done = with_db!(&self.db, p => sqlx::query(
            "UPDATE members SET name = $1, \
             disabled_ms = CASE WHEN $2 THEN NULL ELSE COALESCE(disabled_ms, $3) END, \
             scim = $4, scim_external_id = $5, scim_modified_ms = $3 \
             WHERE workspace_id = $6 AND id = $7 \
             AND NOT EXISTS (SELECT 1 FROM members o WHERE o.workspace_id = $6 AND lower(o.name) = lower($1) AND o.id <> $7)")
            .bind(&fields.user_name).bind(fields.active).bind(now).bind(&fields.attributes)
            .bind(&fields.external_id).bind(ws).bind(id)
            .execute(p).await.map_err(|e| duplicate_or(e, "userName", &fields.user_name))?
            .rows_affected());
        if done == 0 {
            let exists: Option<i64> = with_db!(&self.db, p => sqlx::query_scalar("SELECT id FROM members WHERE workspace_id = $1 AND id = $2")
                .bind(ws).bind(id).fetch_optional(p).await?);
            return Err(match exists {
                Some(_) => Error::Duplicate("userName", fields.user_name.clone()),
                None => Error::NotFound("User", id.to_string()),
            });
        }
        Ok(())
    }

    /// Deletes a member (with their tokens, grants and memberships).
    pub async fn scim_user_delete(&self, workspace: &str, id: i64) -> Result<()> {
        let ws = self.workspace_id(workspace).await?;
        let done = with_db!(&self.db, p => sqlx::query("DELETE FROM members WHERE workspace_id = $1 AND id = $2")
            .bind(ws).bind(id).execute(p).await?.rows_affected());
        if done == 0 {
            return Err(Error::NotFound("User", id.to_string()));
        }
        Ok(())
    }

    /// Creates a group with its members (ids of the workspace's members).
    pub async fn scim_group_create(
        &self,
        workspace: &str,
        display_name: &str,
        external_id: Option<&str>,
        members: &[i64],
    ) -> Result<i64> {
        validate_group_name(display_name)?;
        let ws = self.workspace_id(workspace).await?;
        let now = now_ms();
        let id: i64 = with_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO scim_groups (workspace_id, display_name, external_id, created_ms, modified_ms) VALUES ($1, $2, $3, $4, $4) RETURNING id")
                .bind(ws).bind(display_name).bind(external_id).bind(now)
                .fetch_one(&mut *tx).await.map_err(|e| duplicate_or(e, "group", display_name))?;
            for m in members {
                let added = sqlx::query("INSERT INTO scim_group_members (group_id, member_id) SELECT $1, id FROM members WHERE id = $2 AND workspace_id = $3")
                    .bind(id).bind(m).bind(ws).execute(&mut *tx).await?.rows_affected();
                if added == 0 {
                    return Err(Error::Invalid(format!("members: no User with id {m}")));
                }
            }
            tx.commit().await?;
            id
        });
        Ok(id)
    }

    /// One group, with its members when `members` is true.
    pub async fn scim_group(
        &self,
        workspace: &str,
        id: i64,
        members: bool,
    ) -> Result<Option<ScimGroup>> {
        let (_, mut groups) = self
            .scim_groups(workspace, &Filter::Id(id), 0, 1, members)
            .await?;
        Ok(groups.pop())
    }

    /// Groups in id order: (total matching, the page), with their members when `members`.
    pub async fn scim_groups(
        &self,
        workspace: &str,
        filter: &Filter,
        offset: i64,
        count: i64,
        members: bool,
    ) -> Result<(i64, Vec<ScimGroup>)> {
        let ws = self.workspace_id(workspace).await?;
        let (cond, text, num) = match filter {
            Filter::All => ("", None, None),
            Filter::Name(n) => (" AND g.display_name = $2", Some(n.as_str()), None),
            Filter::ExternalId(e) => (" AND g.external_id = $2", Some(e.as_str()), None),
            Filter::Id(i) => (" AND g.id = $2", None, Some(*i)),
        };
        let count_sql =
            format!("SELECT COUNT(*) FROM scim_groups g WHERE g.workspace_id = $1{cond}");
        let page_sql = format!(
            "{GROUP_COLUMNS} WHERE g.workspace_id = $1{cond} ORDER BY g.id LIMIT {count} OFFSET {offset}",
            count = count.max(0),
            offset = offset.max(0)
        );
        let (total, rows): (i64, Vec<GroupRow>) = with_db!(&self.db, p => {
            let mut c = sqlx::query_scalar(sqlx::AssertSqlSafe(count_sql)).bind(ws);
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(page_sql)).bind(ws);
            if let Some(t) = text { c = c.bind(t); q = q.bind(t); }
            if let Some(n) = num { c = c.bind(n); q = q.bind(n); }
            (c.fetch_one(p).await?, q.fetch_all(p).await?)
        });
        let mut groups: Vec<ScimGroup> = rows.into_iter().map(group).collect();
        if members {
            for g in &mut groups {
                g.members = with_db!(&self.db, p => sqlx::query_as(
                    "SELECT m.id, m.name FROM scim_group_members gm JOIN members m ON m.id = gm.member_id WHERE gm.group_id = $1 ORDER BY m.id")
                    .bind(g.id).fetch_all(p).await?);
            }
        }
        Ok((total, groups))
    }

    /// Changes a group: its name and external id when given, members added and removed, or
    /// (with `replace_members`) its members set to exactly `add`. Only real changes touch the
    /// membership rows, so only members whose roles change are re-derived anywhere.
    pub async fn scim_group_update(
        &self,
        workspace: &str,
        id: i64,
        change: &GroupChange,
    ) -> Result<()> {
        if let Some(name) = &change.display_name {
            validate_group_name(name)?;
        }
        let ws = self.workspace_id(workspace).await?;
        let now = now_ms();
        with_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            let done = sqlx::query(
                "UPDATE scim_groups SET display_name = COALESCE($1, display_name), \
                 external_id = CASE WHEN $2 THEN $3 ELSE external_id END, modified_ms = $4 \
                 WHERE workspace_id = $5 AND id = $6")
                .bind(&change.display_name).bind(change.external_id.is_some())
                .bind(change.external_id.clone().flatten()).bind(now).bind(ws).bind(id)
                .execute(&mut *tx).await
                .map_err(|e| duplicate_or(e, "group", change.display_name.as_deref().unwrap_or_default()))?
                .rows_affected();
            if done == 0 {
                return Err(Error::NotFound("Group", id.to_string()));
            }
            if change.replace_members {
                let current: Vec<i64> = sqlx::query_scalar("SELECT member_id FROM scim_group_members WHERE group_id = $1")
                    .bind(id).fetch_all(&mut *tx).await?;
                for m in current.iter().filter(|m| !change.add.contains(m)) {
                    sqlx::query("DELETE FROM scim_group_members WHERE group_id = $1 AND member_id = $2")
                        .bind(id).bind(m).execute(&mut *tx).await?;
                }
            }
            for m in &change.remove {
                sqlx::query("DELETE FROM scim_group_members WHERE group_id = $1 AND member_id = $2")
                    .bind(id).bind(m).execute(&mut *tx).await?;
            }
            for m in &change.add {
                let known: Option<i64> = sqlx::query_scalar("SELECT id FROM members WHERE id = $1 AND workspace_id = $2")
                    .bind(m).bind(ws).fetch_optional(&mut *tx).await?;
                if known.is_none() {
                    return Err(Error::Invalid(format!("members: no User with id {m}")));
                }
                sqlx::query("INSERT INTO scim_group_members (group_id, member_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(id).bind(m).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Deletes a group; its members lose the role it gave them.
    pub async fn scim_group_delete(&self, workspace: &str, id: i64) -> Result<()> {
        let ws = self.workspace_id(workspace).await?;
        with_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            // Memberships first, explicitly: each one is a change of its member.
            sqlx::query("DELETE FROM scim_group_members WHERE group_id IN (SELECT id FROM scim_groups WHERE workspace_id = $1 AND id = $2)")
                .bind(ws).bind(id).execute(&mut *tx).await?;
            let done = sqlx::query("DELETE FROM scim_groups WHERE workspace_id = $1 AND id = $2")
                .bind(ws).bind(id).execute(&mut *tx).await?.rows_affected();
            if done == 0 {
                return Err(Error::NotFound("Group", id.to_string()));
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Maps a group (by displayName) to a role, or with `None` unmaps it: the group's members
    /// hold the role while they are in the group.
    pub async fn scim_group_map(
        &self,
        workspace: &str,
        group: &str,
        role: Option<&str>,
    ) -> Result<()> {
        let ws = self.workspace_id(workspace).await?;
        let role_id = match role {
            Some(r) => Some(self.role_id(ws, r).await?),
            None => None,
        };
        let done = with_db!(&self.db, p => sqlx::query("UPDATE scim_groups SET role_id = $1, modified_ms = $2 WHERE workspace_id = $3 AND display_name = $4")
            .bind(role_id).bind(now_ms()).bind(ws).bind(group).execute(p).await?.rows_affected());
        if done == 0 {
            return Err(Error::NotFound("group", group.to_owned()));
        }
        Ok(())
    }
}

/// A change to a group (see [`Store::scim_group_update`]).
#[derive(Clone, Debug, Default)]
pub struct GroupChange {
    /// New `displayName`.
    pub display_name: Option<String>,
    /// New `externalId` (`Some(None)` clears it).
    pub external_id: Option<Option<String>>,
    /// Members to add (or, with `replace_members`, the whole new set).
    pub add: Vec<i64>,
    /// Members to remove.
    pub remove: Vec<i64>,
    /// `add` is the complete membership.
    pub replace_members: bool,
}

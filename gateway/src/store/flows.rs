//! Session-aware policy state shared by every replica: flow labels (`flow_labels`) and tool
//! pins (`tool_pins`). The in-memory sides are `crate::flow` and `crate::catalog`.

use super::{Db, Error, Result, Store, now_ms, with_db};
use serde::Serialize;

/// One flow label as stored.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct FlowRow {
    /// Row id, increasing.
    pub id: i64,
    /// The flow: workspace, and session or token (see `crate::flow`).
    pub flow_key: String,
    /// The label.
    pub label: String,
    /// When it lapses, Unix ms.
    pub expires_ms: i64,
    /// The replica that applied it.
    pub origin: String,
}

/// A tool's pin: the definition the workspace trusts and the one last seen when it differs.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, sqlx::FromRow)]
pub struct Pin {
    /// Workspace name.
    pub workspace: String,
    /// Server name.
    pub server: String,
    /// Tool name as the upstream lists it.
    pub tool: String,
    /// Fingerprint of the trusted definition.
    pub fingerprint: String,
    /// The trusted definition (canonical JSON).
    pub definition: String,
    /// When it was first seen or last approved, Unix ms.
    pub pinned_ms: i64,
    /// Fingerprint of the definition last seen, when it differs from the trusted one.
    pub seen_fingerprint: Option<String>,
    /// That definition.
    pub seen_definition: Option<String>,
    /// When it was first seen, Unix ms.
    pub seen_ms: Option<i64>,
    /// Last change of this row, Unix ms (what replicas poll).
    pub updated_ms: i64,
}

impl Pin {
    /// True when the upstream's current definition is not the trusted one.
    pub fn changed(&self) -> bool {
        self.seen_fingerprint
            .as_deref()
            .is_some_and(|s| s != self.fingerprint)
    }
}

const PIN_COLUMNS: &str = "workspace, server, tool, fingerprint, definition, pinned_ms, \
     seen_fingerprint, seen_definition, seen_ms, updated_ms";

impl Store {
    /// Records labels applied to flows by replica `origin`: (flow key, label, expires ms).
    pub async fn flow_labels_add(
        &self,
        rows: &[(String, String, i64)],
        origin: &str,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        with_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            for (key, label, expires) in rows {
                sqlx::query(
                    "INSERT INTO flow_labels (flow_key, label, expires_ms, origin) VALUES ($1, $2, $3, $4)",
                )
                .bind(key)
                .bind(label)
                .bind(expires)
                .bind(origin)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Unexpired labels recorded after row `after`, oldest first, at most `limit`.
    pub async fn flow_labels_since(&self, after: i64, limit: i64) -> Result<Vec<FlowRow>> {
        with_db!(&self.db, p => {
            Ok(sqlx::query_as(
                "SELECT id, flow_key, label, expires_ms, origin FROM flow_labels \
                 WHERE id > $1 AND expires_ms > $2 ORDER BY id LIMIT $3",
            )
            .bind(after)
            .bind(now_ms())
            .bind(limit)
            .fetch_all(p)
            .await?)
        })
    }

    /// Deletes lapsed labels; returns how many went.
    pub async fn flow_labels_prune(&self) -> Result<u64> {
        with_db!(&self.db, p => {
            Ok(sqlx::query("DELETE FROM flow_labels WHERE expires_ms <= $1")
                .bind(now_ms())
                .execute(p)
                .await?
                .rows_affected())
        })
    }

    /// Every pin of `workspace` (every workspace when `None`), by server and tool.
    pub async fn pins(&self, workspace: Option<&str>) -> Result<Vec<Pin>> {
        with_db!(&self.db, p => {
            let q = format!(
                "SELECT {PIN_COLUMNS} FROM tool_pins WHERE $1 IS NULL OR workspace = $1 \
                 ORDER BY workspace, server, tool"
            );
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(q.clone())).bind(workspace).fetch_all(p).await?)
        })
    }

    /// Pins changed at or after `since_ms`.
    pub async fn pins_updated_since(&self, since_ms: i64) -> Result<Vec<Pin>> {
        with_db!(&self.db, p => {
            let q = format!("SELECT {PIN_COLUMNS} FROM tool_pins WHERE updated_ms >= $1");
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(q.clone())).bind(since_ms).fetch_all(p).await?)
        })
    }

    /// Records what the upstream lists now for a tool: pinned when first seen; otherwise noted
    /// as seen when it differs from the pin (cleared when it is the pin again). Returns the pin.
    pub async fn pin_observe(
        &self,
        workspace: &str,
        server: &str,
        tool: &str,
        fingerprint: &str,
        definition: &str,
    ) -> Result<Pin> {
        let now = now_ms();
        with_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            sqlx::query(
                "INSERT INTO tool_pins (workspace, server, tool, fingerprint, definition, pinned_ms, updated_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (workspace, server, tool) DO NOTHING",
            )
            .bind(workspace)
            .bind(server)
            .bind(tool)
            .bind(fingerprint)
            .bind(definition)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            // Seen: set when it differs from the pin and from what was seen before; cleared when
            // the upstream is back to the pinned definition.
            sqlx::query(
                "UPDATE tool_pins SET seen_fingerprint = $4, seen_definition = $5, seen_ms = $6, updated_ms = $6 \
                 WHERE workspace = $1 AND server = $2 AND tool = $3 AND fingerprint <> $4 \
                 AND (seen_fingerprint IS NULL OR seen_fingerprint <> $4)",
            )
            .bind(workspace)
            .bind(server)
            .bind(tool)
            .bind(fingerprint)
            .bind(definition)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE tool_pins SET seen_fingerprint = NULL, seen_definition = NULL, seen_ms = NULL, updated_ms = $4 \
                 WHERE workspace = $1 AND server = $2 AND tool = $3 AND seen_fingerprint IS NOT NULL \
                 AND fingerprint = $5",
            )
            .bind(workspace)
            .bind(server)
            .bind(tool)
            .bind(now)
            .bind(fingerprint)
            .execute(&mut *tx)
            .await?;
            let q = format!(
                "SELECT {PIN_COLUMNS} FROM tool_pins WHERE workspace = $1 AND server = $2 AND tool = $3"
            );
            let pin: Pin = sqlx::query_as(sqlx::AssertSqlSafe(q.clone()))
                .bind(workspace)
                .bind(server)
                .bind(tool)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(pin)
        })
    }

    /// Trusts the definitions last seen of `workspace`'s changed tools: every one of `server`
    /// (every server when `None`), or only `tool`; with `reviewed`, only those whose seen
    /// definition's fingerprint starts with it (the one the admin diffed: a definition changed
    /// again since is not approved). Returns the pins approved.
    pub async fn pins_approve(
        &self,
        workspace: &str,
        server: Option<&str>,
        tool: Option<&str>,
        reviewed: Option<&str>,
    ) -> Result<Vec<Pin>> {
        if let Some(f) = reviewed
            && (f.len() < 8
                || f.len() > 64
                || !f
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        {
            return Err(Error::Invalid(format!(
                "fingerprint {f:?}: give at least 8 lowercase hex characters of it (mcpgw tools diff shows it)"
            )));
        }
        self.workspace_id(workspace).await?;
        let now = now_ms();
        with_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            let q = format!(
                "SELECT {PIN_COLUMNS} FROM tool_pins WHERE workspace = $1 \
                 AND ($2 IS NULL OR server = $2) AND ($3 IS NULL OR tool = $3) \
                 AND seen_fingerprint IS NOT NULL \
                 AND (CAST($4 AS TEXT) IS NULL OR seen_fingerprint LIKE CAST($4 AS TEXT) || '%') \
                 ORDER BY server, tool"
            );
            let pins: Vec<Pin> = sqlx::query_as(sqlx::AssertSqlSafe(q.clone()))
                .bind(workspace)
                .bind(server)
                .bind(tool)
                .bind(reviewed)
                .fetch_all(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE tool_pins SET fingerprint = seen_fingerprint, definition = seen_definition, \
                 pinned_ms = $4, seen_fingerprint = NULL, seen_definition = NULL, seen_ms = NULL, updated_ms = $4 \
                 WHERE workspace = $1 AND ($2 IS NULL OR server = $2) AND ($3 IS NULL OR tool = $3) \
                 AND seen_fingerprint IS NOT NULL \
                 AND (CAST($5 AS TEXT) IS NULL OR seen_fingerprint LIKE CAST($5 AS TEXT) || '%')",
            )
            .bind(workspace)
            .bind(server)
            .bind(tool)
            .bind(now)
            .bind(reviewed)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(pins)
        })
    }
}

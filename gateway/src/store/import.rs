//! Bulk onboarding (`mcpgw member import WS FILE`): members with their grants and roles from a
//! CSV or JSONL file, checked whole before anything is written, then written one transaction per
//! batch (one identity reload per batch on every process, not one per member).
//!
//! Importing is additive and can be repeated: a member that exists keeps what they have and
//! gains what the file lists; with tokens asked for, every listed member gets a new one.

use super::{
    Db, Error, IssuedToken, Result, Store, TOKEN_PREFIX, TokenInfo, now_ms, random_hex, token_hash,
    validate_name, with_db,
};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Members written per transaction.
pub const BATCH: usize = 500;
/// Most members one import takes.
pub const MAX_ROWS: usize = 200_000;

/// One member of an import file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImportRow {
    /// Member name.
    pub member: String,
    /// `server:tool` patterns granted to them.
    #[serde(default)]
    pub grants: Vec<String>,
    /// Roles (existing in the workspace) assigned to them.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// Members created.
    pub created: usize,
    /// Members that already existed (grants and roles added).
    pub existing: usize,
    /// Tokens issued, one per listed member, in file order (only when asked for).
    pub tokens: Vec<IssuedToken>,
}

/// Splits a CSV cell of patterns or roles: separated by spaces or `;`.
fn cell_list(cell: &str) -> Vec<String> {
    cell.split(|c: char| c == ';' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Parses an import file: JSONL (one `{"member","grants","roles"}` per line) when `jsonl`, else
/// CSV with a header naming `member` and optionally `grants` and `roles` (lists separated by
/// spaces or `;`). Errors name the line.
pub fn parse(text: &str, jsonl: bool) -> Result<Vec<ImportRow>> {
    let mut rows = Vec::new();
    if jsonl {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let row: ImportRow = serde_json::from_str(line).map_err(|e| {
                Error::Invalid(format!("line {}: {}", i + 1, super::json_error(&e)))
            })?;
            rows.push(row);
        }
    } else {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let headers = reader
            .headers()
            .map_err(|e| Error::Invalid(format!("line 1: {e}")))?
            .clone();
        let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
        let Some(member) = column("member") else {
            return Err(Error::Invalid(
                "line 1: the header must name a member column (and optionally grants, roles)"
                    .into(),
            ));
        };
        let (grants, roles) = (column("grants"), column("roles"));
        if let Some(unknown) = headers.iter().find(|h| {
            !["member", "grants", "roles"]
                .iter()
                .any(|k| h.eq_ignore_ascii_case(k))
        }) {
            return Err(Error::Invalid(format!(
                "line 1: unknown column {unknown:?}"
            )));
        }
        for (i, record) in reader.records().enumerate() {
            let line = i + 2;
            let record = record.map_err(|e| Error::Invalid(format!("line {line}: {e}")))?;
            let cell = |c: Option<usize>| c.and_then(|c| record.get(c)).unwrap_or("");
            rows.push(ImportRow {
                member: cell(Some(member)).to_owned(),
                grants: cell_list(cell(grants)),
                roles: cell_list(cell(roles)),
            });
        }
    }
    if rows.len() > MAX_ROWS {
        return Err(Error::Invalid(format!(
            "{} members: at most {MAX_ROWS} per import",
            rows.len()
        )));
    }
    Ok(rows)
}

impl Store {
    /// Imports members into `workspace`: every row is checked (names, patterns, roles that exist,
    /// no member listed twice) before anything is written; then [`BATCH`] members per
    /// transaction. With `tokens`, each listed member gets a new token (`Some(ttl)`: expiring).
    pub async fn member_import(
        &self,
        workspace: &str,
        rows: &[ImportRow],
        tokens: Option<Option<Duration>>,
    ) -> Result<ImportReport> {
        let ws = self.workspace_id(workspace).await?;
        let roles: HashMap<String, i64> = with_db!(&self.db, p => sqlx::query_as::<_, (String, i64)>("SELECT name, id FROM roles WHERE workspace_id = $1")
            .bind(ws).fetch_all(p).await?)
        .into_iter()
        .collect();
        let mut seen = HashSet::new();
        for (i, row) in rows.iter().enumerate() {
            let at = |e: Error| Error::Invalid(format!("row {}: {e}", i + 1));
            validate_name("member", &row.member).map_err(at)?;
            if !seen.insert(row.member.as_str()) {
                return Err(at(Error::Invalid(format!(
                    "member {:?} is listed twice",
                    row.member
                ))));
            }
            for pattern in &row.grants {
                policy_sdk::pattern::validate(pattern).map_err(|e| at(Error::Invalid(e)))?;
            }
            for role in &row.roles {
                if !roles.contains_key(role) {
                    return Err(at(Error::NotFound("role", role.clone())));
                }
            }
        }
        let mut report = ImportReport::default();
        for batch in rows.chunks(BATCH) {
            let now = now_ms();
            let mut issued = Vec::new();
            let mut created = 0;
            with_db!(&self.db, p => {
                let mut tx = p.begin().await?;
                for row in batch {
                    let inserted: Option<i64> = sqlx::query_scalar("INSERT INTO members (workspace_id, name, created_ms) VALUES ($1, $2, $3) ON CONFLICT (workspace_id, name) DO NOTHING RETURNING id")
                        .bind(ws).bind(&row.member).bind(now).fetch_optional(&mut *tx).await?;
                    let id = match inserted {
                        Some(id) => {
                            created += 1;
                            id
                        }
                        None => sqlx::query_scalar("SELECT id FROM members WHERE workspace_id = $1 AND name = $2")
                            .bind(ws).bind(&row.member).fetch_one(&mut *tx).await?,
                    };
                    for pattern in &row.grants {
                        sqlx::query("INSERT INTO grants (member_id, pattern, created_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                            .bind(id).bind(pattern).bind(now).execute(&mut *tx).await?;
                    }
                    for role in &row.roles {
                        sqlx::query("INSERT INTO member_roles (member_id, role_id, created_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                            .bind(id).bind(roles[role]).bind(now).execute(&mut *tx).await?;
                    }
                    if let Some(ttl) = tokens {
                        let token = format!("{TOKEN_PREFIX}{}", random_hex(32)?);
                        let token_id = format!("tok_{}", random_hex(8)?);
                        let prefix = token[..TOKEN_PREFIX.len() + 6].to_owned();
                        let expires_ms = ttl.map(|t| now + t.as_millis() as i64);
                        sqlx::query("INSERT INTO tokens (id, workspace_id, member_id, hash, prefix, created_ms, expires_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                            .bind(&token_id).bind(ws).bind(id).bind(token_hash(&token)).bind(&prefix).bind(now).bind(expires_ms)
                            .execute(&mut *tx).await?;
                        issued.push(IssuedToken {
                            info: TokenInfo {
                                id: token_id,
                                workspace: workspace.to_owned(),
                                member: Some(row.member.clone()),
                                prefix,
                                created_ms: now,
                                expires_ms,
                                last_used_ms: None,
                            },
                            token,
                        });
                    }
                }
                tx.commit().await?;
            });
            report.created += created;
            report.existing += batch.len() - created;
            report.tokens.extend(issued);
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_jsonl_parse_and_errors_name_the_line() {
        let rows = parse(
            "member,grants,roles\nalice,db:* *:search,db-readers\n\"bob\",,\ncarol,ci:deploy;ci:status,\n",
            false,
        )
        .unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].grants, ["db:*", "*:search"]);
        assert_eq!(rows[0].roles, ["db-readers"]);
        assert!(rows[1].grants.is_empty() && rows[1].roles.is_empty());
        assert_eq!(rows[2].grants, ["ci:deploy", "ci:status"]);
        let only_members = parse("Member\nalice\nbob\n", false).unwrap();
        assert_eq!(only_members.len(), 2);
        let e = parse("name,grants\nalice,db:*\n", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("member column"), "{e}");
        let e = parse("member,extra\nalice,x\n", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown column \"extra\""), "{e}");

        let rows = parse(
            "{\"member\":\"alice\",\"grants\":[\"db:*\"]}\n\n{\"member\":\"bob\",\"roles\":[\"r\"]}\n",
            true,
        )
        .unwrap();
        assert_eq!(rows[1].roles, ["r"]);
        let e = parse("{\"member\":\"a\"}\n{\"member\":\"b\",\"x\":1}\n", true)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 2:"), "{e}");
    }
}

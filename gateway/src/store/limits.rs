//! Rate limits of a workspace (`rate_limits`): set, list, remove. How calls are counted against
//! them is `crate::limit`.

use super::{Db, Error, Result, Store, now_ms, with_db};
use crate::limit::{self, Rate, Subject};
use serde::Serialize;

/// A rate limit as listed.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RateLimit {
    /// `member:NAME`, `role:NAME` or `*`.
    pub subject: String,
    /// `server:tool` pattern of the calls it counts.
    pub pattern: String,
    /// Calls per period, as `N/s`, `N/min` or `N/h`.
    pub rate: String,
    /// Calls a caller may make at once before the rate applies.
    pub burst: i64,
    /// When it was set, Unix ms.
    pub created_ms: i64,
}

impl From<limit::Error> for Error {
    fn from(e: limit::Error) -> Error {
        Error::Invalid(e.to_string())
    }
}

impl Store {
    /// Who `given` names in `workspace`: `*`, `member:NAME`, `role:NAME`, or a bare name that is
    /// exactly one of a member and a role (both existing is refused as ambiguous). The member or
    /// role must exist.
    pub async fn limit_subject(&self, workspace: &str, given: &str) -> Result<Subject> {
        let ws = self.workspace_id(workspace).await?;
        let subject = match Subject::parse(given) {
            Ok(s) => s,
            Err(_) if !given.contains(':') => {
                let member = self.member_id(ws, given).await.is_ok();
                let role = self.role_id(ws, given).await.is_ok();
                return match (member, role) {
                    (true, false) => Ok(Subject::Member(given.to_owned())),
                    (false, true) => Ok(Subject::Role(given.to_owned())),
                    (true, true) => Err(Error::Invalid(format!(
                        "{given:?} is both a member and a role of {workspace}; say member:{given} or role:{given}"
                    ))),
                    (false, false) => Err(Error::NotFound("member or role", given.to_owned())),
                };
            }
            Err(e) => return Err(e.into()),
        };
        match &subject {
            Subject::Member(name) => {
                self.member_id(ws, name).await?;
            }
            Subject::Role(name) => {
                self.role_id(ws, name).await?;
            }
            Subject::Everyone => {}
        }
        Ok(subject)
    }

    /// Sets the limit of `subject` on `pattern` (replacing the rate and burst of one already
    /// set on the same pair). Holds on every replica within a second, through the identity
    /// journal.
    pub async fn limit_set(
        &self,
        workspace: &str,
        subject: &Subject,
        pattern: &str,
        rate: Rate,
        burst: u64,
    ) -> Result<()> {
        policy_sdk::pattern::validate(pattern).map_err(Error::Invalid)?;
        let burst = limit::check_burst(burst)?;
        let ws = self.workspace_id(workspace).await?;
        let (calls, period_ms, burst) = (
            i64::try_from(rate.calls).map_err(|_| Error::Invalid("rate out of range".into()))?,
            i64::try_from(rate.period_ms)
                .map_err(|_| Error::Invalid("rate out of range".into()))?,
            i64::try_from(burst).map_err(|_| Error::Invalid("burst out of range".into()))?,
        );
        with_db!(&self.db, p => sqlx::query(
            "INSERT INTO rate_limits (workspace_id, subject, pattern, rate, period_ms, burst, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (workspace_id, subject, pattern) DO UPDATE SET rate = excluded.rate, \
             period_ms = excluded.period_ms, burst = excluded.burst, created_ms = excluded.created_ms")
            .bind(ws).bind(subject.to_string()).bind(pattern).bind(calls).bind(period_ms)
            .bind(burst).bind(now_ms()).execute(p).await?.rows_affected());
        Ok(())
    }

    /// Removes the limit of `subject` on `pattern`; it must exist.
    pub async fn limit_remove(&self, workspace: &str, subject: &str, pattern: &str) -> Result<()> {
        let ws = self.workspace_id(workspace).await?;
        let done = with_db!(&self.db, p => sqlx::query(
            "DELETE FROM rate_limits WHERE workspace_id = $1 AND subject = $2 AND pattern = $3")
            .bind(ws).bind(subject).bind(pattern).execute(p).await?.rows_affected());
        if done == 0 {
            return Err(Error::NotFound(
                "rate limit",
                format!("{subject} {pattern}"),
            ));
        }
        Ok(())
    }

    /// The workspace's limits, by subject and pattern.
    pub async fn limit_list(&self, workspace: &str) -> Result<Vec<RateLimit>> {
        let ws = self.workspace_id(workspace).await?;
        let rows: Vec<(String, String, i64, i64, i64, i64)> = with_db!(&self.db, p => sqlx::query_as(
            "SELECT subject, pattern, rate, period_ms, burst, created_ms FROM rate_limits \
             WHERE workspace_id = $1 ORDER BY subject, pattern")
            .bind(ws).fetch_all(p).await?);
        Ok(rows
            .into_iter()
            .map(
                |(subject, pattern, calls, period_ms, burst, created_ms)| RateLimit {
                    subject,
                    pattern,
                    rate: Rate::stored(calls, period_ms)
                        .map(|r| r.to_string())
                        .unwrap_or_else(|| format!("{calls}/{period_ms}ms")),
                    burst,
                    created_ms,
                },
            )
            .collect())
    }
}

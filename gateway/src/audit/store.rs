//! Audit records in the store: appending batches to the hash chains, querying, verifying,
//! checkpointing and pruning. The same SQL runs on SQLite and PostgreSQL (see [`crate::store`]).

use super::{GENESIS, Record};
use crate::store::{Db, Error, with_db};
use serde::Serialize;
use sqlx::Row as _;

type Result<T, E = Error> = std::result::Result<T, E>;

/// Most rows per INSERT statement (19 values each stays well under SQLite's 32,766 variables).
/// A batch is inserted in chunks whose sizes are powers of two, so the same few statements are
/// prepared once per connection and reused from its statement cache instead of one new SQL text
/// per batch size.
const INSERT_CHUNK: usize = 256;

/// The next chunk of `left` rows: the largest power of two not over it or [`INSERT_CHUNK`].
fn chunk_len(left: usize) -> usize {
    if left >= INSERT_CHUNK {
        INSERT_CHUNK
    } else {
        1 << left.ilog2()
    }
}

const COLUMNS: &str = "id, workspace, seq, ts_ms, kind, member, token_id, server, tool, decision, module, \
     module_digest, status, error_code, latency_us, upstream_latency_us, request_id, session_id, prev_hash, hash";

/// Appends records to their workspaces' chains in one transaction: each chain's head is locked
/// (by updating it first, so concurrent writers, in this process or another, take turns), the
/// records get their seq, previous hash and hash, and the head moves on. On error nothing is
/// written and the records can be appended again.
pub async fn append(db: &Db, records: &mut [Record]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    // Lock heads in name order, so two writers never wait on each other in a cycle.
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_by(|&a, &b| records[a].workspace.cmp(&records[b].workspace));
    with_db!(db, p => {
        let mut tx = p.begin().await?;
        let mut i = 0;
        while i < order.len() {
            let workspace = records[order[i]].workspace.clone();
            let mut j = i;
            while j < order.len() && records[order[j]].workspace == workspace {
                j += 1;
            }
            // Locking the head and reading it is one statement (both databases have RETURNING).
            const LOCK_HEAD: &str =
                "UPDATE audit_heads SET seq = seq WHERE workspace = $1 RETURNING seq, hash";
            let locked = sqlx::query(LOCK_HEAD).bind(&workspace).fetch_optional(&mut *tx).await?;
            let head = match locked {
                Some(head) => head,
                None => {
                    sqlx::query("INSERT INTO audit_heads (workspace, seq, hash) VALUES ($1, 0, $2) ON CONFLICT (workspace) DO NOTHING")
                        .bind(&workspace).bind(GENESIS).execute(&mut *tx).await?;
                    sqlx::query(LOCK_HEAD).bind(&workspace).fetch_one(&mut *tx).await?
                }
            };
            let (mut seq, mut prev): (i64, String) = (head.try_get("seq")?, head.try_get("hash")?);
            // Records keep the order they were queued in (the order calls finished).
            for &k in &order[i..j] {
                let r = &mut records[k];
                seq += 1;
                r.seq = seq;
                r.prev_hash = std::mem::take(&mut prev);
                r.hash = r.compute_hash();
                prev = r.hash.clone();
            }
            let mut rest = &order[i..j];
            while !rest.is_empty() {
                let (chunk, more) = rest.split_at(chunk_len(rest.len()));
                rest = more;
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO audit_records (workspace, seq, ts_ms, kind, member, token_id, server, tool, decision, \
                     module, module_digest, status, error_code, latency_us, upstream_latency_us, request_id, session_id, prev_hash, hash) ",
                );
                q.push_values(chunk, |mut b, &k| {
                    let r = &records[k];
                    b.push_bind(r.workspace.as_str())
                        .push_bind(r.seq)
                        .push_bind(r.ts_ms)
                        .push_bind(r.kind.as_str())
                        .push_bind(r.member.as_deref())
                        .push_bind(r.token_id.as_deref())
                        .push_bind(r.server.as_str())
                        .push_bind(r.tool.as_str())
                        .push_bind(r.decision.as_str())
                        .push_bind(r.module.as_deref())
                        .push_bind(r.module_digest.as_deref())
                        .push_bind(r.status.as_str())
                        .push_bind(r.error_code.as_deref())
                        .push_bind(r.latency_us)
                        .push_bind(r.upstream_latency_us)
                        .push_bind(r.request_id.as_str())
                        .push_bind(r.session_id.as_deref())
                        .push_bind(r.prev_hash.as_str())
                        .push_bind(r.hash.as_str());
                });
                q.build().execute(&mut *tx).await?;
            }
            sqlx::query("UPDATE audit_heads SET seq = $1, hash = $2 WHERE workspace = $3")
                .bind(seq).bind(&prev).bind(&workspace).execute(&mut *tx).await?;
            i = j;
        }
        tx.commit().await?;
    });
    Ok(())
}

/// Which records to list or export. Every field narrows; `None` does not.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Workspace name (`""` for failed authentications).
    pub workspace: Option<String>,
    /// Member name.
    pub member: Option<String>,
    /// Tool name.
    pub tool: Option<String>,
    /// Decision spelling.
    pub decision: Option<String>,
    /// Status spelling.
    pub status: Option<String>,
    /// Only records received at or after this time (Unix ms).
    pub since_ms: Option<i64>,
    /// Only records received before this time (Unix ms).
    pub until_ms: Option<i64>,
    /// Only records with a larger id (paging, `tail --follow`).
    pub after_id: Option<i64>,
    /// At most this many: the newest ones, listed oldest first.
    pub limit: Option<i64>,
}

fn record_from<R>(r: &R) -> Result<Record>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database>,
{
    Ok(Record {
        id: r.try_get("id")?,
        workspace: r.try_get("workspace")?,
        seq: r.try_get("seq")?,
        ts_ms: r.try_get("ts_ms")?,
        kind: r.try_get("kind")?,
        member: r.try_get("member")?,
        token_id: r.try_get("token_id")?,
        server: r.try_get("server")?,
        tool: r.try_get("tool")?,
        decision: r.try_get("decision")?,
        module: r.try_get("module")?,
        module_digest: r.try_get("module_digest")?,
        status: r.try_get("status")?,
        error_code: r.try_get("error_code")?,
        latency_us: r.try_get("latency_us")?,
        upstream_latency_us: r.try_get("upstream_latency_us")?,
        request_id: r.try_get("request_id")?,
        session_id: r.try_get("session_id")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

/// Records matching `filter`, oldest first.
pub async fn query(db: &Db, filter: &Filter) -> Result<Vec<Record>> {
    if let Some(d) = &filter.decision
        && super::Decision::parse(d).is_none()
    {
        return Err(Error::Invalid(format!(
            "invalid decision {d:?}: expected allow, would-deny, deny or error"
        )));
    }
    let limit = filter.limit.unwrap_or(100);
    if !(1..=1_000_000).contains(&limit) {
        return Err(Error::Invalid(format!(
            "invalid limit {limit}: expected 1..=1000000"
        )));
    }
    with_db!(db, p => {
        let mut q = sqlx::QueryBuilder::new(format!("SELECT {COLUMNS} FROM audit_records WHERE 1 = 1"));
        if let Some(v) = &filter.workspace { q.push(" AND workspace = ").push_bind(v.clone()); }
        if let Some(v) = &filter.member { q.push(" AND member = ").push_bind(v.clone()); }
        if let Some(v) = &filter.tool { q.push(" AND tool = ").push_bind(v.clone()); }
        if let Some(v) = &filter.decision { q.push(" AND decision = ").push_bind(v.clone()); }
        if let Some(v) = &filter.status { q.push(" AND status = ").push_bind(v.clone()); }
        if let Some(v) = filter.since_ms { q.push(" AND ts_ms >= ").push_bind(v); }
        if let Some(v) = filter.until_ms { q.push(" AND ts_ms < ").push_bind(v); }
        if let Some(v) = filter.after_id { q.push(" AND id > ").push_bind(v); }
        // Newest `limit`, then oldest first; with after_id (paging forward), the next `limit`.
        if filter.after_id.is_some() {
            q.push(" ORDER BY id LIMIT ").push_bind(limit);
        } else {
            q.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
        }
        let rows = q.build().fetch_all(p).await?;
        let mut out = rows.iter().map(record_from).collect::<Result<Vec<_>>>()?;
        if filter.after_id.is_none() {
            out.reverse();
        }
        Ok(out)
    })
}

/// A chain's head: what `audit checkpoint` prints, to keep somewhere the database's writers
/// cannot reach.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ChainHead {
    /// Workspace name (`""`: failed authentications).
    pub workspace: String,
    /// Last seq written.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
}

/// Every chain's head.
pub async fn heads(db: &Db) -> Result<Vec<ChainHead>> {
    with_db!(db, p => {
        let rows = sqlx::query("SELECT workspace, seq, hash FROM audit_heads ORDER BY workspace").fetch_all(p).await?;
        rows.iter().map(|r| Ok(ChainHead { workspace: r.try_get("workspace")?, seq: r.try_get("seq")?, hash: r.try_get("hash")? })).collect()
    })
}

/// The first row where a chain stops holding.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Broken {
    /// Workspace name.
    pub workspace: String,
    /// Row id (`None` when the break is at the head, after the last row).
    pub id: Option<i64>,
    /// Seq of the row.
    pub seq: i64,
    /// What does not hold.
    pub why: String,
}

/// The outcome of [`verify`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Heads of the chains checked, as recomputed.
    pub chains: Vec<ChainHead>,
    /// Records checked.
    pub records: u64,
    /// The first break found, if any.
    pub broken: Option<Broken>,
}

/// Rows read per page while verifying.
const VERIFY_PAGE: i64 = 5_000;

/// Recomputes every chain (or one workspace's): each row's hash from its contents, each row's
/// link to the one before, the start against the pruning checkpoint, the end against the head.
/// `expect` heads (from an earlier `audit checkpoint`) must still be on their chains.
pub async fn verify(
    db: &Db,
    workspace: Option<&str>,
    expect: &[ChainHead],
) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let heads = heads(db).await?;
    let mut chains: Vec<String> = heads.iter().map(|h| h.workspace.clone()).collect();
    let in_records: Vec<String> = with_db!(db, p => sqlx::query_scalar("SELECT DISTINCT workspace FROM audit_records").fetch_all(p).await?);
    for w in in_records {
        if !chains.contains(&w) {
            chains.push(w);
        }
    }
    chains.sort();
    for chain in chains
        .iter()
        .filter(|c| workspace.is_none_or(|w| w == c.as_str()))
    {
        let head = heads.iter().find(|h| &h.workspace == chain);
        let checkpoint: Option<(i64, String)> = with_db!(db, p => {
            sqlx::query_as("SELECT seq, hash FROM audit_checkpoints WHERE workspace = $1 ORDER BY seq DESC LIMIT 1")
                .bind(chain).fetch_optional(p).await?
        });
        let (mut seq, mut prev) = checkpoint.unwrap_or((0, GENESIS.to_owned()));
        let expected: Vec<&ChainHead> = expect.iter().filter(|e| &e.workspace == chain).collect();
        let broken = |id: Option<i64>, seq: i64, why: String| Broken {
            workspace: chain.clone(),
            id,
            seq,
            why,
        };
        let mut found = None;
        'pages: loop {
            let rows: Vec<Record> = with_db!(db, p => {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM audit_records WHERE workspace = $1 AND seq > $2 ORDER BY seq LIMIT $3")))
                    .bind(chain).bind(seq).bind(VERIFY_PAGE).fetch_all(p).await?;
                rows.iter().map(record_from).collect::<Result<Vec<_>>>()?
            });
            if rows.is_empty() {
                break;
            }
            for r in rows {
                report.records += 1;
                if r.seq != seq + 1 {
                    found = Some(broken(
                        Some(r.id),
                        r.seq,
                        format!(
                            "seq {} follows seq {seq}: rows {}..{} are missing",
                            r.seq,
                            seq + 1,
                            r.seq - 1
                        ),
                    ));
                    break 'pages;
                }
                if r.prev_hash != prev {
                    found = Some(broken(
                        Some(r.id),
                        r.seq,
                        "does not continue the chain: the row before it was altered or replaced"
                            .into(),
                    ));
                    break 'pages;
                }
                if r.compute_hash() != r.hash {
                    found = Some(broken(
                        Some(r.id),
                        r.seq,
                        "contents do not match the row's hash: the row was altered".into(),
                    ));
                    break 'pages;
                }
                if let Some(e) = expected.iter().find(|e| e.seq == r.seq)
                    && e.hash != r.hash
                {
                    found = Some(broken(
                        Some(r.id),
                        r.seq,
                        format!(
                            "hash differs from the checkpoint kept elsewhere ({}): the chain was rewritten",
                            e.hash
                        ),
                    ));
                    break 'pages;
                }
                seq = r.seq;
                prev = r.hash;
            }
        }
        if found.is_none() {
            match head {
                Some(h) if h.seq != seq || h.hash != prev => {
                    found = Some(broken(
                        None,
                        h.seq,
                        format!(
                            "the chain ends at seq {seq} but its head says seq {}: the last rows were removed",
                            h.seq
                        ),
                    ));
                }
                None if seq > 0 => {
                    found = Some(broken(None, seq, "the chain has no head row".into()));
                }
                _ => {}
            }
        }
        if found.is_none()
            && let Some(e) = expected.iter().find(|e| e.seq > seq)
        {
            found = Some(broken(
                None,
                e.seq,
                format!(
                    "a checkpoint kept elsewhere names seq {} but the chain ends at seq {seq}",
                    e.seq
                ),
            ));
        }
        report.chains.push(ChainHead {
            workspace: chain.clone(),
            seq,
            hash: prev,
        });
        if found.is_some() {
            report.broken = found;
            break;
        }
    }
    Ok(report)
}

/// What [`prune`] removed from one chain.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Pruned {
    /// Workspace name.
    pub workspace: String,
    /// Rows removed.
    pub removed: u64,
    /// The checkpoint recorded: seq and hash of the last row removed.
    pub checkpoint: ChainHead,
}

/// Removes, from each chain, the longest run of oldest rows all received before `before_ms`, and
/// records a checkpoint (the last removed row's seq and hash) from which the rest verifies.
pub async fn prune(db: &Db, before_ms: i64) -> Result<Vec<Pruned>> {
    let mut out = Vec::new();
    for head in heads(db).await? {
        let chain = head.workspace;
        let done: Option<Pruned> = with_db!(db, p => {
            let mut tx = p.begin().await?;
            // Lock the chain against writers while it is cut.
            sqlx::query("UPDATE audit_heads SET seq = seq WHERE workspace = $1").bind(&chain).execute(&mut *tx).await?;
            let first_kept: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM audit_records WHERE workspace = $1 AND ts_ms >= $2")
                .bind(&chain).bind(before_ms).fetch_one(&mut *tx).await?;
            let head_seq: i64 = sqlx::query_scalar("SELECT seq FROM audit_heads WHERE workspace = $1").bind(&chain).fetch_one(&mut *tx).await?;
            let cut = first_kept.map_or(head_seq, |s| s - 1);
            let last: Option<String> = sqlx::query_scalar("SELECT hash FROM audit_records WHERE workspace = $1 AND seq = $2")
                .bind(&chain).bind(cut).fetch_optional(&mut *tx).await?;
            match last {
                Some(hash) => {
                    let removed = sqlx::query("DELETE FROM audit_records WHERE workspace = $1 AND seq <= $2")
                        .bind(&chain).bind(cut).execute(&mut *tx).await?.rows_affected();
                    sqlx::query("INSERT INTO audit_checkpoints (workspace, seq, hash, created_ms) VALUES ($1, $2, $3, $4)")
                        .bind(&chain).bind(cut).bind(&hash).bind(crate::store::now_ms()).execute(&mut *tx).await?;
                    tx.commit().await?;
                    Some(Pruned { workspace: chain.clone(), removed, checkpoint: ChainHead { workspace: chain.clone(), seq: cut, hash } })
                }
                None => {
                    tx.rollback().await?;
                    None
                }
            }
        });
        out.extend(done);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_cut_into_few_statement_sizes() {
        for n in 1..=2 * INSERT_CHUNK + 3 {
            let (mut left, mut sizes) = (n, Vec::new());
            while left > 0 {
                let c = chunk_len(left);
                assert!(c.is_power_of_two() && c <= INSERT_CHUNK && c <= left);
                sizes.push(c);
                left -= c;
            }
            assert!(
                sizes.len() <= 2 + INSERT_CHUNK.ilog2() as usize,
                "{n}: {sizes:?}"
            );
        }
        assert_eq!(chunk_len(1000), 256);
        assert_eq!(chunk_len(55), 32);
    }
}

//! Audit records in the store: appending batches to the hash chains, querying, verifying,
//! checkpointing and pruning. The same SQL runs on SQLite and PostgreSQL (see [`crate::store`]).

use super::Error;
use super::{GENESIS, Record};
use crate::store::{Db, with_db};
use serde::Serialize;
use sqlx::Row as _;

type Result<T, E = Error> = std::result::Result<T, E>;

/// Most rows per PostgreSQL INSERT statement (19 values each). A batch is inserted in chunks whose
/// sizes are powers of two, so the same few statements are prepared once per connection and reused
/// from its statement cache instead of one new SQL text per batch size.
const INSERT_CHUNK: usize = 256;

/// Most rows per SQLite INSERT statement. SQLite updates the table's AUTOINCREMENT counter once per
/// statement, so a few rows per statement beat one; past 16 the gain is gone (1.9 µs of CPU per
/// row at one, 1.5 at 4 to 64).
const SQLITE_INSERT_CHUNK: usize = 16;

/// The next chunk of `left` rows: the largest power of two not over it or `most`.
fn chunk_len(left: usize, most: usize) -> usize {
    if left >= most {
        most
    } else {
        1 << left.ilog2()
    }
}

const COLUMNS: &str = "id, workspace, seq, ts_ms, kind, member, token_id, server, tool, decision, module, \
     module_digest, status, error_code, latency_us, upstream_latency_us, request_id, session_id, prev_hash, hash, subject, issuer, labels";

/// The columns an append writes, in bind order.
const INSERT_INTO: &str = "INSERT INTO audit_records (workspace, seq, ts_ms, kind, member, token_id, server, tool, decision, \
     module, module_digest, status, error_code, latency_us, upstream_latency_us, request_id, session_id, prev_hash, hash, subject, issuer, labels) ";

/// Values bound per row.
const INSERT_VALUES: usize = 22;

/// One value of a row, as either backend binds it.
enum Column<'a> {
    Text(&'a str),
    MaybeText(Option<&'a str>),
    Int(i64),
    MaybeInt(Option<i64>),
}

/// A record's values in the order of [`INSERT_INTO`]'s columns, for both backends.
fn row_values(r: &Record) -> [Column<'_>; INSERT_VALUES] {
    use Column::{Int, MaybeInt, MaybeText, Text};
    [
        Text(&r.workspace),
        Int(r.seq),
        Int(r.ts_ms),
        Text(&r.kind),
        MaybeText(r.member.as_deref()),
        MaybeText(r.token_id.as_deref()),
        Text(&r.server),
        Text(&r.tool),
        Text(&r.decision),
        MaybeText(r.module.as_deref()),
        MaybeText(r.module_digest.as_deref()),
        Text(&r.status),
        MaybeText(r.error_code.as_deref()),
        Int(r.latency_us),
        MaybeInt(r.upstream_latency_us),
        Text(&r.request_id),
        MaybeText(r.session_id.as_deref()),
        Text(&r.prev_hash),
        Text(&r.hash),
        MaybeText(r.subject.as_deref()),
        MaybeText(r.issuer.as_deref()),
        MaybeText(r.labels.as_deref()),
    ]
}

// The head statements run on both backends. SQLite takes `$N` as named parameters and numbers
// them in the order they first appear, so bound by position they line up only while each
// statement names them in ascending order.

/// Locking a chain's head and reading it is one statement (both databases have RETURNING).
const LOCK_HEAD: &str = "UPDATE audit_heads SET seq = seq WHERE workspace = $1 RETURNING seq, hash";
/// A chain's first head.
const NEW_HEAD: &str = "INSERT INTO audit_heads (workspace, seq, hash) VALUES ($1, 0, $2) ON CONFLICT (workspace) DO NOTHING";
/// Moving a head on.
const MOVE_HEAD: &str = "UPDATE audit_heads SET seq = $1, hash = $2 WHERE workspace = $3";

/// The records' indexes grouped by workspace, groups in name order (so two writers locking heads
/// never wait on each other in a cycle), each group in queue order (the order calls finished).
fn chains(records: &[Record]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..records.len()).collect();
    // Stable: queue order is kept within a workspace.
    order.sort_by(|&a, &b| records[a].workspace.cmp(&records[b].workspace));
    order
        .chunk_by(|&a, &b| records[a].workspace == records[b].workspace)
        .map(<[usize]>::to_vec)
        .collect()
}

/// Gives the records `chain` names their places after the head `(seq, prev)`: seq, previous hash and
/// hash. Returns the new head.
fn link(records: &mut [Record], chain: &[usize], mut seq: i64, mut prev: String) -> (i64, String) {
    for &k in chain {
        let r = &mut records[k];
        seq += 1;
        r.seq = seq;
        r.prev_hash = std::mem::take(&mut prev);
        r.hash = r.compute_hash();
        prev = r.hash.clone();
    }
    (seq, prev)
}

/// The audit writer's handle on the store: appends batches to the hash chains, each batch in one
/// transaction. Each chain's head is locked (by updating it first, so concurrent writers, in this
/// process or another, take turns), the records get their seq, previous hash and hash, and the head
/// moves on. On error nothing is written and the records can be appended again.
///
/// On PostgreSQL it appends through the pool. On SQLite it keeps a connection of its own, used from
/// a blocking thread, with each row bound straight from its record into a cached prepared
/// statement: through sqlx every value was copied into an argument buffer and every statement
/// handed to the connection's worker thread (the writer's rate went from ~210,000 to ~330,000
/// records/s; docs/benchmarks.md).
pub struct Appender {
    backend: Backend,
}

enum Backend {
    /// The database file, and the connection once opened (on first use, on the blocking thread).
    Sqlite {
        path: std::path::PathBuf,
        conn: std::sync::Arc<std::sync::Mutex<Option<rusqlite::Connection>>>,
    },
    Postgres(sqlx::PgPool),
}

impl Appender {
    /// An appender to the store `db` is a pool of. Opens nothing yet.
    pub fn new(db: &Db) -> Appender {
        let backend = match db {
            Db::Sqlite(pool) => Backend::Sqlite {
                path: pool.connect_options().get_filename().to_owned(),
                conn: std::sync::Arc::default(),
            },
            Db::Postgres(pool) => Backend::Postgres(pool.clone()),
        };
        Appender { backend }
    }

    /// Appends `records` (see [`Appender`]); on success each has its seq and hashes. On error they
    /// are all still in `records`, none written. Not cancel-safe on SQLite: the records travel to
    /// the blocking thread and back, so a caller that drops the future loses them from `records`
    /// (the writer never does).
    pub async fn append(&self, records: &mut Vec<Record>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Postgres(pool) => append_postgres(pool, records).await,
            Backend::Sqlite { path, conn } => {
                let (path, conn) = (path.clone(), conn.clone());
                let mut batch = std::mem::take(records);
                let (batch, result) = tokio::task::spawn_blocking(move || {
                    let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                    // The batch comes back whatever happens, a panic included (its transaction
                    // rolled back as it unwound), so the writer can retry it.
                    let appended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        append_sqlite(&mut conn, &path, &mut batch)
                    }));
                    let result = appended.unwrap_or_else(|_| {
                        Err(Error::Writer("appending to SQLite panicked".into()))
                    });
                    if result.is_err() {
                        // The next attempt starts from a new connection.
                        *conn = None;
                    }
                    (batch, result)
                })
                .await
                .map_err(|e| Error::Writer(e.to_string()))?;
                *records = batch;
                result
            }
        }
    }
}

async fn append_postgres(pool: &sqlx::PgPool, records: &mut [Record]) -> Result<()> {
    let chains = chains(records);
    let mut tx = pool.begin().await?;
    for chain in &chains {
        let workspace = records[chain[0]].workspace.clone();
        let locked = sqlx::query(LOCK_HEAD)
            .bind(&workspace)
            .fetch_optional(&mut *tx)
            .await?;
        let head = match locked {
            Some(head) => head,
            None => {
                sqlx::query(NEW_HEAD)
                    .bind(&workspace)
                    .bind(GENESIS)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(LOCK_HEAD)
                    .bind(&workspace)
                    .fetch_one(&mut *tx)
                    .await?
            }
        };
        let (seq, prev) = link(records, chain, head.try_get("seq")?, head.try_get("hash")?);
        let mut rest = chain.as_slice();
        while !rest.is_empty() {
            let (chunk, more) = rest.split_at(chunk_len(rest.len(), INSERT_CHUNK));
            rest = more;
            let mut q = sqlx::QueryBuilder::new(INSERT_INTO);
            q.push_values(chunk, |mut b, &k| {
                for value in row_values(&records[k]) {
                    match value {
                        Column::Text(t) => b.push_bind(t),
                        Column::MaybeText(t) => b.push_bind(t),
                        Column::Int(n) => b.push_bind(n),
                        Column::MaybeInt(n) => b.push_bind(n),
                    };
                }
            });
            q.build().execute(&mut *tx).await?;
        }
        sqlx::query(MOVE_HEAD)
            .bind(seq)
            .bind(&prev)
            .bind(&workspace)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The SQLite INSERT of `rows` rows.
fn sqlite_insert(rows: usize) -> &'static str {
    static SQL: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        (0..=SQLITE_INSERT_CHUNK.ilog2())
            .map(|p| {
                let row = format!("({})", vec!["?"; INSERT_VALUES].join(", "));
                format!("{INSERT_INTO}VALUES {}", vec![row; 1 << p].join(", "))
            })
            .collect()
    });
    &SQL[rows.ilog2() as usize]
}

/// Opens the writer's connection to the database file the pool created and migrated.
fn open_sqlite(path: &std::path::Path) -> Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // As the pool's connections: the file is in WAL mode already; synchronous is per connection.
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.set_prepared_statement_cache_capacity(16);
    Ok(conn)
}

fn append_sqlite(
    conn: &mut Option<rusqlite::Connection>,
    path: &std::path::Path,
    records: &mut [Record],
) -> Result<()> {
    use rusqlite::{OptionalExtension as _, TransactionBehavior};
    let conn = match conn {
        Some(conn) => conn,
        None => conn.insert(open_sqlite(path)?),
    };
    let chains = chains(records);
    // IMMEDIATE: the write lock is taken (or waited for) up front, not on the first write.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for chain in &chains {
        let workspace = records[chain[0]].workspace.clone();
        let lock = |tx: &rusqlite::Transaction<'_>| {
            tx.prepare_cached(LOCK_HEAD)?
                .query_row([&workspace], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        };
        let head = match lock(&tx)? {
            Some(head) => head,
            None => {
                tx.prepare_cached(NEW_HEAD)?
                    .execute((&workspace, GENESIS))?;
                lock(&tx)?.ok_or_else(|| Error::Writer("chain head vanished".into()))?
            }
        };
        let (seq, prev) = link(records, chain, head.0, head.1);
        let mut rest = chain.as_slice();
        while !rest.is_empty() {
            let (chunk, more) = rest.split_at(chunk_len(rest.len(), SQLITE_INSERT_CHUNK));
            rest = more;
            let mut insert = tx.prepare_cached(sqlite_insert(chunk.len()))?;
            for (row, &k) in chunk.iter().enumerate() {
                for (i, value) in row_values(&records[k]).into_iter().enumerate() {
                    let at = row * INSERT_VALUES + i + 1;
                    match value {
                        Column::Text(t) => insert.raw_bind_parameter(at, t)?,
                        Column::MaybeText(t) => insert.raw_bind_parameter(at, t)?,
                        Column::Int(n) => insert.raw_bind_parameter(at, n)?,
                        Column::MaybeInt(n) => insert.raw_bind_parameter(at, n)?,
                    }
                }
            }
            insert.raw_execute()?;
        }
        tx.prepare_cached(MOVE_HEAD)?
            .execute((seq, &prev, &workspace))?;
    }
    tx.commit()?;
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
    /// Server name.
    #[serde(default)]
    pub server: Option<String>,
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
    /// Only records with a smaller id (paging back from the newest, newest first).
    #[serde(default)]
    pub before_id: Option<i64>,
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
        subject: r.try_get("subject")?,
        issuer: r.try_get("issuer")?,
        labels: r.try_get("labels")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

/// Records matching `filter`, oldest first.
pub async fn query(db: &Db, filter: &Filter) -> Result<Vec<Record>> {
    if let Some(d) = &filter.decision
        && super::Decision::parse(d).is_none()
    {
        return Err(Error::Store(crate::store::Error::Invalid(format!(
            "invalid decision {d:?}: expected allow, would-deny, deny or error"
        ))));
    }
    let limit = filter.limit.unwrap_or(100);
    if !(1..=1_000_000).contains(&limit) {
        return Err(Error::Store(crate::store::Error::Invalid(format!(
            "invalid limit {limit}: expected 1..=1000000"
        ))));
    }
    with_db!(db, p => {
        let mut q = sqlx::QueryBuilder::new(format!("SELECT {COLUMNS} FROM audit_records WHERE 1 = 1"));
        if let Some(v) = &filter.workspace { q.push(" AND workspace = ").push_bind(v.clone()); }
        if let Some(v) = &filter.member { q.push(" AND member = ").push_bind(v.clone()); }
        if let Some(v) = &filter.server { q.push(" AND server = ").push_bind(v.clone()); }
        if let Some(v) = &filter.tool { q.push(" AND tool = ").push_bind(v.clone()); }
        if let Some(v) = &filter.decision { q.push(" AND decision = ").push_bind(v.clone()); }
        if let Some(v) = &filter.status { q.push(" AND status = ").push_bind(v.clone()); }
        if let Some(v) = filter.since_ms { q.push(" AND ts_ms >= ").push_bind(v); }
        if let Some(v) = filter.until_ms { q.push(" AND ts_ms < ").push_bind(v); }
        if let Some(v) = filter.after_id { q.push(" AND id > ").push_bind(v); }
        if let Some(v) = filter.before_id { q.push(" AND id < ").push_bind(v); }
        // Newest `limit`, then oldest first; with after_id (paging forward), the next `limit`.
        // Within a time window, newest by receipt time: the `ts_ms` index then walks backwards
        // from the window's end (ordered by id, PostgreSQL walked the id index from the newest
        // row of the whole trail down to the window: 0.9 s at 10 million records).
        if filter.after_id.is_some() {
            q.push(" ORDER BY id LIMIT ").push_bind(limit);
        } else if filter.before_id.is_some() {
            q.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
        } else if filter.since_ms.is_some() || filter.until_ms.is_some() {
            q.push(" ORDER BY ts_ms DESC, id DESC LIMIT ").push_bind(limit);
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

/// Would-deny calls of one member on one tool: what enforcing would break.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct WouldDeny {
    /// Member name (`None`: the workspace token).
    pub member: Option<String>,
    /// Server name.
    pub server: String,
    /// Tool name.
    pub tool: String,
    /// Calls recorded as would-deny.
    pub calls: i64,
    /// The latest of them, Unix ms.
    pub last_ms: i64,
}

/// The would-deny calls of `workspace` received at or after `since_ms`, grouped by member and
/// tool, most calls first (at most `limit` groups). Reads the time index: one day's rows.
pub async fn would_deny(
    db: &Db,
    workspace: &str,
    since_ms: i64,
    limit: i64,
) -> Result<Vec<WouldDeny>> {
    type Row = (Option<String>, String, String, i64, i64);
    let rows: Vec<Row> = with_db!(db, p => sqlx::query_as(
        "SELECT member, server, tool, COUNT(*), MAX(ts_ms) FROM audit_records \
         WHERE ts_ms >= $1 AND workspace = $2 AND decision = 'would-deny' \
         GROUP BY member, server, tool ORDER BY COUNT(*) DESC, MAX(ts_ms) DESC LIMIT $3")
        .bind(since_ms).bind(workspace).bind(limit).fetch_all(p).await?);
    Ok(rows
        .into_iter()
        .map(|(member, server, tool, calls, last_ms)| WouldDeny {
            member,
            server,
            tool,
            calls,
            last_ms,
        })
        .collect())
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
    /// How long it took, in milliseconds.
    pub elapsed_ms: u64,
    /// Records checked per second.
    pub records_per_s: u64,
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
    let started = std::time::Instant::now();
    let mut report = VerifyReport::default();
    let heads = heads(db).await?;
    let mut chains: Vec<String> = heads.iter().map(|h| h.workspace.clone()).collect();
    // Chains with rows but no head (a head deleted by hand): one index probe per chain, not a
    // scan of every row (`SELECT DISTINCT` read all 10 million index entries).
    let in_records: Vec<String> = with_db!(db, p => sqlx::query_scalar(
        "WITH RECURSIVE w(name) AS (SELECT MIN(workspace) FROM audit_records \
         UNION ALL SELECT (SELECT MIN(workspace) FROM audit_records WHERE workspace > w.name) FROM w WHERE w.name IS NOT NULL) \
         SELECT name FROM w WHERE name IS NOT NULL")
        .fetch_all(p).await?);
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
    let elapsed = started.elapsed();
    report.elapsed_ms = elapsed.as_millis() as u64;
    report.records_per_s = (report.records as f64 / elapsed.as_secs_f64().max(1e-6)) as u64;
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

/// Rows deleted per transaction while pruning.
const PRUNE_BATCH: i64 = 10_000;

/// Removes, from each chain, the longest run of oldest rows all received before `before_ms`, and
/// records a checkpoint (the last removed row's seq and hash) from which the rest verifies.
///
/// The cut is decided and its checkpoint written in one short transaction holding the chain's
/// head (so a writer appending at that moment is not cut); verification starts from the newest
/// checkpoint, so the rows below it no longer count from then on. They are then deleted in
/// transactions of `PRUNE_BATCH` rows, oldest first, so the audit writer waits at most one batch
/// (tens of milliseconds) instead of the whole prune. An interrupted prune leaves rows below the
/// checkpoint, which the next prune removes.
pub async fn prune(db: &Db, before_ms: i64) -> Result<Vec<Pruned>> {
    let mut out = Vec::new();
    for head in heads(db).await? {
        let chain = head.workspace;
        let cut: Option<(i64, String, i64)> = with_db!(db, p => {
            let mut tx = p.begin().await?;
            // Lock the chain against writers while the cut is decided.
            sqlx::query("UPDATE audit_heads SET seq = seq WHERE workspace = $1").bind(&chain).execute(&mut *tx).await?;
            let first_kept: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM audit_records WHERE workspace = $1 AND ts_ms >= $2")
                .bind(&chain).bind(before_ms).fetch_one(&mut *tx).await?;
            let head_seq: i64 = sqlx::query_scalar("SELECT seq FROM audit_heads WHERE workspace = $1").bind(&chain).fetch_one(&mut *tx).await?;
            let cut = first_kept.map_or(head_seq, |s| s - 1);
            let last: Option<String> = sqlx::query_scalar("SELECT hash FROM audit_records WHERE workspace = $1 AND seq = $2")
                .bind(&chain).bind(cut).fetch_optional(&mut *tx).await?;
            // Where the rows still to delete start: after the previous checkpoint.
            let from: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM audit_records WHERE workspace = $1")
                .bind(&chain).fetch_one(&mut *tx).await?;
            match last {
                Some(hash) => {
                    sqlx::query("INSERT INTO audit_checkpoints (workspace, seq, hash, created_ms) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
                        .bind(&chain).bind(cut).bind(&hash).bind(crate::store::now_ms()).execute(&mut *tx).await?;
                    tx.commit().await?;
                    Some((cut, hash, from.unwrap_or(cut + 1) - 1))
                }
                None => {
                    tx.rollback().await?;
                    None
                }
            }
        });
        let Some((cut, hash, mut done_through)) = cut else {
            continue;
        };
        let mut removed = 0u64;
        while done_through < cut {
            let upto = (done_through + PRUNE_BATCH).min(cut);
            removed += with_db!(db, p => sqlx::query("DELETE FROM audit_records WHERE workspace = $1 AND seq > $2 AND seq <= $3")
                .bind(&chain).bind(done_through).bind(upto).execute(p).await?.rows_affected());
            done_through = upto;
        }
        out.push(Pruned {
            workspace: chain.clone(),
            removed,
            checkpoint: ChainHead {
                workspace: chain,
                seq: cut,
                hash,
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_cut_into_few_statement_sizes() {
        for most in [INSERT_CHUNK, SQLITE_INSERT_CHUNK] {
            for n in 1..=2 * most + 3 {
                let (mut left, mut sizes) = (n, Vec::new());
                while left > 0 {
                    let c = chunk_len(left, most);
                    assert!(c.is_power_of_two() && c <= most && c <= left);
                    sizes.push(c);
                    left -= c;
                }
                assert!(sizes.len() <= 2 + most.ilog2() as usize, "{n}: {sizes:?}");
            }
        }
        assert_eq!(chunk_len(1000, INSERT_CHUNK), 256);
        assert_eq!(chunk_len(55, INSERT_CHUNK), 32);
        assert_eq!(chunk_len(55, SQLITE_INSERT_CHUNK), 16);
    }

    #[test]
    fn sqlite_inserts_have_a_placeholder_per_value() {
        assert_eq!(INSERT_INTO.matches(',').count() + 1, INSERT_VALUES);
        assert_eq!(row_values(&Record::default()).len(), INSERT_VALUES);
        for p in 0..=SQLITE_INSERT_CHUNK.ilog2() {
            let rows = 1 << p;
            let sql = sqlite_insert(rows);
            assert_eq!(sql.matches('?').count(), rows * INSERT_VALUES, "{sql}");
            assert_eq!(sql.matches('(').count(), rows + 1, "{sql}");
        }
    }
}

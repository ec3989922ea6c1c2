//! Flow labels: what the policy chain has learnt about a session, kept by the host.
//!
//! A module answers a call or a result with labels (`verdict.labels` in `wit/policy.wit`, for
//! example `untrusted-content` after a result carried an injected instruction); the host keeps
//! them per *flow* and hands the flow's labels to every later question in it. A flow is:
//! - on `/mcp` in a 2025-11-25 session: that session (the gateway's own);
//! - on `/mcp` without a session (2026-07-28, stateless), and on `/mcp/{server}` (where a client
//!   holds one session per server, so only its token ties its calls together): the token.
//!
//! Labels applied in a session are applied to its token's flow too, so the same client cannot go
//! around them through `/mcp/{server}`; the token's other sessions on `/mcp` start clean.
//!
//! Bounds: [`MAX_LABELS`] labels per flow (more are dropped and logged), [`MAX_FLOWS`] flows, and
//! a TTL (default 1 h, `flow_ttl` in the config) counted from the flow's last new label. At the
//! flow bound, lapsed flows go first, then flows without labels (a client's name only), an eighth
//! of the table at a time; a flow without labels never displaces a labelled one (its client's name
//! is then not kept), so opening sessions cannot push another session's labels out. Only labelled
//! flows displace labelled ones, those closest to lapsing first. Labels are never removed otherwise: a new
//! session (or, for a token's flow, the TTL or a new token) starts clean.
//!
//! Every label applied is also written to the store (`flow_labels`), and every replica reads the
//! others' every [`POLL`]: on a shared PostgreSQL a label set through one replica holds on the
//! others within a second. The write is queued (bounded); the label holds on this replica at once,
//! and a write that failed is tried again at each poll until the store takes it (or it lapses).

use crate::policy::ClientInfo;
use crate::store::{Store, now_ms};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Labels one flow may carry.
pub const MAX_LABELS: usize = 32;
/// Flows remembered.
pub const MAX_FLOWS: usize = 100_000;
/// How often a replica reads the labels the others applied.
pub const POLL: Duration = Duration::from_millis(250);
/// Labels queued for the store before new ones are only kept locally (and logged).
const QUEUE: usize = 4096;

/// Errors of the flow store's background task.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error("flow labels: {0}")]
    Store(#[from] crate::store::Error),
}

/// The labels of a flow, shared with questions without copying.
pub type Labels = Arc<[String]>;

struct Flow {
    labels: Labels,
    expires_ms: i64,
    /// The client as it named itself in this flow (kept in this process only).
    client: Option<Arc<ClientInfo>>,
}

/// Every flow's labels.
pub struct Flows {
    flows: Mutex<HashMap<String, Flow>>,
    ttl_ms: i64,
    max_flows: usize,
    tx: Option<mpsc::Sender<(String, String, i64)>>,
    empty: Labels,
}

/// The key of a flow: workspace, then the session or token.
pub fn key(workspace: &str, session: Option<&str>, token_id: &str) -> String {
    match session {
        Some(s) => format!("{workspace}\u{1f}s\u{1f}{s}"),
        None => format!("{workspace}\u{1f}t\u{1f}{token_id}"),
    }
}

/// Whether a flow key names a session (else a token).
pub fn is_session(key: &str) -> bool {
    key.split('\u{1f}').nth(1) == Some("s")
}

impl Flows {
    fn new(
        ttl: Duration,
        max_flows: usize,
        tx: Option<mpsc::Sender<(String, String, i64)>>,
    ) -> Flows {
        Flows {
            flows: Mutex::new(HashMap::new()),
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 4),
            max_flows,
            tx,
            empty: Arc::from(Vec::new()),
        }
    }

    /// Flows shared through `store`: loads the unexpired labels, then writes this replica's and
    /// reads the others' in the background (a task on the current runtime).
    pub async fn shared(store: Store, ttl: Duration) -> Result<Arc<Flows>, Error> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let flows = Arc::new(Flows::new(ttl, MAX_FLOWS, Some(tx)));
        let origin = crate::store::random_hex(8)?;
        let mut seen = 0;
        loop {
            let rows = store.flow_labels_since(seen, 10_000).await?;
            let Some(last) = rows.last() else { break };
            seen = last.id;
            for r in &rows {
                flows.merge(&r.flow_key, &r.label, r.expires_ms);
            }
        }
        tokio::spawn(sync(store, Arc::downgrade(&flows), rx, origin, seen));
        Ok(flows)
    }

    /// The labels of flow `key` (sorted; empty when none or lapsed).
    pub fn labels(&self, key: &str) -> Labels {
        let flows = lock(&self.flows);
        match flows.get(key) {
            Some(f) if f.expires_ms > now_ms() => f.labels.clone(),
            _ => self.empty.clone(),
        }
    }

    /// The labels of flow `key` and the client it named, in one look.
    pub fn state(&self, key: &str) -> (Labels, Option<Arc<ClientInfo>>) {
        let flows = lock(&self.flows);
        match flows.get(key) {
            Some(f) if f.expires_ms > now_ms() => (f.labels.clone(), f.client.clone()),
            Some(f) => (self.empty.clone(), f.client.clone()),
            None => (self.empty.clone(), None),
        }
    }

    /// Remembers the client flow `key` is spoken by (its `initialize`'s `clientInfo`).
    pub fn set_client(&self, key: &str, client: ClientInfo) {
        let mut flows = lock(&self.flows);
        if !self.make_room(&mut flows, key, false) {
            tracing::debug!("client name not kept: the flow table is full of labelled flows");
            return;
        }
        let expires = now_ms().saturating_add(self.ttl_ms);
        let flow = flows.entry(key.to_owned()).or_insert_with(|| Flow {
            labels: self.empty.clone(),
            expires_ms: expires,
            client: None,
        });
        flow.client = Some(Arc::new(client));
    }

    /// Applies `labels` to flow `key`: returns the ones it did not carry yet (sorted).
    pub fn apply(&self, key: &str, labels: &[String]) -> Vec<String> {
        if labels.is_empty() {
            return Vec::new();
        }
        let expires = now_ms().saturating_add(self.ttl_ms);
        let mut added = Vec::new();
        {
            let mut flows = lock(&self.flows);
            self.make_room(&mut flows, key, true);
            let flow = flows.entry(key.to_owned()).or_insert_with(|| Flow {
                labels: self.empty.clone(),
                expires_ms: expires,
                client: None,
            });
            if flow.expires_ms <= now_ms() {
                flow.labels = self.empty.clone();
            }
            let mut all: Vec<String> = flow.labels.to_vec();
            for l in labels {
                if all.contains(l) || added.contains(l) {
                    continue;
                }
                if all.len() >= MAX_LABELS {
                    tracing::warn!(label = %l, max = MAX_LABELS, "flow label dropped: the flow carries the most it may");
                    continue;
                }
                all.push(l.clone());
                added.push(l.clone());
            }
            all.sort();
            flow.labels = Arc::from(all);
            flow.expires_ms = expires;
        }
        added.sort();
        if let Some(tx) = &self.tx {
            for l in &added {
                if tx.try_send((key.to_owned(), l.clone(), expires)).is_err() {
                    tracing::error!(label = %l, "flow label not shared with other replicas: the queue is full");
                }
            }
        }
        added
    }

    /// A label another replica applied.
    fn merge(&self, key: &str, label: &str, expires_ms: i64) {
        let mut flows = lock(&self.flows);
        self.make_room(&mut flows, key, true);
        let flow = flows.entry(key.to_owned()).or_insert_with(|| Flow {
            labels: self.empty.clone(),
            expires_ms,
            client: None,
        });
        flow.expires_ms = flow.expires_ms.max(expires_ms);
        if flow.labels.iter().any(|l| l == label) || flow.labels.len() >= MAX_LABELS {
            return;
        }
        let mut all = flow.labels.to_vec();
        all.push(label.to_owned());
        all.sort();
        flow.labels = Arc::from(all);
    }

    /// Before adding `key` (a flow that will carry labels when `labelled`): whether there is
    /// room. At the bound, lapsed flows go; then, still full, flows without labels, an eighth of
    /// the table at once (so the sweep is not paid per insert); then, for a labelled flow only,
    /// the labelled flows closest to lapsing, an eighth at once. An unlabelled flow finds no room
    /// in a table full of labelled ones.
    fn make_room(&self, flows: &mut HashMap<String, Flow>, key: &str, labelled: bool) -> bool {
        if flows.len() < self.max_flows || flows.contains_key(key) {
            return true;
        }
        let now = now_ms();
        flows.retain(|_, f| f.expires_ms > now);
        let keep = self.max_flows - (self.max_flows / 8).max(1);
        if flows.len() >= self.max_flows {
            let mut excess = flows.len() - keep;
            flows.retain(|_, f| {
                if excess > 0 && f.labels.is_empty() {
                    excess -= 1;
                    return false;
                }
                true
            });
        }
        if flows.len() < self.max_flows {
            return true;
        }
        if !labelled {
            return false;
        }
        let mut by_expiry: Vec<(i64, String)> = flows
            .iter()
            .map(|(k, f)| (f.expires_ms, k.clone()))
            .collect();
        let excess = flows.len() - keep;
        by_expiry.select_nth_unstable(excess - 1);
        for (_, k) in &by_expiry[..excess] {
            flows.remove(k);
        }
        true
    }

    /// Flows held.
    pub fn len(&self) -> usize {
        lock(&self.flows).len()
    }

    /// True when no flow is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Writes this replica's labels, reads the others', prunes lapsed rows; ends with the flows.
async fn sync(
    store: Store,
    flows: std::sync::Weak<Flows>,
    mut rx: mpsc::Receiver<(String, String, i64)>,
    origin: String,
    mut seen: i64,
) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Rows committed out of id order (concurrent writers on PostgreSQL) are caught by reading
    // again from where the log stood a few polls ago; applying a label twice changes nothing.
    let mut marks: std::collections::VecDeque<i64> = std::collections::VecDeque::new();
    let mut polls: u64 = 0;
    // Labels whose write failed: written again at each poll until the store takes them (at
    // most QUEUE kept; past that the oldest are only held here, and logged).
    let mut unwritten: Vec<(String, String, i64)> = Vec::new();
    loop {
        tokio::select! {
            first = rx.recv() => {
                let Some(first) = first else { return };
                let mut batch = vec![first];
                while batch.len() < 512 && let Ok(row) = rx.try_recv() {
                    batch.push(row);
                }
                if let Err(e) = store.flow_labels_add(&batch, &origin).await {
                    tracing::warn!(error = %e, labels = batch.len(), "flow labels not written yet; retrying");
                    unwritten.extend(batch);
                    if unwritten.len() > QUEUE {
                        let dropped = unwritten.len() - QUEUE;
                        unwritten.drain(..dropped);
                        tracing::error!(labels = dropped, "flow labels not shared with other replicas: the store keeps failing");
                    }
                }
            }
            _ = tick.tick() => {
                let Some(flows) = flows.upgrade() else { return };
                let now = now_ms();
                unwritten.retain(|(_, _, expires)| *expires > now);
                if !unwritten.is_empty() {
                    match store.flow_labels_add(&unwritten, &origin).await {
                        Ok(()) => {
                            tracing::info!(labels = unwritten.len(), "flow labels written after a failure");
                            unwritten.clear();
                        }
                        Err(e) => tracing::warn!(error = %e, labels = unwritten.len(), "flow labels still not written"),
                    }
                }
                marks.push_back(seen);
                let from = if marks.len() > 8 { marks.pop_front().unwrap_or(seen) } else { marks[0] };
                match store.flow_labels_since(from, 10_000).await {
                    Ok(rows) => {
                        for r in rows.iter().filter(|r| r.origin != origin) {
                            flows.merge(&r.flow_key, &r.label, r.expires_ms);
                        }
                        if let Some(last) = rows.last() {
                            seen = seen.max(last.id);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read other replicas' flow labels"),
                }
                polls += 1;
                if polls.is_multiple_of(240) && let Err(e) = store.flow_labels_prune().await {
                    tracing::warn!(error = %e, "cannot prune lapsed flow labels");
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_accumulate_sorted_and_bounded() {
        let f = Flows::new(Duration::from_secs(60), 3, None);
        let k = key("ws", Some("s1"), "tok");
        assert!(f.labels(&k).is_empty());
        assert_eq!(f.apply(&k, &["b".into(), "a".into()]), vec!["a", "b"]);
        assert_eq!(f.apply(&k, &["a".into(), "c".into()]), vec!["c"]);
        assert_eq!(&*f.labels(&k), &["a", "b", "c"]);
        assert!(
            f.labels(&key("ws", None, "tok")).is_empty(),
            "the token's flow is another"
        );
        let many: Vec<String> = (0..MAX_LABELS + 5).map(|i| format!("l{i:02}")).collect();
        f.apply(&k, &many);
        assert_eq!(f.labels(&k).len(), MAX_LABELS);
        // Past the flow bound, the one closest to lapsing goes.
        f.apply("x", &["a".into()]);
        f.apply("y", &["a".into()]);
        assert_eq!(f.len(), 3);
        f.apply("z", &["a".into()]);
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn sessions_without_labels_never_push_labelled_flows_out() {
        let f = Flows::new(Duration::from_secs(60), 16, None);
        let client = || ClientInfo {
            name: "c".into(),
            version: "1".into(),
        };
        for i in 0..8 {
            f.apply(&format!("labelled{i}"), &["untrusted-content".into()]);
        }
        // Thousands of new sessions naming their client: they take turns in the other half.
        for i in 0..5000 {
            f.set_client(&format!("churn{i}"), client());
            assert!(f.len() <= 16);
        }
        for i in 0..8 {
            assert_eq!(&*f.labels(&format!("labelled{i}")), &["untrusted-content"]);
        }
        // A table full of labelled flows keeps them all; a client name finds no room.
        for i in 8..16 {
            f.apply(&format!("labelled{i}"), &["x".into()]);
        }
        assert_eq!(f.len(), 16);
        f.set_client("late", client());
        assert_eq!(f.state("late").1, None);
        for i in 0..16 {
            assert!(!f.labels(&format!("labelled{i}")).is_empty(), "labelled{i}");
        }
        // A new labelled flow makes room among labelled ones: an eighth goes at once.
        f.apply("newcomer", &["y".into()]);
        assert_eq!(&*f.labels("newcomer"), &["y"]);
        assert_eq!(f.len(), 15);
    }

    #[tokio::test]
    async fn a_label_whose_write_failed_is_written_once_the_store_takes_it() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.unwrap();
        let flows = Flows::shared(store.clone(), Duration::from_secs(600))
            .await
            .unwrap();
        // Another connection hides the table: the write fails.
        let raw = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query("ALTER TABLE flow_labels RENAME TO flow_labels_away")
            .execute(&raw)
            .await
            .unwrap();
        flows.apply("k", &["untrusted-content".into()]);
        tokio::time::sleep(POLL * 2).await;
        sqlx::query("ALTER TABLE flow_labels_away RENAME TO flow_labels")
            .execute(&raw)
            .await
            .unwrap();
        let start = std::time::Instant::now();
        loop {
            let rows = store.flow_labels_since(0, 10).await.unwrap();
            if rows
                .iter()
                .any(|r| r.flow_key == "k" && r.label == "untrusted-content")
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the label was never written"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[test]
    fn labels_lapse_after_the_ttl() {
        let f = Flows::new(Duration::from_millis(0), 10, None);
        f.apply("k", &["a".into()]);
        assert!(f.labels("k").is_empty());
    }
}

//! Listing verdicts, remembered per chain.
//!
//! The built-in allowlist's listing answer is a function of the question without its request id:
//! who asks (workspace, member, grants), the server and the tool. So a chain whose listing phase
//! is the allowlist alone answers the same listing question the same way until it is replaced, and
//! the answer is kept here: a `tools/call` costs its listing one hash lookup instead of a Wasm
//! evaluation after the first call, and a `tools/list` response one per tool. A chain with another
//! listing-phase module (which may keep state, or read the request id) does not use it.
//!
//! - The cache belongs to one [`super::PolicyChain`]; a reload builds a new chain, so a new or
//!   changed module never sees an answer an old one gave.
//! - The key is the whole question's content (not a pointer), so a grant added or removed is a
//!   different question and is evaluated afresh.
//! - A fault (a trap, a timeout, malformed output) is not remembered: it says nothing about the
//!   question, and the next ask evaluates again.
//! - Bounded: past [`MAX_ENTRIES`] or [`MAX_BYTES`] of keys it starts over empty.

use super::{Principal, Question, Verdict};
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most questions remembered before the cache starts over.
pub const MAX_ENTRIES: usize = 16 * 1024;
/// Most key bytes (names and grants) remembered before the cache starts over.
pub const MAX_BYTES: usize = 8 * 1024 * 1024;

/// A listing question as remembered: everything but the request id.
struct Key {
    principal: Principal,
    server: String,
    tool: String,
}

impl Key {
    fn matches(&self, q: &Question<'_>) -> bool {
        self.server == q.server
            && self.tool == q.tool
            && self.principal.workspace == q.principal.workspace
            && self.principal.member == q.principal.member
            && self.principal.grants == q.principal.grants
    }

    fn bytes(&self, verdict: &Verdict) -> usize {
        let p = &self.principal;
        let verdict = match verdict {
            Verdict::Allow => 0,
            Verdict::Deny(d) => d.module.len() + d.digest.len() + d.code.len() + d.reason.len(),
        };
        p.workspace.len()
            + p.member.as_ref().map_or(0, String::len)
            + p.grants.iter().map(|g| g.len() + 24).sum::<usize>()
            + self.server.len()
            + self.tool.len()
            + verdict
            + 128
    }
}

#[derive(Default)]
struct Entries {
    /// Buckets by the key's hash; a bucket almost always holds one entry.
    buckets: HashMap<u64, Vec<(Key, Verdict)>>,
    len: usize,
    bytes: usize,
}

/// Remembered listing verdicts of one chain.
#[derive(Default)]
pub struct ListingCache {
    /// Keyed per process, so nobody can aim names at one bucket.
    hasher: RandomState,
    entries: RwLock<Entries>,
    hits: AtomicU64,
}

impl ListingCache {
    fn hash(&self, q: &Question<'_>) -> u64 {
        let p = q.principal;
        self.hasher
            .hash_one((q.server, q.tool, &p.workspace, &p.member, &p.grants))
    }

    /// The remembered verdict of this listing question, if any.
    pub fn get(&self, q: &Question<'_>) -> Option<Verdict> {
        let hash = self.hash(q);
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let verdict = entries
            .buckets
            .get(&hash)?
            .iter()
            .find(|(key, _)| key.matches(q))
            .map(|(_, verdict)| verdict.clone())?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(verdict)
    }

    /// Remembers the verdict of a listing question. Faults are not remembered.
    pub fn put(&self, q: &Question<'_>, verdict: &Verdict) {
        if matches!(verdict, Verdict::Deny(d) if d.fault) {
            return;
        }
        let key = Key {
            principal: q.principal.clone(),
            server: q.server.to_owned(),
            tool: q.tool.to_owned(),
        };
        let hash = self.hash(q);
        let size = key.bytes(verdict);
        if size > MAX_BYTES / 16 {
            return;
        }
        // Declared before the guard, so that starting over frees the old entries after the lock
        // is released, not under it.
        let mut _old = None;
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len >= MAX_ENTRIES || entries.bytes + size > MAX_BYTES {
            _old = Some(std::mem::take(&mut *entries));
        }
        let bucket = entries.buckets.entry(hash).or_default();
        if bucket.iter().any(|(k, _)| k.matches(q)) {
            return;
        }
        bucket.push((key, verdict.clone()));
        entries.len += 1;
        entries.bytes += size;
    }

    /// Listing questions answered from the cache since the chain went live.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Questions remembered now.
    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).len
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Denial;

    fn principal(grants: &[&str]) -> Principal {
        Principal {
            workspace: "acme".into(),
            member: Some("alice".into()),
            grants: grants.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn question<'a>(p: &'a Principal, tool: &'a str, request_id: &'a str) -> Question<'a> {
        Question {
            request_id,
            principal: p,
            server: "db",
            tool,
            arguments: None,
            facts: None,
            client: None,
            labels: &[],
        }
    }

    fn denial(fault: bool) -> Verdict {
        Verdict::Deny(Denial {
            module: "m".into(),
            digest: String::new(),
            code: "c".into(),
            reason: "r".into(),
            fault,
        })
    }

    #[test]
    fn the_same_question_under_another_request_id_is_answered_from_memory() {
        let cache = ListingCache::default();
        let p = principal(&["db:*"]);
        assert_eq!(cache.get(&question(&p, "query", "r1")), None);
        cache.put(&question(&p, "query", "r1"), &Verdict::Allow);
        assert_eq!(
            cache.get(&question(&p, "query", "r2")),
            Some(Verdict::Allow)
        );
        assert_eq!(cache.hits(), 1);
        assert_eq!(cache.get(&question(&p, "schema", "r3")), None);
    }

    #[test]
    fn every_part_of_the_principal_is_part_of_the_question() {
        let cache = ListingCache::default();
        let p = principal(&["db:*"]);
        cache.put(&question(&p, "query", "r"), &Verdict::Allow);
        let fewer = principal(&[]);
        let more = principal(&["db:*", "ci:*"]);
        let other_member = Principal {
            member: Some("bob".into()),
            ..p.clone()
        };
        let workspace_token = Principal {
            member: None,
            ..p.clone()
        };
        let other_workspace = Principal {
            workspace: "globex".into(),
            ..p.clone()
        };
        for other in [fewer, more, other_member, workspace_token, other_workspace] {
            assert_eq!(
                cache.get(&question(&other, "query", "r")),
                None,
                "{other:?}"
            );
        }
        let other_server = Question {
            server: "ci",
            ..question(&p, "query", "r")
        };
        assert_eq!(cache.get(&other_server), None);
    }

    #[test]
    fn denials_are_remembered_and_faults_are_not() {
        let cache = ListingCache::default();
        let p = principal(&[]);
        cache.put(&question(&p, "query", "r"), &denial(false));
        assert_eq!(cache.get(&question(&p, "query", "r")), Some(denial(false)));
        cache.put(&question(&p, "schema", "r"), &denial(true));
        assert_eq!(cache.get(&question(&p, "schema", "r")), None);
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = ListingCache::default();
        let p = principal(&["db:*"]);
        let tools: Vec<String> = (0..MAX_ENTRIES + 10).map(|i| format!("t{i}")).collect();
        for t in &tools {
            cache.put(&question(&p, t, "r"), &Verdict::Allow);
        }
        assert!(cache.len() <= MAX_ENTRIES, "{}", cache.len());
        assert!(!cache.is_empty());
        // A question too large to be worth remembering is not.
        let huge = principal(&[&"x".repeat(MAX_BYTES)]);
        cache.put(&question(&huge, "query", "r"), &Verdict::Allow);
        assert_eq!(cache.get(&question(&huge, "query", "r")), None);
        // Large principals count against the byte bound.
        let cache = ListingCache::default();
        let big = principal(&[&"x".repeat(256 * 1024)]);
        for t in &tools[..64] {
            cache.put(&question(&big, t, "r"), &Verdict::Allow);
        }
        assert!(cache.len() <= MAX_BYTES / (256 * 1024), "{}", cache.len());
        assert!(!cache.is_empty());
    }
}

//! The one session registry: which token a session belongs to, bounded in total and per token.
//!
//! Both endpoints use it. On `/mcp/{server}` it binds the session ids an upstream issued (in the
//! response to the request that opened the session) to the token that opened them, keyed by
//! workspace, server and id; on `/mcp` it holds the sessions the gateway itself issues. A request
//! naming a session that is not its token's gets 404, the specified signal to open a new one. Past
//! the bounds the oldest sessions are forgotten first: the token's own when it holds too many (a
//! member opening sessions in a loop only forgets theirs), else the oldest of all.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Sessions remembered in all.
pub const MAX_SESSIONS: usize = 100_000;

/// Longest session id accepted (the spec allows visible ASCII; real ids are UUIDs or hashes).
pub const MAX_SESSION_ID: usize = 128;

/// Session key → owning token, with insertion order for eviction.
pub struct Sessions {
    inner: Mutex<Inner>,
    max_total: usize,
    max_per_owner: usize,
}

#[derive(Default)]
struct Inner {
    /// Key → (owner, generation of this binding).
    owners: HashMap<String, (String, u64)>,
    /// Bindings in the order made; entries whose generation no longer matches are stale.
    order: VecDeque<(String, u64)>,
    /// Per owner, their bindings in the order made (stale entries skipped the same way).
    by_owner: HashMap<String, VecDeque<(String, u64)>>,
    next: u64,
}

impl Inner {
    fn live(&self, key: &str, generation: u64) -> bool {
        self.owners.get(key).is_some_and(|(_, g)| *g == generation)
    }

    fn remove(&mut self, key: &str) {
        if let Some((owner, _)) = self.owners.remove(key)
            && let Some(q) = self.by_owner.get_mut(&owner)
        {
            q.retain(|(k, _)| k != key);
            if q.is_empty() {
                self.by_owner.remove(&owner);
            }
        }
    }

    /// Drops stale entries from the global order once they outnumber live ones.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.owners.len() + 1024 {
            let owners = &self.owners;
            self.order
                .retain(|(k, g)| owners.get(k).is_some_and(|(_, live)| live == g));
        }
    }
}

impl Sessions {
    /// A registry holding at most `max_total` sessions, `max_per_owner` of them one token's.
    pub fn new(max_total: usize, max_per_owner: usize) -> Sessions {
        Sessions {
            inner: Mutex::new(Inner::default()),
            max_total,
            max_per_owner,
        }
    }

    /// True when `key` is bound to `owner`.
    pub fn owned_by(&self, key: &str, owner: &str) -> bool {
        lock(&self.inner)
            .owners
            .get(key)
            .is_some_and(|(o, _)| o == owner)
    }

    /// Binds `key` to `owner` (a key already bound keeps its owner), forgetting the oldest
    /// sessions past the bounds.
    pub fn bind(&self, key: String, owner: &str) {
        let mut s = lock(&self.inner);
        if s.owners.contains_key(&key) {
            return;
        }
        let mine = s.by_owner.get(owner).map_or(0, VecDeque::len);
        if mine >= self.max_per_owner
            && let Some((oldest, _)) = s.by_owner.get_mut(owner).and_then(VecDeque::pop_front)
        {
            s.owners.remove(&oldest);
        }
        while s.owners.len() >= self.max_total {
            let Some((oldest, generation)) = s.order.pop_front() else {
                break;
            };
            if s.live(&oldest, generation) {
                s.remove(&oldest);
            }
        }
        s.next += 1;
        let generation = s.next;
        s.order.push_back((key.clone(), generation));
        s.by_owner
            .entry(owner.to_owned())
            .or_default()
            .push_back((key.clone(), generation));
        s.owners.insert(key, (owner.to_owned(), generation));
        s.compact();
    }

    /// Forgets `key`.
    pub fn forget(&self, key: &str) {
        let mut s = lock(&self.inner);
        s.remove(key);
        s.compact();
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        lock(&self.inner).owners.len()
    }
}

/// A poisoned lock still guards consistent data here (every update is a few map operations).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_forget_the_owners_oldest_first_then_the_oldest_of_all() {
        let s = Sessions::new(4, 2);
        s.bind("a1".into(), "a");
        s.bind("a2".into(), "a");
        s.bind("a3".into(), "a");
        assert!(!s.owned_by("a1", "a"), "a's oldest goes first");
        assert!(s.owned_by("a2", "a") && s.owned_by("a3", "a"));
        s.bind("b1".into(), "b");
        s.bind("c1".into(), "c");
        s.bind("d1".into(), "d");
        assert_eq!(s.len(), 4);
        assert!(!s.owned_by("a2", "a"), "then the oldest of all");
        assert!(s.owned_by("d1", "d") && !s.owned_by("d1", "a"));
        s.forget("b1");
        assert!(!s.owned_by("b1", "b"));
        s.bind("b1".into(), "e");
        assert!(s.owned_by("b1", "e"), "a forgotten key can be bound anew");
        s.bind("b1".into(), "f");
        assert!(s.owned_by("b1", "e"), "a bound key keeps its owner");
    }

    #[test]
    fn churn_stays_bounded() {
        let s = Sessions::new(100, 10);
        for i in 0..10_000 {
            s.bind(format!("k{i}"), &format!("o{}", i % 7));
            if i % 3 == 0 {
                s.forget(&format!("k{}", i / 2));
            }
        }
        assert!(s.len() <= 100);
        let inner = lock(&s.inner);
        assert!(inner.order.len() <= 2 * inner.owners.len() + 1024);
        assert!(inner.by_owner.values().all(|q| q.len() <= 10));
    }
}

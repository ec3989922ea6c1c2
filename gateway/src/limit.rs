//! Rate limits on `tools/call`: per caller × tool pattern token buckets, in the host.
//!
//! A limit belongs to a workspace (`rate_limits`, set with `mcpgw limit set`): it names who it
//! binds ([`Subject`]: one member, every holder of a role, or every caller), a `server:tool`
//! pattern, a rate (`N/s`, `N/min`, `N/h`) and a burst. Every caller it binds gets a bucket of
//! its own that holds `burst` calls and refills at the rate; a call matching several limits must
//! find a call in each of their buckets and takes one from each, or takes none and is refused,
//! with the time until the fullest-needed bucket holds a call again.
//!
//! Limits travel with the workspace's settings in the identity snapshot (a change holds within a
//! second on every replica, like a server's). Buckets are per process: with `n` replicas behind a
//! balancer a caller gets up to `n` times the rate in the worst case (and the rate when their
//! calls stick to one replica); `docs/config.md` says so. A call the policy already refused takes
//! nothing from a bucket, and neither does a refused one.
//!
//! A bucket is keyed by the limit's id and the caller (the member's name, or the token id of a
//! workspace token), so there are at most members × limits of them; buckets that have refilled
//! are forgotten (a full bucket and a missing one are the same) whenever the table has doubled.

use crate::identity::Identity;
use crate::metrics::Metrics;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a limit cannot be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The rate is not `N/s`, `N/min` or `N/h` with N ≥ 1.
    #[error("rate {0:?} is not N/s, N/min or N/h with N from 1 to 1000000")]
    Rate(String),
    /// The subject is not `member:NAME`, `role:NAME`, `*` or a name.
    #[error("subject {0:?} is not member:NAME, role:NAME or *")]
    Subject(String),
    /// The burst is out of range.
    #[error("burst {0} is not from 1 to 1000000")]
    Burst(u64),
}

/// Whom a limit binds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// One member, by name.
    Member(String),
    /// Every member holding the role (assigned, or given by their identity provider's groups).
    Role(String),
    /// Every caller of the workspace, the workspace token included: each gets a bucket.
    Everyone,
}

impl Subject {
    /// Reads the stored form: `member:NAME`, `role:NAME` or `*`.
    pub fn parse(stored: &str) -> Result<Subject, Error> {
        match stored.split_once(':') {
            _ if stored == "*" => Ok(Subject::Everyone),
            Some(("member", name)) if !name.is_empty() => Ok(Subject::Member(name.to_owned())),
            Some(("role", name)) if !name.is_empty() => Ok(Subject::Role(name.to_owned())),
            _ => Err(Error::Subject(stored.to_owned())),
        }
    }

    /// Whether the limit binds this caller.
    pub fn covers(&self, who: &Identity) -> bool {
        match self {
            Subject::Everyone => true,
            Subject::Member(name) => who.principal.member.as_deref() == Some(name),
            Subject::Role(role) => who.roles.iter().any(|r| r == role),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Member(n) => write!(f, "member:{n}"),
            Subject::Role(n) => write!(f, "role:{n}"),
            Subject::Everyone => f.write_str("*"),
        }
    }
}

/// The largest N of a rate, and the largest burst.
pub const MAX_CALLS: u64 = 1_000_000;

/// Calls per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Calls.
    pub calls: u64,
    /// Per this many milliseconds.
    pub period_ms: u64,
}

impl Rate {
    /// Reads `N/s`, `N/min` or `N/h` (also `sec`, `second`, `m`, `minute`, `hour`).
    pub fn parse(text: &str) -> Result<Rate, Error> {
        let bad = || Error::Rate(text.to_owned());
        let (n, unit) = text.trim().split_once('/').ok_or_else(bad)?;
        let calls: u64 = n.trim().parse().map_err(|_| bad())?;
        if !(1..=MAX_CALLS).contains(&calls) {
            return Err(bad());
        }
        let period_ms = match unit.trim() {
            "s" | "sec" | "second" => 1_000,
            "m" | "min" | "minute" => 60_000,
            "h" | "hour" => 3_600_000,
            _ => return Err(bad()),
        };
        Ok(Rate { calls, period_ms })
    }

    /// A stored rate; `None` when it is out of range.
    pub fn stored(calls: i64, period_ms: i64) -> Option<Rate> {
        let calls = u64::try_from(calls)
            .ok()
            .filter(|c| (1..=MAX_CALLS).contains(c))?;
        let period_ms = u64::try_from(period_ms).ok().filter(|p| *p > 0)?;
        Some(Rate { calls, period_ms })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.period_ms {
            1_000 => write!(f, "{}/s", self.calls),
            60_000 => write!(f, "{}/min", self.calls),
            3_600_000 => write!(f, "{}/h", self.calls),
            ms => write!(f, "{}/{ms}ms", self.calls),
        }
    }
}

/// Checks a burst.
pub fn check_burst(burst: u64) -> Result<u64, Error> {
    if (1..=MAX_CALLS).contains(&burst) {
        Ok(burst)
    } else {
        Err(Error::Burst(burst))
    }
}

/// One limit of a workspace, as calls are checked against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// Its row id: with the caller, the key of a bucket.
    pub id: i64,
    /// Whom it binds.
    pub subject: Subject,
    /// The `server:tool` pattern of the calls it counts.
    pub pattern: String,
    /// How fast a bucket refills.
    pub rate: Rate,
    /// How many calls a bucket holds.
    pub burst: u64,
}

impl Limit {
    /// Whether a call by `who` to `server:tool` counts against this limit.
    pub fn applies(&self, who: &Identity, server: &str, tool: &str) -> bool {
        self.subject.covers(who) && policy_sdk::pattern::grant_matches(&self.pattern, server, tool)
    }
}

/// A call refused by a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// When the caller may try again.
    pub retry_after: Duration,
    /// The limit that refused (the one that frees up last, when several did).
    pub subject: Subject,
    /// Its pattern.
    pub pattern: String,
    /// Its rate.
    pub rate: Rate,
}

impl Refused {
    /// The refusal as the client and the audit trail read it.
    pub fn reason(&self, server: &str, tool: &str) -> String {
        format!(
            "rate limit {} on {} for {} reached by this call to {server}:{tool}; retry in {:.1} s",
            self.rate,
            self.pattern,
            self.subject,
            self.retry_after.as_secs_f64()
        )
    }
}

/// Calls a bucket holds, and when it was last refilled.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    calls: f64,
    at: Instant,
}

impl Bucket {
    /// The bucket refilled up to `now` at `limit`'s rate, capped at its burst.
    fn refilled(self, limit: &Limit, now: Instant) -> Bucket {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        let per_sec = limit.rate.calls as f64 * 1000.0 / limit.rate.period_ms as f64;
        Bucket {
            calls: (self.calls + elapsed * per_sec).min(limit.burst as f64),
            at: now,
        }
    }

    /// How long until it holds one call.
    fn wait(&self, limit: &Limit) -> Duration {
        let missing = (1.0 - self.calls).max(0.0);
        let ms_per_call = limit.rate.period_ms as f64 / limit.rate.calls as f64;
        // Rounded up to the millisecond: a client that waits this long finds the call.
        Duration::from_millis((missing * ms_per_call).ceil() as u64)
    }
}

/// The buckets of this process.
#[derive(Debug)]
pub struct Limiter {
    inner: Mutex<Buckets>,
    /// Where refusals are counted.
    metrics: Arc<Metrics>,
}

#[derive(Debug)]
struct Buckets {
    /// Limit id → caller → bucket (nested so a call looks its bucket up by `&str`).
    by_limit: HashMap<i64, HashMap<Box<str>, Bucket>>,
    /// Buckets held.
    count: usize,
    /// At this many, refilled buckets are forgotten.
    sweep_at: usize,
}

/// The table is first swept at this many buckets, then whenever it has doubled since.
const FIRST_SWEEP: usize = 10_000;

impl Limiter {
    /// No buckets yet; refusals are counted in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Limiter {
        Limiter {
            inner: Mutex::new(Buckets {
                by_limit: HashMap::new(),
                count: 0,
                sweep_at: FIRST_SWEEP,
            }),
            metrics,
        }
    }

    /// Counts a refusal (`enforced`: the call was refused; else it went ahead as a
    /// would-deny).
    pub fn count_refusal(&self, enforced: bool) {
        self.metrics.rate_limited[usize::from(!enforced)].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one call from the bucket of each of `limits` that applies to this call by `who`,
    /// or none when one of them is empty: then says which and when to retry.
    pub fn take(
        &self,
        limits: &[Limit],
        who: &Identity,
        server: &str,
        tool: &str,
    ) -> Result<(), Refused> {
        self.take_at(limits, who, server, tool, Instant::now())
    }

    fn take_at(
        &self,
        limits: &[Limit],
        who: &Identity,
        server: &str,
        tool: &str,
        now: Instant,
    ) -> Result<(), Refused> {
        if limits.is_empty() {
            return Ok(());
        }
        let caller = who
            .principal
            .member
            .as_deref()
            .unwrap_or(who.token_id.as_str());
        let mut b = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut refused: Option<(Duration, &Limit)> = None;
        let mut any = false;
        for limit in limits.iter().filter(|l| l.applies(who, server, tool)) {
            any = true;
            let bucket = b
                .by_limit
                .get(&limit.id)
                .and_then(|m| m.get(caller))
                .map(|bucket| bucket.refilled(limit, now));
            if let Some(bucket) = bucket
                && bucket.calls < 1.0
            {
                let wait = bucket.wait(limit);
                if refused.is_none_or(|(w, _)| wait > w) {
                    refused = Some((wait, limit));
                }
            }
        }
        if let Some((retry_after, limit)) = refused {
            return Err(Refused {
                retry_after,
                subject: limit.subject.clone(),
                pattern: limit.pattern.clone(),
                rate: limit.rate,
            });
        }
        if !any {
            return Ok(());
        }
        for limit in limits.iter().filter(|l| l.applies(who, server, tool)) {
            let callers = b.by_limit.entry(limit.id).or_default();
            match callers.get_mut(caller) {
                Some(bucket) => {
                    let mut next = bucket.refilled(limit, now);
                    next.calls -= 1.0;
                    *bucket = next;
                }
                None => {
                    callers.insert(
                        caller.into(),
                        Bucket {
                            calls: limit.burst as f64 - 1.0,
                            at: now,
                        },
                    );
                    b.count += 1;
                }
            }
        }
        if b.count >= b.sweep_at {
            b.sweep(limits, now);
        }
        Ok(())
    }

    /// Buckets held now (tests, metrics).
    pub fn buckets(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).count
    }
}

impl Buckets {
    /// Forgets the buckets that have refilled. A bucket of a limit not in `known` (another
    /// workspace's, or one removed) is kept until a sweep that knows its limit, unless it has
    /// been left alone for an hour (no rate refills slower than that).
    fn sweep(&mut self, known: &[Limit], now: Instant) {
        let idle = Duration::from_secs(3600);
        self.by_limit.retain(|id, callers| {
            let limit = known.iter().find(|l| l.id == *id);
            callers.retain(|_, bucket| match limit {
                Some(l) => bucket.refilled(l, now).calls < l.burst as f64,
                None => now.saturating_duration_since(bucket.at) < idle,
            });
            !callers.is_empty()
        });
        self.count = self.by_limit.values().map(HashMap::len).sum();
        self.sweep_at = (self.count * 2).max(FIRST_SWEEP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::policy::Principal;

    fn who(member: Option<&str>, roles: &[&str]) -> Identity {
        let ws = Arc::new(crate::identity::WorkspaceView {
            name: "acme".into(),
            enforce: true,
            servers: Default::default(),
            idp: None,
            limits: Vec::new(),
        });
        let mut id = Identity::signed_in(
            "tok_1".into(),
            Principal {
                workspace: "acme".into(),
                member: member.map(str::to_owned),
                grants: vec![],
            },
            ws,
            "sub".into(),
            "iss".into(),
        );
        id.roles = roles.iter().map(|r| r.to_string()).collect();
        id
    }

    fn limit(id: i64, subject: &str, pattern: &str, rate: &str, burst: u64) -> Limit {
        Limit {
            id,
            subject: Subject::parse(subject).unwrap(),
            pattern: pattern.into(),
            rate: Rate::parse(rate).unwrap(),
            burst,
        }
    }

    impl Default for Limiter {
        fn default() -> Self {
            Limiter::new(Arc::new(Metrics::default()))
        }
    }

    #[test]
    fn rates_and_subjects_parse() {
        assert_eq!(
            Rate::parse("10/min").unwrap(),
            Rate {
                calls: 10,
                period_ms: 60_000
            }
        );
        assert_eq!(Rate::parse("3/s").unwrap().to_string(), "3/s");
        assert_eq!(Rate::parse(" 2 / h ").unwrap().to_string(), "2/h");
        for bad in ["0/s", "10", "x/s", "10/day", "-1/s", "10000001/s", "/s"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Subject::parse("*").unwrap(), Subject::Everyone);
        assert_eq!(Subject::parse("role:dev").unwrap().to_string(), "role:dev");
        for bad in ["", "alice", "member:", "team:x", "**"] {
            assert!(Subject::parse(bad).is_err(), "{bad}");
        }
        assert!(check_burst(0).is_err());
        assert!(check_burst(MAX_CALLS + 1).is_err());
    }

    #[test]
    fn a_burst_then_the_rate_then_a_wait_that_is_exact() {
        let limiter = Limiter::default();
        let limits = [limit(1, "member:alice", "ci:deploy", "2/s", 3)];
        let alice = who(Some("alice"), &[]);
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter
                .take_at(&limits, &alice, "ci", "deploy", t0)
                .unwrap();
        }
        let refused = limiter
            .take_at(&limits, &alice, "ci", "deploy", t0)
            .unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_millis(500));
        assert!(refused.reason("ci", "deploy").contains("retry in 0.5 s"));
        // Just before the wait is over: still refused; at it: one call, and no more.
        let early = t0 + Duration::from_millis(499);
        assert!(
            limiter
                .take_at(&limits, &alice, "ci", "deploy", early)
                .is_err()
        );
        let on_time = t0 + Duration::from_millis(500);
        limiter
            .take_at(&limits, &alice, "ci", "deploy", on_time)
            .unwrap();
        assert!(
            limiter
                .take_at(&limits, &alice, "ci", "deploy", on_time)
                .is_err()
        );
        // Other tools, and other members, are not counted.
        limiter
            .take_at(&limits, &alice, "ci", "status", on_time)
            .unwrap();
        limiter
            .take_at(&limits, &who(Some("bob"), &[]), "ci", "deploy", on_time)
            .unwrap();
        // A long wait refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            limiter
                .take_at(&limits, &alice, "ci", "deploy", later)
                .unwrap();
        }
        assert!(
            limiter
                .take_at(&limits, &alice, "ci", "deploy", later)
                .is_err()
        );
    }

    #[test]
    fn every_matching_limit_must_have_a_call_and_a_refusal_takes_none() {
        let limiter = Limiter::default();
        let limits = [
            limit(1, "*", "ci:*", "10/s", 10),
            limit(2, "role:intern", "ci:deploy", "1/min", 1),
        ];
        let intern = who(Some("ivy"), &["intern"]);
        let t0 = Instant::now();
        limiter
            .take_at(&limits, &intern, "ci", "deploy", t0)
            .unwrap();
        let refused = limiter
            .take_at(&limits, &intern, "ci", "deploy", t0)
            .unwrap_err();
        assert_eq!(refused.subject, Subject::Role("intern".into()));
        assert_eq!(refused.retry_after, Duration::from_secs(60));
        // The refused call took nothing from the `*` bucket: nine left of ten.
        for _ in 0..9 {
            limiter
                .take_at(&limits, &intern, "ci", "status", t0)
                .unwrap();
        }
        assert!(
            limiter
                .take_at(&limits, &intern, "ci", "status", t0)
                .is_err()
        );
        // The workspace token has a bucket of its own under `*`.
        let system = who(None, &[]);
        limiter
            .take_at(&limits, &system, "ci", "status", t0)
            .unwrap();
    }

    #[test]
    fn refilled_buckets_are_forgotten() {
        let limiter = Limiter::default();
        let limits = [limit(7, "*", "*:*", "1000/s", 5)];
        let t0 = Instant::now();
        for i in 0..FIRST_SWEEP {
            let caller = who(Some(&format!("m{i}")), &[]);
            limiter.take_at(&limits, &caller, "a", "b", t0).unwrap();
        }
        // The sweep at the bound ran at t0, when every bucket still missed a call.
        assert_eq!(limiter.buckets(), FIRST_SWEEP);
        let later = t0 + Duration::from_secs(1);
        for i in 0..FIRST_SWEEP * 2 {
            let caller = who(Some(&format!("n{i}")), &[]);
            limiter.take_at(&limits, &caller, "a", "b", later).unwrap();
        }
        // At 2 × FIRST_SWEEP the first ones had refilled and went.
        assert_eq!(limiter.buckets(), FIRST_SWEEP * 2);
    }
}

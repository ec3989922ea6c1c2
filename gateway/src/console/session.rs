//! Console sign-in sessions: a random id in an `HttpOnly`, `SameSite=Strict` cookie, kept in
//! this process's memory under its SHA-256 (a lookup leaks nothing about a live id), each with
//! its own CSRF token and a one-shot flash message. Bounded in number and in age.

use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq as _;

/// How long a sign-in lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Most sessions kept at once; signing in beyond it ends the session closest to expiry.
const MAX_SESSIONS: usize = 1024;
/// Failed sign-ins allowed per [`FAILURE_WINDOW`] before sign-in is refused for the rest of it.
const MAX_FAILURES: usize = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Name of the session cookie.
pub const COOKIE: &str = "mcpgw_console";
/// Name of the sign-in form's double-submit cookie.
pub const LOGIN_COOKIE: &str = "mcpgw_console_login";

/// A message shown once on the next page.
#[derive(Clone, Debug)]
pub struct Flash {
    /// `ok` or `error`: the CSS class.
    pub kind: &'static str,
    /// The text (escaped when rendered).
    pub text: String,
}

/// One signed-in browser.
#[derive(Clone, Debug)]
pub struct Session {
    /// The CSRF token every state-changing form must carry.
    pub csrf: String,
    expires: Instant,
    flash: Option<Flash>,
}

/// Every live session of this process.
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<[u8; 32], Session>>,
    failures: Mutex<VecDeque<Instant>>,
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// 32 random bytes, hex.
pub fn random_token() -> Option<String> {
    crate::store::random_hex(32).ok()
}

/// Constant-time equality of two secrets.
pub fn same_secret(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Sessions {
    /// Starts a session; its id for the cookie.
    pub fn start(&self) -> Option<String> {
        let id = random_token()?;
        let session = Session {
            csrf: random_token()?,
            expires: Instant::now() + SESSION_TTL,
            flash: None,
        };
        let mut live = lock(&self.live);
        if live.len() >= MAX_SESSIONS {
            let now = Instant::now();
            live.retain(|_, s| s.expires > now);
            if live.len() >= MAX_SESSIONS
                && let Some(oldest) = live.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
            {
                live.remove(&oldest);
            }
        }
        live.insert(key(&id), session);
        Some(id)
    }

    /// The live session of this id, taking its flash message.
    pub fn get(&self, id: &str) -> Option<(Session, Option<Flash>)> {
        let mut live = lock(&self.live);
        let k = key(id);
        let session = live.get_mut(&k)?;
        if session.expires <= Instant::now() {
            live.remove(&k);
            return None;
        }
        let flash = session.flash.take();
        Some((session.clone(), flash))
    }

    /// Sets the message the session's next page shows.
    pub fn flash(&self, id: &str, flash: Flash) {
        if let Some(s) = lock(&self.live).get_mut(&key(id)) {
            s.flash = Some(flash);
        }
    }

    /// Ends a session.
    pub fn end(&self, id: &str) {
        lock(&self.live).remove(&key(id));
    }

    /// Records a failed sign-in.
    pub fn failed_sign_in(&self) {
        let mut f = lock(&self.failures);
        f.push_back(Instant::now());
        while f.len() > MAX_FAILURES * 2 {
            f.pop_front();
        }
    }

    /// Whether sign-in is open: fewer than [`MAX_FAILURES`] failures in the last minute.
    pub fn sign_in_open(&self) -> bool {
        let mut f = lock(&self.failures);
        while f.front().is_some_and(|t| t.elapsed() > FAILURE_WINDOW) {
            f.pop_front();
        }
        f.len() < MAX_FAILURES
    }

    /// How many sessions are live (expired ones included until next pruned).
    pub fn len(&self) -> usize {
        lock(&self.live).len()
    }

    /// No session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_id_only_and_ends() {
        let s = Sessions::default();
        let id = s.start().unwrap();
        let (session, flash) = s.get(&id).unwrap();
        assert_eq!(session.csrf.len(), 64);
        assert!(flash.is_none());
        assert!(s.get("nope").is_none());
        assert!(s.get(&id[..63]).is_none());
        s.flash(
            &id,
            Flash {
                kind: "ok",
                text: "done".into(),
            },
        );
        assert_eq!(s.get(&id).unwrap().1.unwrap().text, "done");
        assert!(s.get(&id).unwrap().1.is_none(), "a flash is shown once");
        s.end(&id);
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn sessions_are_bounded() {
        let s = Sessions::default();
        let first = s.start().unwrap();
        for _ in 0..MAX_SESSIONS + 10 {
            s.start().unwrap();
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.get(&first).is_none(), "the oldest session made room");
    }

    #[test]
    fn sign_in_closes_after_repeated_failures() {
        let s = Sessions::default();
        for _ in 0..MAX_FAILURES - 1 {
            s.failed_sign_in();
        }
        assert!(s.sign_in_open());
        s.failed_sign_in();
        assert!(!s.sign_in_open());
    }
}

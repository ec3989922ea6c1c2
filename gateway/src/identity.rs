//! Who is calling: an in-memory snapshot of every token hash, member, grant, workspace and server,
//! rebuilt from the store whenever it changes, so that authenticating a request is one hash lookup
//! with no database round trip.
//!
//! Changes hold within 100 ms on the process that made them (it reloads right after writing) and
//! within a second on every other process sharing the database: in SQLite, triggers bump a revision
//! counter that every process polls every 100 ms through its pool (`PRAGMA data_version` is per
//! connection, and a pool hands out any connection); PostgreSQL pushes `NOTIFY mcpgw_identity` from
//! triggers, with
//! a full resync every 30 s and after every reconnect in case a notification was lost.

use crate::policy::Principal;
use crate::store::{self, Db, HeaderSpec, Store, TOKEN_PREFIX, Transport, now_ms};
use arc_swap::ArcSwap;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use subtle::ConstantTimeEq as _;

/// Why a bearer token is refused. Each is a 401; the messages never echo the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token")]
    Missing,
    /// Not a token this gateway issued, or revoked.
    #[error("invalid or revoked token")]
    Invalid,
    /// The token's lifetime is over.
    #[error("token expired")]
    Expired,
    /// The credential is valid but its member is disabled.
    #[error("member disabled")]
    Disabled,
    /// A valid identity-provider token naming nobody who is a member (and the workspace does
    /// not create members on first sight).
    #[error("not a member of this workspace")]
    UnknownMember,
    /// A valid identity-provider token without a scope the workspace requires (403).
    #[error("insufficient scope")]
    InsufficientScope,
    /// The identity provider's signing keys could not be fetched and none are cached: every
    /// token of it is refused until they can be.
    #[error("the identity provider's signing keys are unavailable")]
    KeysUnavailable,
}

impl AuthError {
    /// The audit trail's error code for the refusal.
    pub fn code(self) -> &'static str {
        match self {
            AuthError::Missing => "missing-token",
            AuthError::Invalid => "invalid-token",
            AuthError::Expired => "expired-token",
            AuthError::Disabled => "member-disabled",
            AuthError::UnknownMember => "unknown-member",
            AuthError::InsufficientScope => "insufficient-scope",
            AuthError::KeysUnavailable => "idp-unavailable",
        }
    }
}

/// A refused credential: why, and whose it was when the credential itself was good (a disabled
/// member's), so the refusal can be recorded against them.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Why.
    pub error: AuthError,
    /// The credential's holder, when known.
    pub who: Option<Arc<Identity>>,
}

impl PartialEq<AuthError> for Refusal {
    fn eq(&self, other: &AuthError) -> bool {
        self.error == *other
    }
}

impl From<AuthError> for Refusal {
    fn from(error: AuthError) -> Refusal {
        Refusal { error, who: None }
    }
}

/// A workspace as requests see it.
#[derive(Debug)]
pub struct WorkspaceView {
    /// Name.
    pub name: String,
    /// Enforcement switch: off turns denials into would-deny.
    pub enforce: bool,
    /// Upstream servers by name.
    pub servers: HashMap<String, Arc<ServerView>>,
    /// Roles by name: their patterns, sorted.
    pub roles: HashMap<String, Vec<String>>,
    /// Members by name.
    pub members: HashMap<String, Arc<MemberView>>,
    /// The identity provider whose JWTs are accepted as members' credentials, if any.
    pub idp: Option<Arc<store::IdpConfig>>,
}

/// A member as requests see it.
#[derive(Debug)]
pub struct MemberView {
    /// Name in the workspace.
    pub name: String,
    /// Effective grants: their own plus their assigned roles', sorted, without duplicates.
    pub grants: Vec<String>,
    /// Their assigned roles, sorted.
    pub roles: Vec<String>,
    /// Every credential of theirs is refused.
    pub disabled: bool,
}

/// An upstream server as requests see it.
#[derive(Debug, Clone)]
pub struct ServerView {
    /// Name in the workspace.
    pub name: String,
    /// Streamable HTTP endpoint.
    pub url: String,
    /// Headers to inject (values from environment variables are resolved when forwarding).
    pub headers: Vec<HeaderSpec>,
    /// What goes before its tool and prompt names on `/mcp`.
    pub prefix: String,
    /// `url`, parsed once when the snapshot is built; `None` when it does not parse (forwarding
    /// then says why).
    pub uri: Option<http::Uri>,
    /// Its workspace's name (a stdio process is per workspace and server).
    pub workspace: String,
    /// How it is reached: HTTP(S) or a spawned stdio process.
    pub transport: Arc<Transport>,
}

/// An authenticated caller.
#[derive(Debug)]
pub struct Identity {
    /// Token id (`tok_…`), for the audit trail.
    pub token_id: String,
    /// What the policy chain is told: workspace, member, grants.
    pub principal: Principal,
    /// The caller's workspace.
    pub workspace: Arc<WorkspaceView>,
    /// For an identity-provider token: its subject (`sub`) and issuer, for the audit trail.
    pub subject: Option<(String, String)>,
    /// The member is disabled: the credential is refused.
    disabled: bool,
    expires_ms: Option<i64>,
    hash: [u8; 32],
}

impl Identity {
    /// A caller signed in through the workspace's identity provider (its token already checked):
    /// `token_id` names the credential for sessions and the audit trail.
    pub fn signed_in(
        token_id: String,
        principal: Principal,
        workspace: Arc<WorkspaceView>,
        subject: String,
        issuer: String,
    ) -> Identity {
        Identity {
            token_id,
            principal,
            workspace,
            subject: Some((subject, issuer)),
            disabled: false,
            expires_ms: None,
            hash: [0; 32],
        }
    }
}

/// The immutable state one request sees.
#[derive(Debug, Default)]
pub struct Snapshot {
    tokens: HashMap<[u8; 32], Arc<Identity>>,
    workspaces: HashMap<String, Arc<WorkspaceView>>,
}

impl Snapshot {
    fn build(rows: store::Rows) -> Snapshot {
        let mut servers: HashMap<i64, HashMap<String, Arc<ServerView>>> = HashMap::new();
        let workspace_names: HashMap<i64, &str> = rows
            .workspaces
            .iter()
            .map(|(id, name, _)| (*id, name.as_str()))
            .collect();
        for (ws, name, url, headers, prefix, transport) in rows.servers {
            let headers = serde_json::from_str(&headers).unwrap_or_else(|e| {
                tracing::error!(server = %name, error = %e, "stored headers unreadable; sending none");
                Vec::new()
            });
            // A transport this build cannot read is left out rather than guessed at: an
            // unreadable stdio spec must never fall back to something else.
            let transport = match transport.as_deref().map(serde_json::from_str::<Transport>) {
                None => Transport::default(),
                Some(Ok(t)) => t,
                Some(Err(e)) => {
                    tracing::error!(server = %name, error = %e, "stored transport unreadable; server left out");
                    continue;
                }
            };
            servers.entry(ws).or_default().insert(
                name.clone(),
                Arc::new(ServerView {
                    uri: url.parse().ok(),
                    prefix: store::effective_prefix(&name, prefix.as_deref()),
                    workspace: workspace_names
                        .get(&ws)
                        .copied()
                        .unwrap_or_default()
                        .to_owned(),
                    name,
                    url,
                    headers,
                    transport: Arc::new(transport),
                }),
            );
        }
        // Roles: (workspace id, name) by id, and their patterns.
        let mut role_patterns: HashMap<i64, Vec<String>> = HashMap::new();
        for (role, pattern) in rows.role_grants {
            role_patterns.entry(role).or_default().push(pattern);
        }
        let mut roles_of_ws: HashMap<i64, HashMap<String, Vec<String>>> = HashMap::new();
        let mut role_names: HashMap<i64, (i64, String)> = HashMap::new();
        for (id, ws, name) in rows.roles {
            let patterns = role_patterns.remove(&id).unwrap_or_default();
            roles_of_ws
                .entry(ws)
                .or_default()
                .insert(name.clone(), patterns);
            role_names.insert(id, (ws, name));
        }
        let mut grants: HashMap<i64, Vec<String>> = HashMap::new();
        for (member, pattern) in rows.grants {
            grants.entry(member).or_default().push(pattern);
        }
        let mut assigned: HashMap<i64, Vec<String>> = HashMap::new();
        for (member, role) in rows.member_roles {
            if let Some((_, name)) = role_names.get(&role) {
                assigned.entry(member).or_default().push(name.clone());
            }
        }
        let mut members_of_ws: HashMap<i64, HashMap<String, Arc<MemberView>>> = HashMap::new();
        let mut members: HashMap<i64, Arc<MemberView>> = HashMap::new();
        for (id, ws, name, disabled_ms) in rows.members {
            let mut roles = assigned.remove(&id).unwrap_or_default();
            roles.sort();
            let mut effective = grants.remove(&id).unwrap_or_default();
            if let Some(ws_roles) = roles_of_ws.get(&ws) {
                for role in &roles {
                    effective.extend(ws_roles.get(role).into_iter().flatten().cloned());
                }
            }
            effective.sort();
            effective.dedup();
            let view = Arc::new(MemberView {
                name: name.clone(),
                grants: effective,
                roles,
                disabled: disabled_ms.is_some(),
            });
            members_of_ws
                .entry(ws)
                .or_default()
                .insert(name, view.clone());
            members.insert(id, view);
        }
        let mut idps: HashMap<i64, Arc<store::IdpConfig>> = HashMap::new();
        for (ws, json) in rows.idps {
            match serde_json::from_str::<store::IdpConfig>(&json) {
                Ok(c) => {
                    idps.insert(ws, Arc::new(c));
                }
                // Unreadable settings accept no token (never something else).
                Err(e) => {
                    tracing::error!(error = %e, "stored identity-provider settings unreadable; its tokens are refused")
                }
            }
        }
        let workspaces: HashMap<i64, Arc<WorkspaceView>> = rows
            .workspaces
            .into_iter()
            .map(|(id, name, enforce)| {
                let view = WorkspaceView {
                    name,
                    enforce,
                    servers: servers.remove(&id).unwrap_or_default(),
                    roles: roles_of_ws.remove(&id).unwrap_or_default(),
                    members: members_of_ws.remove(&id).unwrap_or_default(),
                    idp: idps.remove(&id),
                };
                (id, Arc::new(view))
            })
            .collect();
        let mut tokens = HashMap::new();
        for (id, ws, member, hash, expires_ms) in rows.tokens {
            let (Some(workspace), Some(digest)) = (workspaces.get(&ws), parse_hash(&hash)) else {
                continue;
            };
            let (member, grants, disabled) = match member {
                Some(m) => match members.get(&m) {
                    Some(view) => (Some(view.name.clone()), view.grants.clone(), view.disabled),
                    None => continue,
                },
                None => (None, Vec::new(), false),
            };
            let principal = Principal {
                workspace: workspace.name.clone(),
                member,
                grants,
            };
            let identity = Identity {
                token_id: id,
                principal,
                workspace: workspace.clone(),
                subject: None,
                disabled,
                expires_ms,
                hash: digest,
            };
            tokens.insert(digest, Arc::new(identity));
        }
        let workspaces = workspaces
            .into_values()
            .map(|w| (w.name.clone(), w))
            .collect();
        Snapshot { tokens, workspaces }
    }

    /// Resolves a bearer token. One SHA-256 and one hash-map lookup; the stored hash is compared
    /// again in constant time.
    pub fn authenticate(&self, token: &str, now_ms: i64) -> Result<Arc<Identity>, Refusal> {
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
            return Err(AuthError::Invalid.into());
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let identity = self.tokens.get(&digest).ok_or(AuthError::Invalid)?;
        if !bool::from(identity.hash.ct_eq(&digest)) {
            return Err(AuthError::Invalid.into());
        }
        if identity.expires_ms.is_some_and(|e| e <= now_ms) {
            return Err(AuthError::Expired.into());
        }
        if identity.disabled {
            return Err(Refusal {
                error: AuthError::Disabled,
                who: Some(identity.clone()),
            });
        }
        Ok(identity.clone())
    }

    /// Every workspace.
    pub fn workspaces(&self) -> impl Iterator<Item = &Arc<WorkspaceView>> {
        self.workspaces.values()
    }

    /// A workspace by name.
    pub fn workspace(&self, name: &str) -> Option<&Arc<WorkspaceView>> {
        self.workspaces.get(name)
    }

    /// Number of live tokens.
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }
}

fn parse_hash(stored: &str) -> Option<[u8; 32]> {
    let hex_digest = stored.strip_prefix("sha256:")?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut out).ok()?;
    Some(out)
}

/// The live snapshot plus the machinery that keeps it current.
pub struct Directory {
    store: Store,
    snapshot: ArcSwap<Snapshot>,
    /// Token ids seen since the last flush, with the time; written to the store in batches.
    used: Mutex<HashMap<String, i64>>,
    reload_lock: tokio::sync::Mutex<()>,
}

impl Directory {
    /// Loads the first snapshot.
    pub async fn open(store: Store) -> Result<Arc<Directory>, store::Error> {
        let snapshot = Snapshot::build(store.rows().await?);
        Ok(Arc::new(Directory {
            store,
            snapshot: ArcSwap::from_pointee(snapshot),
            used: Mutex::new(HashMap::new()),
            reload_lock: tokio::sync::Mutex::new(()),
        }))
    }

    /// The store behind the snapshot.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The current snapshot; hold it for the whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Authenticates a bearer token against the current snapshot and notes its use.
    pub fn authenticate(&self, token: &str) -> Result<Arc<Identity>, Refusal> {
        let now = now_ms();
        let identity = self.snapshot.load().authenticate(token, now)?;
        if let Ok(mut used) = self.used.lock() {
            // Allocate the key only the first time a token shows up in a flush period.
            match used.get_mut(&identity.token_id) {
                Some(at) => *at = now,
                None => {
                    used.insert(identity.token_id.clone(), now);
                }
            }
        }
        Ok(identity)
    }

    /// Rebuilds the snapshot from the store and swaps it in.
    pub async fn reload(&self) -> Result<(), store::Error> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let snapshot = Snapshot::build(self.store.rows().await?);
        tracing::debug!(
            tokens = snapshot.token_count(),
            "identity snapshot reloaded"
        );
        self.snapshot.store(Arc::new(snapshot));
        Ok(())
    }

    async fn flush_used(&self) {
        let batch: Vec<(String, i64)> = match self.used.lock() {
            Ok(mut used) => used.drain().collect(),
            Err(_) => return,
        };
        if !batch.is_empty()
            && let Err(e) = self.store.touch_tokens(&batch).await
        {
            tracing::warn!(error = %e, "could not record token last-used times");
        }
    }

    /// Keeps the snapshot current until the returned handle is dropped: watches the database for
    /// changes by any process and flushes token last-used times.
    pub fn watch(self: &Arc<Self>) -> WatchHandle {
        let this = Arc::clone(self);
        let task = tokio::spawn(async move {
            let mut flush = tokio::time::interval(Duration::from_secs(5));
            flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            match this.store.db().clone() {
                Db::Sqlite(pool) => this.watch_sqlite(pool, &mut flush).await,
                Db::Postgres(pool) => this.watch_postgres(pool, &mut flush).await,
            }
        });
        WatchHandle { task }
    }

    async fn reload_logged(&self) {
        if let Err(e) = self.reload().await {
            tracing::warn!(error = %e, "identity reload failed; keeping the previous snapshot");
        }
    }

    async fn watch_sqlite(&self, pool: sqlx::SqlitePool, flush: &mut tokio::time::Interval) {
        // Triggers bump `identity_revision` on every change; polling one row is cheap.
        let mut last: Option<i64> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = flush.tick() => { self.flush_used().await; continue; }
            }
            match sqlx::query_scalar::<_, i64>("SELECT n FROM identity_revision WHERE id = 1")
                .fetch_one(&pool)
                .await
            {
                Ok(n) => {
                    // Also on the first poll: a change between loading the snapshot and starting
                    // the watcher must not be missed.
                    if last != Some(n) {
                        self.reload_logged().await;
                    }
                    last = Some(n);
                }
                Err(e) => tracing::warn!(error = %e, "identity watcher: cannot read the revision"),
            }
        }
    }

    async fn watch_postgres(&self, pool: sqlx::PgPool, flush: &mut tokio::time::Interval) {
        let mut resync = tokio::time::interval(Duration::from_secs(30));
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut listener: Option<sqlx::postgres::PgListener> = None;
        loop {
            if listener.is_none() {
                match sqlx::postgres::PgListener::connect_with(&pool).await {
                    Ok(mut l) => match l.listen("mcpgw_identity").await {
                        Ok(()) => {
                            listener = Some(l);
                            // Anything could have changed while we were not listening.
                            self.reload_logged().await;
                        }
                        Err(e) => tracing::warn!(error = %e, "identity watcher: LISTEN failed"),
                    },
                    Err(e) => tracing::warn!(error = %e, "identity watcher: cannot connect"),
                }
                if listener.is_none() {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
            let Some(l) = listener.as_mut() else { continue };
            tokio::select! {
                n = l.try_recv() => match n {
                    Ok(Some(_)) => {
                        // Coalesce a burst of notifications into one reload.
                        while let Ok(Ok(Some(_))) = tokio::time::timeout(Duration::from_millis(5), l.try_recv()).await {}
                        self.reload_logged().await;
                    }
                    Ok(None) => {
                        tracing::warn!("identity watcher: connection lost; resyncing");
                        self.reload_logged().await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "identity watcher: listener failed");
                        listener = None;
                    }
                },
                _ = resync.tick() => self.reload_logged().await,
                _ = flush.tick() => self.flush_used().await,
            }
        }
    }
}

/// Stops the directory's watcher when dropped.
pub struct WatchHandle {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

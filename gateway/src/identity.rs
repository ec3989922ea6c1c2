//! Who is calling: an in-memory snapshot of every token hash, member, grant, role, workspace and
//! server, so that authenticating a request is one hash lookup with no database round trip.
//!
//! The snapshot follows the store through the identity journal (`identity_changes`, written by
//! triggers): each change names one workspace, member, role or token, and a process applies it by
//! reloading just that from the store into a new snapshot that shares everything else with the old
//! one (persistent maps), so a change costs the same whatever the organisation's size. Changes hold
//! on the process that made them before it answers (it catches up right after writing) and within
//! a second on every other process sharing the database: SQLite is polled every 100 ms (one indexed
//! range read), PostgreSQL wakes the readers with `NOTIFY mcpgw_identity` (and is read every 5 s in
//! case a notification was lost). A full rebuild stays as the safety net: at start, every 10
//! minutes, and whenever a process is further behind than the journal reaches.

use crate::limit::{Limit, Rate, Subject};
use crate::policy::Principal;
use crate::store::{self, Db, HeaderSpec, Store, TOKEN_PREFIX, Transport, now_ms};
use arc_swap::ArcSwap;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeSet, HashMap};
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
    /// The identity provider whose JWTs are accepted as members' credentials, if any.
    pub idp: Option<Arc<store::IdpConfig>>,
    /// Rate limits on its `tools/call`s (see [`crate::limit`]).
    pub limits: Vec<Limit>,
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
    /// The member's roles (assigned, and for an identity-provider token those its groups map
    /// to), sorted: rate limits can name them.
    pub roles: Vec<String>,
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
            roles: Vec::new(),
            disabled: false,
            expires_ms: None,
            hash: [0; 32],
        }
    }
}

type Digest = [u8; 32];

/// A token as stored: what its `Identity` is derived from.
#[derive(Debug)]
struct TokenEntry {
    id: String,
    workspace: i64,
    member: Option<i64>,
    digest: Digest,
    expires_ms: Option<i64>,
}

/// A member as stored: their own grants and roles, their tokens' ids, and the view derived from
/// those and their roles' patterns.
#[derive(Debug, Clone)]
struct MemberEntry {
    workspace: i64,
    name: String,
    disabled: bool,
    own: Vec<String>,
    roles: Vec<i64>,
    tokens: Vec<String>,
    view: Arc<MemberView>,
}

/// A role as stored.
#[derive(Debug)]
struct RoleEntry {
    workspace: i64,
    name: String,
    patterns: Vec<String>,
}

/// The immutable state one request sees.
///
/// Every map is persistent (`imbl`): cloning a snapshot is O(1) and a change to one entry is
/// O(log n), so applying one member's or token's change costs the same at 100 tokens as at
/// 100,000 (issue 22). A workspace-level change (servers, enforcement, identity provider)
/// re-derives that workspace's identities, O(its tokens).
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Token hash → caller: what authentication looks up.
    tokens: imbl::HashMap<Digest, Arc<Identity>>,
    /// Token id → the stored token.
    token_entries: imbl::HashMap<String, Arc<TokenEntry>>,
    workspaces: imbl::HashMap<i64, Arc<WorkspaceView>>,
    workspace_ids: imbl::HashMap<String, i64>,
    members: imbl::HashMap<i64, Arc<MemberEntry>>,
    member_ids: imbl::HashMap<(i64, String), i64>,
    roles: imbl::HashMap<i64, Arc<RoleEntry>>,
    role_ids: imbl::HashMap<(i64, String), i64>,
    /// The identity journal's position this snapshot reflects.
    position: i64,
}

impl Snapshot {
    fn build(rows: store::Rows) -> Snapshot {
        let mut s = Snapshot::default();
        let mut servers: HashMap<i64, Vec<store::ServerRow>> = HashMap::new();
        for row in rows.servers {
            servers.entry(row.0).or_default().push(row);
        }
        let mut idps: HashMap<i64, String> = rows.idps.into_iter().collect();
        let mut limits: HashMap<i64, Vec<store::LimitRow>> = HashMap::new();
        for row in rows.rate_limits {
            limits.entry(row.1).or_default().push(row);
        }
        for (id, name, enforce) in rows.workspaces {
            let view = workspace_view(
                name,
                enforce,
                servers.remove(&id).unwrap_or_default(),
                idps.remove(&id),
                limits.remove(&id).unwrap_or_default(),
            );
            s.workspace_ids.insert(view.name.clone(), id);
            s.workspaces.insert(id, Arc::new(view));
        }
        let mut role_patterns: HashMap<i64, Vec<String>> = HashMap::new();
        for (role, pattern) in rows.role_grants {
            role_patterns.entry(role).or_default().push(pattern);
        }
        for (id, ws, name) in rows.roles {
            let patterns = role_patterns.remove(&id).unwrap_or_default();
            s.put_role(id, ws, name, patterns);
        }
        let mut grants: HashMap<i64, Vec<String>> = HashMap::new();
        for (member, pattern) in rows.grants {
            grants.entry(member).or_default().push(pattern);
        }
        let mut assigned: HashMap<i64, Vec<i64>> = HashMap::new();
        for (member, role) in rows.member_roles {
            assigned.entry(member).or_default().push(role);
        }
        let mut tokens: HashMap<Option<i64>, Vec<store::TokenRow>> = HashMap::new();
        for row in rows.tokens {
            tokens.entry(row.2).or_default().push(row);
        }
        for (id, ws, name, disabled_ms) in rows.members {
            s.put_member(
                id,
                ws,
                name,
                disabled_ms.is_some(),
                grants.remove(&id).unwrap_or_default(),
                assigned.remove(&id).unwrap_or_default(),
                tokens.remove(&Some(id)).unwrap_or_default(),
            );
        }
        for row in tokens.remove(&None).unwrap_or_default() {
            s.put_token(row);
        }
        s
    }

    // ---- changes (each keeps every derived map consistent) ----

    /// Replaces (or with `None` removes) one workspace's own settings, and re-derives its
    /// callers' identities.
    fn set_workspace(&mut self, id: i64, rows: Option<store::Rows>) {
        if let Some(old) = self.workspaces.remove(&id) {
            self.workspace_ids.remove(&old.name);
        }
        if let Some(rows) = rows
            && let Some((_, name, enforce)) = rows.workspaces.into_iter().next()
        {
            let view = workspace_view(
                name,
                enforce,
                rows.servers,
                rows.idps.into_iter().next().map(|i| i.1),
                rows.rate_limits,
            );
            self.workspace_ids.insert(view.name.clone(), id);
            self.workspaces.insert(id, Arc::new(view));
        }
        let affected: Vec<Arc<TokenEntry>> = self
            .token_entries
            .values()
            .filter(|t| t.workspace == id)
            .cloned()
            .collect();
        for token in affected {
            self.derive_token(&token);
        }
    }

    fn put_role(&mut self, id: i64, workspace: i64, name: String, patterns: Vec<String>) {
        self.role_ids.insert((workspace, name.clone()), id);
        self.roles.insert(
            id,
            Arc::new(RoleEntry {
                workspace,
                name,
                patterns,
            }),
        );
    }

    /// Replaces (or with `None` removes) one role, and re-derives the members who hold it.
    fn set_role(&mut self, id: i64, rows: Option<store::Rows>) {
        if let Some(old) = self.roles.remove(&id) {
            self.role_ids.remove(&(old.workspace, old.name.clone()));
        }
        let mut holders: Vec<i64> = Vec::new();
        if let Some(rows) = rows
            && let Some((_, ws, name)) = rows.roles.into_iter().next()
        {
            let patterns = rows.role_grants.into_iter().map(|(_, p)| p).collect();
            self.put_role(id, ws, name, patterns);
            holders.extend(rows.member_roles.into_iter().map(|(m, _)| m));
        }
        // Members the store no longer lists as holders come with changes of their own.
        for member in holders {
            self.derive_member(member);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn put_member(
        &mut self,
        id: i64,
        workspace: i64,
        name: String,
        disabled: bool,
        own: Vec<String>,
        roles: Vec<i64>,
        tokens: Vec<store::TokenRow>,
    ) {
        self.member_ids.insert((workspace, name.clone()), id);
        let entry = MemberEntry {
            workspace,
            view: Arc::new(MemberView {
                name: name.clone(),
                grants: Vec::new(),
                roles: Vec::new(),
                disabled,
            }),
            name,
            disabled,
            own,
            roles,
            tokens: tokens.iter().map(|t| t.0.clone()).collect(),
        };
        self.members.insert(id, Arc::new(entry));
        for row in tokens {
            if let Some(token) = token_entry(row) {
                self.token_entries.insert(token.id.clone(), Arc::new(token));
            }
        }
        self.derive_member(id);
    }

    /// Replaces (or with `None` removes) one member with their grants, roles and tokens.
    fn set_member(&mut self, id: i64, rows: Option<store::Rows>) {
        if let Some(old) = self.members.remove(&id) {
            self.member_ids.remove(&(old.workspace, old.name.clone()));
            for token in &old.tokens {
                self.drop_token(token);
            }
        }
        if let Some(rows) = rows
            && let Some((_, ws, name, disabled_ms)) = rows.members.into_iter().next()
        {
            self.put_member(
                id,
                ws,
                name,
                disabled_ms.is_some(),
                rows.grants.into_iter().map(|(_, p)| p).collect(),
                rows.member_roles.into_iter().map(|(_, r)| r).collect(),
                rows.tokens,
            );
        }
    }

    /// Recomputes a member's view (effective grants, role names) and their tokens' identities.
    fn derive_member(&mut self, id: i64) {
        let Some(entry) = self.members.get(&id).cloned() else {
            return;
        };
        let mut grants = entry.own.clone();
        let mut roles = Vec::with_capacity(entry.roles.len());
        for role in &entry.roles {
            if let Some(r) = self
                .roles
                .get(role)
                .filter(|r| r.workspace == entry.workspace)
            {
                roles.push(r.name.clone());
                grants.extend(r.patterns.iter().cloned());
            }
        }
        grants.sort();
        grants.dedup();
        roles.sort();
        let mut next = (*entry).clone();
        next.view = Arc::new(MemberView {
            name: entry.name.clone(),
            grants,
            roles,
            disabled: entry.disabled,
        });
        self.members.insert(id, Arc::new(next));
        for token in &entry.tokens {
            if let Some(t) = self.token_entries.get(token).cloned() {
                self.derive_token(&t);
            }
        }
    }

    fn put_token(&mut self, row: store::TokenRow) {
        let Some(token) = token_entry(row) else {
            return;
        };
        let token = Arc::new(token);
        self.token_entries.insert(token.id.clone(), token.clone());
        self.derive_token(&token);
    }

    /// Replaces (or with `None` removes) one token.
    fn set_token(&mut self, id: &str, row: Option<store::TokenRow>) {
        let old_member = self.token_entries.get(id).and_then(|t| t.member);
        self.drop_token(id);
        if let Some(m) = old_member {
            self.edit_member_tokens(m, |tokens| tokens.retain(|t| t != id));
        }
        let Some(row) = row else {
            return;
        };
        if let Some(m) = row.2 {
            // A token of a member this snapshot does not know yet: the member's own change
            // (in the same batch or a later one) brings it along with them.
            if !self.members.contains_key(&m) {
                return;
            }
            self.edit_member_tokens(m, |tokens| tokens.push(id.to_owned()));
        }
        self.put_token(row);
    }

    fn edit_member_tokens(&mut self, member: i64, edit: impl FnOnce(&mut Vec<String>)) {
        if let Some(entry) = self.members.get(&member) {
            let mut next = (**entry).clone();
            edit(&mut next.tokens);
            self.members.insert(member, Arc::new(next));
        }
    }

    fn drop_token(&mut self, id: &str) {
        if let Some(old) = self.token_entries.remove(id) {
            self.tokens.remove(&old.digest);
        }
    }

    /// (Re)computes one token's identity from its workspace and member, or removes it when
    /// either is unknown.
    fn derive_token(&mut self, token: &TokenEntry) {
        let derived = self.workspaces.get(&token.workspace).and_then(|ws| {
            let (member, grants, roles, disabled) = match token.member {
                Some(m) => {
                    let e = self.members.get(&m)?;
                    (
                        Some(e.view.name.clone()),
                        e.view.grants.clone(),
                        e.view.roles.clone(),
                        e.view.disabled,
                    )
                }
                None => (None, Vec::new(), Vec::new(), false),
            };
            Some(Identity {
                token_id: token.id.clone(),
                principal: Principal {
                    workspace: ws.name.clone(),
                    member,
                    grants,
                },
                workspace: ws.clone(),
                subject: None,
                roles,
                disabled,
                expires_ms: token.expires_ms,
                hash: token.digest,
            })
        });
        match derived {
            Some(identity) => {
                self.tokens.insert(token.digest, Arc::new(identity));
            }
            None => {
                self.tokens.remove(&token.digest);
            }
        }
    }

    // ---- reads ----

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
        self.workspaces.get(self.workspace_ids.get(name)?)
    }

    /// A member of a workspace by name.
    pub fn member(&self, workspace: &str, name: &str) -> Option<Arc<MemberView>> {
        let ws = *self.workspace_ids.get(workspace)?;
        let id = self.member_ids.get(&(ws, name.to_owned()))?;
        Some(self.members.get(id)?.view.clone())
    }

    /// A role's patterns by workspace and name.
    pub fn role(&self, workspace: &str, name: &str) -> Option<&[String]> {
        let ws = *self.workspace_ids.get(workspace)?;
        let id = self.role_ids.get(&(ws, name.to_owned()))?;
        Some(&self.roles.get(id)?.patterns)
    }

    /// Every workspace, role, member and credential with what it resolves to, one sorted line
    /// each (names, grants and flags; never a hash): two snapshots of the same store describe
    /// alike, however each was reached.
    pub fn describe(&self) -> Vec<String> {
        let ws_name = |id: &i64| {
            self.workspaces
                .get(id)
                .map(|w| w.name.as_str())
                .unwrap_or("?")
        };
        let view = |w: &WorkspaceView| {
            let mut servers: Vec<String> = w
                .servers
                .values()
                .map(|s| format!("{}={}({})", s.name, s.url, s.prefix))
                .collect();
            servers.sort();
            format!(
                "enforce={} servers={servers:?} idp={:?}",
                w.enforce,
                w.idp.as_ref().map(|i| &i.issuer)
            )
        };
        let mut out: Vec<String> = Vec::new();
        for w in self.workspaces.values() {
            out.push(format!("workspace {} {}", w.name, view(w)));
        }
        for r in self.roles.values() {
            out.push(format!(
                "role {}/{} {:?}",
                ws_name(&r.workspace),
                r.name,
                r.patterns
            ));
        }
        for m in self.members.values() {
            let mut tokens = m.tokens.clone();
            tokens.sort();
            out.push(format!(
                "member {}/{} grants={:?} roles={:?} disabled={} tokens={tokens:?}",
                ws_name(&m.workspace),
                m.view.name,
                m.view.grants,
                m.view.roles,
                m.view.disabled
            ));
        }
        for i in self.tokens.values() {
            out.push(format!(
                "token {} {}/{:?} grants={:?} disabled={} expires={:?} {}",
                i.token_id,
                i.principal.workspace,
                i.principal.member,
                i.principal.grants,
                i.disabled,
                i.expires_ms,
                view(&i.workspace)
            ));
        }
        out.sort();
        out
    }

    /// Number of live tokens.
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// Number of members, in every workspace.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }
}

/// A workspace's view from its rows; an unreadable server or identity-provider setting is left
/// out (logged), never guessed at.
fn workspace_view(
    name: String,
    enforce: bool,
    server_rows: Vec<store::ServerRow>,
    idp: Option<String>,
    limit_rows: Vec<store::LimitRow>,
) -> WorkspaceView {
    let mut servers = HashMap::new();
    for (_, server, url, headers, prefix, transport) in server_rows {
        let headers = serde_json::from_str(&headers).unwrap_or_else(|e| {
            tracing::error!(server = %server, error = %e, "stored headers unreadable; sending none");
            Vec::new()
        });
        // A transport this build cannot read is left out rather than guessed at: an
        // unreadable stdio spec must never fall back to something else.
        let transport = match transport.as_deref().map(serde_json::from_str::<Transport>) {
            None => Transport::default(),
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                tracing::error!(server = %server, error = %e, "stored transport unreadable; server left out");
                continue;
            }
        };
        servers.insert(
            server.clone(),
            Arc::new(ServerView {
                uri: url.parse().ok(),
                prefix: store::effective_prefix(&server, prefix.as_deref()),
                workspace: name.clone(),
                name: server,
                url,
                headers,
                transport: Arc::new(transport),
            }),
        );
    }
    let idp = idp.and_then(|json| match serde_json::from_str::<store::IdpConfig>(&json) {
        Ok(c) => Some(Arc::new(c)),
        // Unreadable settings accept no token (never something else).
        Err(e) => {
            tracing::error!(workspace = %name, error = %e, "stored identity-provider settings unreadable; its tokens are refused");
            None
        }
    });
    // An unreadable limit is logged and kept as the strictest one it could be (a call per
    // hour, no burst) rather than dropped: a limit must not vanish because a row is odd.
    let limits = limit_rows
        .into_iter()
        .map(|(id, _, subject, pattern, calls, period_ms, burst)| {
            let rate = Rate::stored(calls, period_ms);
            let burst = u64::try_from(burst).ok().filter(|b| (1..=crate::limit::MAX_CALLS).contains(b));
            let subject = Subject::parse(&subject);
            if rate.is_none() || burst.is_none() || subject.is_err() {
                tracing::error!(workspace = %name, limit = id, "stored rate limit unreadable; enforcing 1/h on every caller");
            }
            Limit {
                id,
                subject: subject.unwrap_or(Subject::Everyone),
                pattern,
                rate: rate.unwrap_or(Rate { calls: 1, period_ms: 3_600_000 }),
                burst: burst.filter(|_| rate.is_some()).unwrap_or(1),
            }
        })
        .collect();
    WorkspaceView {
        name,
        enforce,
        servers,
        idp,
        limits,
    }
}

fn token_entry((id, workspace, member, hash, expires_ms): store::TokenRow) -> Option<TokenEntry> {
    let Some(digest) = parse_hash(&hash) else {
        tracing::error!(token_id = %id, "stored token hash unreadable; the token is refused");
        return None;
    };
    Some(TokenEntry {
        id,
        workspace,
        member,
        digest,
        expires_ms,
    })
}

fn parse_hash(stored: &str) -> Option<[u8; 32]> {
    let hex_digest = stored.strip_prefix("sha256:")?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut out).ok()?;
    Some(out)
}

/// More journal rows than this behind, and a full rebuild is cheaper than catching up one
/// entity at a time (each costs a few indexed queries).
const CATCH_UP_LIMIT: i64 = 1_000;
/// How long the journal keeps a change: far longer than any live process takes to apply it.
const JOURNAL_KEEP: Duration = Duration::from_secs(600);
/// How often a process prunes the journal.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// The safety net: a full rebuild this often, whatever the journal says.
const RESYNC_EVERY: Duration = Duration::from_secs(600);

/// The live snapshot plus the machinery that keeps it current.
pub struct Directory {
    store: Store,
    snapshot: ArcSwap<Snapshot>,
    /// Token ids seen since the last flush, with the time; written to the store in batches.
    used: Mutex<HashMap<String, i64>>,
    reload_lock: tokio::sync::Mutex<()>,
}

/// Reads the journal's position, then every row: a change committed in between comes after
/// the position and is applied again on the next catch-up (applying a change twice is
/// harmless).
async fn load_full(store: &Store) -> Result<Snapshot, store::Error> {
    let position = store.identity_head().await?;
    let mut snapshot = Snapshot::build(store.rows().await?);
    snapshot.position = position;
    Ok(snapshot)
}

/// What one catch-up has to reload, each entity once.
#[derive(Default)]
struct Changed {
    workspaces: BTreeSet<i64>,
    roles: BTreeSet<i64>,
    members: BTreeSet<i64>,
    tokens: BTreeSet<String>,
}

impl Changed {
    /// `None` when a row names something this build does not know: rebuild whole.
    fn of(changes: Vec<(i64, String, String)>) -> Option<Changed> {
        let mut c = Changed::default();
        for (_, kind, key) in changes {
            match kind.as_str() {
                "workspace" => c.workspaces.insert(key.parse().ok()?),
                "role" => c.roles.insert(key.parse().ok()?),
                "member" => c.members.insert(key.parse().ok()?),
                "token" => c.tokens.insert(key),
                _ => return None,
            };
        }
        Some(c)
    }
}

impl Directory {
    /// Loads the first snapshot.
    pub async fn open(store: Store) -> Result<Arc<Directory>, store::Error> {
        let snapshot = load_full(&store).await?;
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

    /// Brings the snapshot up to date with the store: applies the identity journal's changes
    /// since the snapshot's position, reloading only the workspaces, roles, members and tokens
    /// they name (a few indexed queries each, then O(log n) map updates), and swaps the result
    /// in. Rebuilds whole instead when the snapshot is further behind than the journal reaches
    /// or more than `CATCH_UP_LIMIT` rows behind. On an error the snapshot stays as it was (and
    /// at its position, so the next call tries again).
    pub async fn reload(&self) -> Result<(), store::Error> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let current = self.snapshot.load_full();
        let journal = self
            .store
            .identity_changes(current.position, CATCH_UP_LIMIT + 1)
            .await?;
        if journal.pruned_through > current.position
            || journal.changes.len() as i64 > CATCH_UP_LIMIT
        {
            return self.resync_locked().await;
        }
        let Some(last) = journal.changes.last().map(|c| c.0) else {
            return Ok(());
        };
        let rows = journal.changes.len();
        let Some(changed) = Changed::of(journal.changes) else {
            return self.resync_locked().await;
        };
        let mut next = (*current).clone();
        // Workspaces, then roles, then members, then tokens: each derives from the ones before.
        for id in changed.workspaces {
            next.set_workspace(id, self.store.workspace_rows(id).await?);
        }
        for id in changed.roles {
            next.set_role(id, self.store.role_rows(id).await?);
        }
        for id in changed.members {
            next.set_member(id, self.store.member_rows(id).await?);
        }
        for id in changed.tokens {
            let row = self.store.token_row(&id).await?;
            next.set_token(&id, row);
        }
        next.position = last;
        tracing::debug!(
            rows,
            position = last,
            tokens = next.token_count(),
            "identity snapshot caught up"
        );
        self.snapshot.store(Arc::new(next));
        Ok(())
    }

    /// Rebuilds the snapshot whole from the store and swaps it in: the safety net behind the
    /// journal.
    pub async fn resync(&self) -> Result<(), store::Error> {
        let _one_at_a_time = self.reload_lock.lock().await;
        self.resync_locked().await
    }

    async fn resync_locked(&self) -> Result<(), store::Error> {
        let snapshot = load_full(&self.store).await?;
        tracing::debug!(
            tokens = snapshot.token_count(),
            position = snapshot.position,
            "identity snapshot rebuilt"
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
    /// changes by any process, flushes token last-used times, prunes the identity journal and
    /// rebuilds whole every 10 minutes.
    pub fn watch(self: &Arc<Self>) -> WatchHandle {
        let this = Arc::clone(self);
        let task = tokio::spawn(async move {
            let mut timers = Timers::new();
            match this.store.db().clone() {
                Db::Sqlite(_) => this.watch_sqlite(&mut timers).await,
                Db::Postgres(pool) => this.watch_postgres(pool, &mut timers).await,
            }
        });
        WatchHandle { task }
    }

    async fn reload_logged(&self) {
        if let Err(e) = self.reload().await {
            tracing::warn!(error = %e, "identity catch-up failed; keeping the previous snapshot");
        }
    }

    async fn resync_logged(&self) {
        if let Err(e) = self.resync().await {
            tracing::warn!(error = %e, "identity rebuild failed; keeping the previous snapshot");
        }
    }

    /// The housekeeping every watcher does beside watching.
    async fn housekeeping(&self, tick: Housekeeping) {
        match tick {
            Housekeeping::Flush => self.flush_used().await,
            Housekeeping::Prune => {
                let before = now_ms() - JOURNAL_KEEP.as_millis() as i64;
                match self.store.identity_prune(before).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(rows = n, "identity journal pruned"),
                    Err(e) => tracing::warn!(error = %e, "could not prune the identity journal"),
                }
            }
            Housekeeping::Resync => self.resync_logged().await,
            Housekeeping::Optimize => {
                if let Err(e) = self.store.optimize().await {
                    tracing::warn!(error = %e, "could not refresh the database's statistics");
                }
            }
        }
    }

    async fn watch_sqlite(&self, timers: &mut Timers) {
        // One indexed range read of the journal every 100 ms: nothing new is the common case.
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Also on the first tick: a change between loading the snapshot and starting
                // the watcher must not be missed.
                _ = tick.tick() => self.reload_logged().await,
                job = timers.next() => self.housekeeping(job).await,
            }
        }
    }

    async fn watch_postgres(&self, pool: sqlx::PgPool, timers: &mut Timers) {
        // Notifications wake the catch-up; a read every 5 s covers one lost in transit.
        let mut poll = tokio::time::interval(Duration::from_secs(5));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                        // Coalesce a burst of notifications into one catch-up.
                        while let Ok(Ok(Some(_))) = tokio::time::timeout(Duration::from_millis(5), l.try_recv()).await {}
                        self.reload_logged().await;
                    }
                    Ok(None) => {
                        tracing::warn!("identity watcher: connection lost; catching up");
                        self.reload_logged().await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "identity watcher: listener failed");
                        listener = None;
                    }
                },
                _ = poll.tick() => self.reload_logged().await,
                job = timers.next() => self.housekeeping(job).await,
            }
        }
    }
}

/// The watchers' periodic jobs besides watching.
#[derive(Clone, Copy)]
enum Housekeeping {
    Flush,
    Prune,
    Resync,
    /// SQLite's planner statistics refreshed (`Store::optimize`).
    Optimize,
}

struct Timers {
    flush: tokio::time::Interval,
    prune: tokio::time::Interval,
    resync: tokio::time::Interval,
    optimize: tokio::time::Interval,
}

impl Timers {
    fn new() -> Timers {
        let every = |period: Duration| {
            // The first tick of each comes one period after the start, not at once.
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        };
        Timers {
            flush: every(Duration::from_secs(5)),
            prune: every(PRUNE_EVERY),
            resync: every(RESYNC_EVERY),
            optimize: {
                let period = Duration::from_secs(600);
                let first = tokio::time::Instant::now() + Duration::from_secs(30);
                let mut i = tokio::time::interval_at(first, period);
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            },
        }
    }

    async fn next(&mut self) -> Housekeeping {
        tokio::select! {
            _ = self.flush.tick() => Housekeeping::Flush,
            _ = self.prune.tick() => Housekeeping::Prune,
            _ = self.resync.tick() => Housekeeping::Resync,
            _ = self.optimize.tick() => Housekeeping::Optimize,
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

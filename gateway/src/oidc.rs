//! Members signed in through their workspace's identity provider (OIDC): discovery, one cached
//! JWKS per issuer, and the checks a bearer JWT passes before it names a member.
//!
//! - A bearer token that is not an `mcpgw_` token is taken as a JWT. Bounds first: at most
//!   [`MAX_TOKEN`] bytes; the header's `alg` must be RS256, PS256, ES256 or EdDSA (never `none`,
//!   never HMAC: a public key is not a shared secret), and a key is only used for the algorithm
//!   family it is (an RSA key never checks an HMAC signature).
//! - The unverified `iss` only picks which workspaces' providers to try; nothing else is read
//!   before the signature is checked. The issuer's key is the one the header's `kid` names.
//! - Keys: `{issuer}/.well-known/openid-configuration` gives `jwks_uri` (its `issuer` must be
//!   the configured one); both fetched over HTTPS (platform roots, or the provider's
//!   `ca_file`), bounded in time and size, at most [`MAX_KEYS`] keys kept. A token naming an
//!   unknown `kid` makes one refetch, at most once per `min_refresh` per issuer (rotated keys
//!   work at once, a flood of made-up kids costs one fetch per interval); keys are refetched
//!   every `refresh_every` too, and dropped keys stop working then. While the provider is
//!   unreachable the last keys keep working for `max_age` after they were fetched; then every
//!   token of that issuer is refused (fail closed) until a fetch succeeds.
//! - Claims: `iss` exactly the issuer, `aud` containing the workspace's audience, `exp`
//!   required and `exp`/`nbf` checked with [`LEEWAY_S`] of clock skew.
//! - The member is the member claim's value, created on first sight only with `auto_create`;
//!   the groups claim's groups give roles through the role map. Effective grants: the member's
//!   own, their assigned roles', their groups' roles'.
//!
//! The token itself is never stored, logged or forwarded: the audit trail gets the member, the
//! subject and the issuer.

use crate::identity::{
    AuthError, Directory, Identity, MemberView, Refusal, Snapshot, WorkspaceView,
};
use crate::policy::Principal;
use crate::store::{self, IdpConfig, TlsFiles, now_ms};
use crate::upstream::error_chain;
use crate::upstream::tls::Clients;
use arc_swap::ArcSwapOption;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest bearer JWT taken.
pub const MAX_TOKEN: usize = 16 * 1024;
/// Largest discovery document or JWKS read.
const MAX_DOC: usize = 256 * 1024;
/// Most keys kept from one JWKS.
pub const MAX_KEYS: usize = 64;
/// Most groups read from a token.
const MAX_GROUPS: usize = 512;
/// Clock skew allowed on `exp` and `nbf`, seconds.
pub const LEEWAY_S: u64 = 60;
/// The signature algorithms accepted.
const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

/// Why fetching an issuer's keys failed (kept as the issuer's last error).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request could not be made or answered.
    #[error("fetching {url}: {reason}")]
    Fetch {
        /// What was fetched.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// The document is not what OIDC discovery or a JWKS should be.
    #[error("{url}: {reason}")]
    Document {
        /// What was fetched.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Timing of key fetches (docs/config.md: `idp_*`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// An unknown `kid` refetches the keys at most this often per issuer.
    pub min_refresh: Duration,
    /// Keys are refetched this long after the last fetch.
    pub refresh_every: Duration,
    /// Keys keep working this long after they were fetched while the provider is unreachable.
    pub max_age: Duration,
    /// Each fetch (connect, answer, body) must finish within this.
    pub fetch_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            min_refresh: Duration::from_secs(10),
            refresh_every: Duration::from_secs(15 * 60),
            max_age: Duration::from_secs(24 * 3600),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// One usable key of a JWKS.
struct Key {
    kid: Option<String>,
    /// The algorithms it may check: its family's allowed ones, narrowed by its `alg`.
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

/// An issuer's keys as last fetched.
struct KeySet {
    fetched: Instant,
    keys: Vec<Key>,
}

/// What `idp show` and the admin API report of an issuer in this process.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IssuerStatus {
    /// The issuer URL.
    pub issuer: String,
    /// Where its keys come from (from discovery).
    pub jwks_uri: Option<String>,
    /// Keys held now.
    pub keys: usize,
    /// Last successful fetch, Unix ms.
    pub last_refresh_ms: Option<i64>,
    /// Last failed fetch's error, and when (cleared by a success).
    pub last_error: Option<String>,
    /// When the last error happened, Unix ms.
    pub last_error_ms: Option<i64>,
}

struct Issuer {
    url: String,
    ca_file: Option<PathBuf>,
    keys: ArcSwapOption<KeySet>,
    /// The last fetch attempt; held while fetching, so one fetch runs at a time.
    fetching: Arc<tokio::sync::Mutex<Option<Instant>>>,
    status: Mutex<IssuerStatus>,
}

/// An issuer URL and the CA file it is trusted through.
type IssuerKey = (String, Option<PathBuf>);

/// The process's identity-provider verifier.
pub struct Idp {
    https: Arc<Clients>,
    settings: Settings,
    issuers: Mutex<HashMap<IssuerKey, Arc<Issuer>>>,
}

/// The unverified `iss` of a JWT (only used to pick whose keys to check it with).
fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    serde_json::from_slice::<Iss>(&bytes).ok()?.iss
}

/// The algorithms a JWK may check, or `None` when it is not a signing key we accept.
fn key_algorithms(jwk: &Jwk) -> Option<Vec<Algorithm>> {
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    let family: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![Algorithm::RS256, Algorithm::PS256],
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            vec![Algorithm::ES256]
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        // Other curves, and symmetric keys: never.
        _ => return None,
    };
    let narrowed = match jwk.common.key_algorithm {
        None => family,
        Some(alg) => {
            let alg = match alg {
                KeyAlgorithm::RS256 => Algorithm::RS256,
                KeyAlgorithm::PS256 => Algorithm::PS256,
                KeyAlgorithm::ES256 => Algorithm::ES256,
                KeyAlgorithm::EdDSA => Algorithm::EdDSA,
                _ => return None,
            };
            family.into_iter().filter(|a| *a == alg).collect()
        }
    };
    (!narrowed.is_empty()).then_some(narrowed)
}

/// The scopes a token carries: `scope` (space-separated) and `scp` (a string or an array).
fn scopes(claims: &Value) -> HashSet<&str> {
    let mut out = HashSet::new();
    if let Some(s) = claims.get("scope").and_then(Value::as_str) {
        out.extend(s.split_whitespace());
    }
    match claims.get("scp") {
        Some(Value::String(s)) => out.extend(s.split_whitespace()),
        Some(Value::Array(a)) => out.extend(a.iter().filter_map(Value::as_str)),
        _ => {}
    }
    out
}

/// The groups a token lists in `claim`: a string array, or one string.
fn groups<'a>(claims: &'a Value, claim: &str) -> Vec<&'a str> {
    match claims.get(claim) {
        Some(Value::Array(a)) => a
            .iter()
            .take(MAX_GROUPS)
            .filter_map(Value::as_str)
            .collect(),
        Some(Value::String(s)) => vec![s.as_str()],
        _ => Vec::new(),
    }
}

impl Idp {
    /// A verifier fetching keys through these HTTPS clients.
    pub fn new(https: Arc<Clients>, settings: Settings) -> Idp {
        Idp {
            https,
            settings,
            issuers: Mutex::new(HashMap::new()),
        }
    }

    fn issuer(&self, config: &IdpConfig) -> Arc<Issuer> {
        let key = (config.issuer.clone(), config.ca_file.clone());
        let mut issuers = self.issuers.lock().unwrap_or_else(|e| e.into_inner());
        issuers
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Issuer {
                    url: config.issuer.clone(),
                    ca_file: config.ca_file.clone(),
                    keys: ArcSwapOption::empty(),
                    fetching: Arc::new(tokio::sync::Mutex::new(None)),
                    status: Mutex::new(IssuerStatus {
                        issuer: config.issuer.clone(),
                        ..IssuerStatus::default()
                    }),
                })
            })
            .clone()
    }

    /// The status of the issuer `config` names in this process (`None`: never used yet).
    pub fn status(&self, config: &IdpConfig) -> Option<IssuerStatus> {
        let issuers = self.issuers.lock().unwrap_or_else(|e| e.into_inner());
        let issuer = issuers.get(&(config.issuer.clone(), config.ca_file.clone()))?;
        let status = issuer
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Some(status)
    }

    /// Fetches the keys of every workspace's provider that has none or old ones: run at start
    /// and periodically, so tokens rarely wait for a fetch and `idp show` has news.
    pub async fn refresh_all(&self, directory: &Directory) {
        let snapshot = directory.snapshot();
        let configs: Vec<Arc<IdpConfig>> = snapshot
            .workspaces()
            .filter_map(|w| w.idp.clone())
            .collect();
        for config in configs {
            let issuer = self.issuer(&config);
            let _ = self.keys(&issuer, None).await;
        }
    }

    /// The issuer's keys, fetched first when there are none, they are too old, or `kid` is
    /// not among them (each at most once per `min_refresh`). Keys that are due for a refetch but
    /// still usable are used while a background task refetches them.
    async fn keys(
        &self,
        issuer: &Arc<Issuer>,
        kid: Option<&str>,
    ) -> Result<Arc<KeySet>, AuthError> {
        let usable = |set: &Arc<KeySet>| set.fetched.elapsed() < self.settings.max_age;
        let current = issuer.keys.load_full();
        let knows_kid = |set: &KeySet| {
            kid.is_none_or(|kid| {
                set.keys
                    .iter()
                    .any(|k| k.kid.as_deref() == Some(kid) || k.kid.is_none())
            })
        };
        if let Some(set) = current.as_ref().filter(|s| usable(s) && knows_kid(s)) {
            if set.fetched.elapsed() >= self.settings.refresh_every
                && let Ok(guard) = issuer.fetching.clone().try_lock_owned()
            {
                self.spawn_fetch(issuer, guard, current.clone());
            }
            return Ok(set.clone());
        }
        let guard = issuer.fetching.clone().lock_owned().await;
        // The fetch runs in a task of its own: a request that gives up (its client went away)
        // does not cancel it halfway and use up the interval.
        let _ = self.spawn_fetch(issuer, guard, current).await;
        issuer
            .keys
            .load_full()
            .filter(usable)
            .ok_or(AuthError::KeysUnavailable)
    }

    /// Fetches `issuer`'s keys in a task of its own, unless another fetch replaced `seen`
    /// meanwhile or the last attempt is under `min_refresh` old.
    fn spawn_fetch(
        &self,
        issuer: &Arc<Issuer>,
        mut last: tokio::sync::OwnedMutexGuard<Option<Instant>>,
        seen: Option<Arc<KeySet>>,
    ) -> tokio::task::JoinHandle<()> {
        let (https, settings, issuer) = (self.https.clone(), self.settings.clone(), issuer.clone());
        tokio::spawn(async move {
            let now = issuer.keys.load_full();
            let fetched_meanwhile = match (&seen, &now) {
                (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
                (None, Some(_)) => true,
                _ => false,
            };
            if fetched_meanwhile || last.is_some_and(|t| t.elapsed() < settings.min_refresh) {
                return;
            }
            let result = fetch(&https, &settings, &issuer).await;
            *last = Some(Instant::now());
            let mut status = issuer.status.lock().unwrap_or_else(|e| e.into_inner());
            match result {
                Ok((jwks_uri, set)) => {
                    tracing::info!(issuer = %issuer.url, keys = set.keys.len(), "identity provider keys fetched");
                    status.jwks_uri = Some(jwks_uri);
                    status.keys = set.keys.len();
                    status.last_refresh_ms = Some(now_ms());
                    status.last_error = None;
                    status.last_error_ms = None;
                    issuer.keys.store(Some(Arc::new(set)));
                }
                Err(e) => {
                    tracing::warn!(issuer = %issuer.url, error = %e, "identity provider keys not fetched; the last ones (if any) are kept while they last");
                    status.last_error = Some(e.to_string());
                    status.last_error_ms = Some(now_ms());
                }
            }
        })
    }

    /// Checks a bearer JWT and resolves its member. `Refusal::who` is set when the token was
    /// good but its member may not come in (disabled, lacking a scope).
    pub async fn authenticate(
        &self,
        token: &str,
        directory: &Directory,
    ) -> Result<Arc<Identity>, Refusal> {
        if token.len() > MAX_TOKEN || token.split('.').count() != 3 {
            return Err(AuthError::Invalid.into());
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(AuthError::Invalid.into());
        }
        let iss = unverified_issuer(token).ok_or(AuthError::Invalid)?;
        let snapshot = directory.snapshot();
        let candidates: Vec<Arc<WorkspaceView>> = snapshot
            .workspaces()
            .filter(|w| w.idp.as_ref().is_some_and(|i| i.issuer == iss))
            .cloned()
            .collect();
        let Some(config) = candidates.first().and_then(|w| w.idp.clone()) else {
            return Err(AuthError::Invalid.into());
        };
        let issuer = self.issuer(&config);
        let keys = self.keys(&issuer, header.kid.as_deref()).await?;
        // Exactly one key checks the signature: the one `kid` names (else the set's keys
        // without a kid), or without a `kid` the only key of the algorithm's family. A token
        // never costs more than one signature check.
        let family = keys
            .keys
            .iter()
            .filter(|k| k.algorithms.contains(&header.alg));
        let usable: Vec<&Key> = match &header.kid {
            Some(kid) => {
                let named: Vec<&Key> = family
                    .clone()
                    .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
                    .collect();
                if named.is_empty() {
                    family.filter(|k| k.kid.is_none()).collect()
                } else {
                    named
                }
            }
            None => family.collect(),
        };
        let [key] = usable.as_slice() else {
            tracing::debug!(issuer = %iss, keys = usable.len(), "no single key for the token's kid and alg");
            return Err(AuthError::Invalid.into());
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[iss.as_str()]);
        // `aud` is required here and matched against each workspace's audience below.
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = LEEWAY_S;
        validation.validate_nbf = true;
        let claims = match jsonwebtoken::decode::<Value>(token, &key.key, &validation) {
            Ok(data) => data.claims,
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind;
                return Err(match e.kind() {
                    ErrorKind::ExpiredSignature => AuthError::Expired,
                    _ => AuthError::Invalid,
                }
                .into());
            }
        };
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let mut matching = candidates.iter().filter(|w| {
            w.idp
                .as_ref()
                .is_some_and(|i| audiences.contains(&i.audience.as_str()))
        });
        let (Some(ws), None) = (matching.next(), matching.next()) else {
            // None, or more than one (the store refuses two workspaces with the same issuer and
            // audience; a token naming two of their audiences is not for either alone).
            return Err(AuthError::Invalid.into());
        };
        let Some(idp) = &ws.idp else {
            return Err(AuthError::Invalid.into());
        };
        self.member(ws, idp, claims, directory).await
    }

    /// The member a checked token names, with their effective grants.
    async fn member(
        &self,
        ws: &Arc<WorkspaceView>,
        idp: &IdpConfig,
        claims: Value,
        directory: &Directory,
    ) -> Result<Arc<Identity>, Refusal> {
        let Some(name) = claims.get(&idp.member_claim).and_then(Value::as_str) else {
            tracing::info!(workspace = %ws.name, claim = %idp.member_claim, "identity-provider token without the member claim");
            return Err(AuthError::Invalid.into());
        };
        if idp.member_claim == "email"
            && claims.get("email_verified").and_then(Value::as_bool) == Some(false)
        {
            tracing::info!(workspace = %ws.name, "identity-provider token with an unverified email as the member");
            return Err(AuthError::Invalid.into());
        }
        if store::validate_name("member", name).is_err() {
            tracing::info!(workspace = %ws.name, claim = %idp.member_claim, "the member claim's value is not a usable member name");
            return Err(AuthError::Invalid.into());
        }
        let snapshot = directory.snapshot();
        let (snapshot, ws, member) = match snapshot.member(&ws.name, name) {
            Some(m) => (snapshot, ws.clone(), m),
            None if idp.auto_create => self.create(&ws.name, name, directory).await?,
            None => return Err(AuthError::UnknownMember.into()),
        };
        let mut grants = member.grants.clone();
        let mut roles = member.roles.clone();
        if let Some(claim) = &idp.groups_claim {
            let groups = groups(&claims, claim);
            for mapping in &idp.role_map {
                if groups.contains(&mapping.group.as_str())
                    && let Some(patterns) = snapshot.role(&ws.name, &mapping.role)
                {
                    grants.extend(patterns.iter().cloned());
                    roles.push(mapping.role.clone());
                }
            }
            grants.sort();
            grants.dedup();
            roles.sort();
            roles.dedup();
        }
        let subject: String = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .chars()
            .take(256)
            .collect();
        let mut identity = Identity::signed_in(
            // Workspace and member: token ids key sessions and caches across workspaces.
            format!("idp:{}/{}", ws.name, member.name),
            Principal {
                workspace: ws.name.clone(),
                member: Some(member.name.clone()),
                grants,
            },
            ws.clone(),
            subject,
            idp.issuer.clone(),
        );
        identity.roles = roles;
        let identity = Arc::new(identity);
        if member.disabled {
            return Err(Refusal {
                error: AuthError::Disabled,
                who: Some(identity),
            });
        }
        if !idp.scopes.is_empty() {
            let have = scopes(&claims);
            if !idp.scopes.iter().all(|s| have.contains(s.as_str())) {
                return Err(Refusal {
                    error: AuthError::InsufficientScope,
                    who: Some(identity),
                });
            }
        }
        Ok(identity)
    }

    /// Creates a member on first sight and returns them from the reloaded snapshot.
    async fn create(
        &self,
        workspace: &str,
        name: &str,
        directory: &Directory,
    ) -> Result<(Arc<Snapshot>, Arc<WorkspaceView>, Arc<MemberView>), Refusal> {
        match directory.store().member_add(workspace, name).await {
            Ok(_) => tracing::info!(workspace, member = name, "member created on first sign-in"),
            // Two first requests at once: the other one created them.
            Err(store::Error::Duplicate(..)) => {}
            Err(e) => {
                tracing::error!(workspace, error = %e, "could not create a member on first sign-in");
                return Err(AuthError::UnknownMember.into());
            }
        }
        if let Err(e) = directory.reload().await {
            tracing::error!(error = %e, "identity reload after creating a member failed");
        }
        let snapshot = directory.snapshot();
        let ws = snapshot
            .workspace(workspace)
            .cloned()
            .ok_or(AuthError::UnknownMember)?;
        let member = snapshot
            .member(workspace, name)
            .ok_or(AuthError::UnknownMember)?;
        Ok((snapshot, ws, member))
    }
}

/// Discovery, then the JWKS.
async fn fetch(
    https: &Clients,
    settings: &Settings,
    issuer: &Issuer,
) -> Result<(String, KeySet), Error> {
    let discovery_url = format!(
        "{}/.well-known/openid-configuration",
        issuer.url.trim_end_matches('/')
    );
    let doc = get_json(https, settings, issuer, &discovery_url).await?;
    let bad = |reason: String| Error::Document {
        url: discovery_url.clone(),
        reason,
    };
    if doc.get("issuer").and_then(Value::as_str) != Some(issuer.url.as_str()) {
        return Err(bad(format!(
            "its issuer is not {:?} (a provider must name itself exactly as configured)",
            issuer.url
        )));
    }
    let jwks_uri = doc
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no jwks_uri".into()))?
        .to_owned();
    let jwks = get_json(https, settings, issuer, &jwks_uri).await?;
    let Some(list) = jwks.get("keys").and_then(Value::as_array) else {
        return Err(Error::Document {
            url: jwks_uri,
            reason: "no keys array".into(),
        });
    };
    let mut keys = Vec::new();
    for raw in list {
        if keys.len() == MAX_KEYS {
            tracing::warn!(issuer = %issuer.url, max = MAX_KEYS, "JWKS holds more keys than kept; the rest are ignored");
            break;
        }
        // A key of a kind this build does not know is skipped, not the whole set.
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
            continue;
        };
        let Some(algorithms) = key_algorithms(&jwk) else {
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            algorithms,
            key,
        });
    }
    Ok((
        jwks_uri,
        KeySet {
            fetched: Instant::now(),
            keys,
        },
    ))
}

async fn get_json(
    https: &Clients,
    settings: &Settings,
    issuer: &Issuer,
    url: &str,
) -> Result<Value, Error> {
    let fail = |reason: String| Error::Fetch {
        url: url.to_owned(),
        reason,
    };
    let uri: http::Uri = url.parse().map_err(|_| fail("not a URL".into()))?;
    if uri.scheme_str() != Some("https") {
        return Err(fail("only https:// is fetched".into()));
    }
    let files = issuer.ca_file.as_ref().map(|f| TlsFiles {
        ca_file: Some(f.clone()),
        ..TlsFiles::default()
    });
    let client = https
        .for_files(&issuer.url, files.as_ref())
        .map_err(|e| fail(e.to_string()))?;
    let req = http::Request::get(uri)
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| fail(e.to_string()))?;
    let work = async {
        let resp = client
            .client
            .request(req)
            .await
            .map_err(|e| fail(error_chain(&e)))?;
        if resp.status() != http::StatusCode::OK {
            return Err(fail(format!("HTTP {}", resp.status())));
        }
        let body = Limited::new(resp.into_body(), MAX_DOC)
            .collect()
            .await
            .map_err(|e| fail(format!("body: {e}")))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| Error::Document {
            url: url.to_owned(),
            reason: format!("not JSON: {e}"),
        })
    };
    tokio::time::timeout(settings.fetch_timeout, work)
        .await
        .map_err(|_| fail(format!("no answer within {:?}", settings.fetch_timeout)))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jwk(v: Value) -> Jwk {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn only_signing_keys_of_accepted_kinds_are_kept() {
        let rsa = json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "r"});
        assert_eq!(
            key_algorithms(&jwk(rsa.clone())),
            Some(vec![Algorithm::RS256, Algorithm::PS256])
        );
        let mut ps = rsa.clone();
        ps["alg"] = json!("PS256");
        assert_eq!(key_algorithms(&jwk(ps)), Some(vec![Algorithm::PS256]));
        let mut enc = rsa.clone();
        enc["use"] = json!("enc");
        assert_eq!(key_algorithms(&jwk(enc)), None, "encryption keys");
        let mut rs512 = rsa;
        rs512["alg"] = json!("RS512");
        assert_eq!(key_algorithms(&jwk(rs512)), None, "algorithms not allowed");
        let hmac = json!({"kty": "oct", "k": "c2VjcmV0"});
        assert_eq!(key_algorithms(&jwk(hmac)), None, "never a symmetric key");
        let p384 = json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"});
        assert_eq!(key_algorithms(&jwk(p384)), None);
        let ed = json!({"kty": "OKP", "crv": "Ed25519", "x": "AA"});
        assert_eq!(key_algorithms(&jwk(ed)), Some(vec![Algorithm::EdDSA]));
    }

    #[test]
    fn scopes_and_groups_are_read_in_their_usual_shapes() {
        let claims =
            json!({"scope": "mcp read", "scp": ["tools"], "groups": ["eng", 3, "ops"], "g": "one"});
        let s = scopes(&claims);
        assert!(s.contains("mcp") && s.contains("read") && s.contains("tools"));
        assert_eq!(groups(&claims, "groups"), ["eng", "ops"]);
        assert_eq!(groups(&claims, "g"), ["one"]);
        assert!(groups(&claims, "missing").is_empty());
    }

    #[test]
    fn the_unverified_issuer_is_read_from_the_payload_only() {
        let enc =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let token = format!(
            "{}.{}.sig",
            enc(&json!({"alg": "RS256"})),
            enc(&json!({"iss": "https://idp.example"}))
        );
        assert_eq!(
            unverified_issuer(&token).as_deref(),
            Some("https://idp.example")
        );
        assert_eq!(unverified_issuer("a.b.c"), None);
        assert_eq!(unverified_issuer("nodots"), None);
    }
}

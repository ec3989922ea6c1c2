//! The admin HTTP API: the CLI's operations as JSON over HTTP, on its own listener (loopback by
//! default), behind an admin bearer token compared in constant time. Reference: docs/admin-api.md.

use crate::audit;
use crate::config::Secret;
use crate::identity::Directory;
use crate::policy::PolicySet;
use crate::store;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use subtle::ConstantTimeEq as _;

/// Largest admin request body.
const MAX_BODY: usize = 64 * 1024;

/// What the admin API works on.
pub struct Admin {
    /// Identity snapshot and its store.
    pub directory: Arc<Directory>,
    /// Live policy chain, for status.
    pub policies: Arc<PolicySet>,
    /// The admin bearer token.
    pub token: Secret,
    /// The audit trail, for its metrics.
    pub audit: Arc<crate::audit::Audit>,
    /// Counters of the MCP endpoint.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The stdio servers' processes, for `servers/status`.
    pub stdio: Arc<crate::upstream::stdio::Stdio>,
    /// The identity-provider verifier, for `idp` status.
    pub idp: Arc<crate::oidc::Idp>,
    /// The web console under `/console`.
    pub console: crate::console::Console,
}

/// Admin API errors, each with an HTTP status and a stable code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No or wrong admin token.
    #[error("admin token required")]
    Unauthorized,
    /// No such route.
    #[error("no route for {0} {1}")]
    NoRoute(Method, String),
    /// The body is not the JSON the route expects.
    #[error("invalid request body: {0}")]
    Body(String),
    /// The body is over the limit.
    #[error("request body over {MAX_BODY} bytes")]
    TooLarge,
    /// The store refused.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The audit trail could not be read.
    #[error(transparent)]
    Audit(#[from] crate::audit::Error),
}

impl Error {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Error::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::NoRoute(..) => (StatusCode::NOT_FOUND, "no_route"),
            Error::Body(_) => (StatusCode::BAD_REQUEST, "invalid"),
            Error::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Error::Audit(crate::audit::Error::Store(e)) | Error::Store(e) => match e {
                store::Error::Duplicate(..) => (StatusCode::CONFLICT, e.code()),
                store::Error::NotFound(..) => (StatusCode::NOT_FOUND, e.code()),
                store::Error::Invalid(_) => (StatusCode::BAD_REQUEST, e.code()),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, e.code()),
            },
            Error::Audit(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let (status, code) = self.status_and_code();
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "admin request failed");
            "internal error; see the gateway log".to_owned()
        } else {
            self.to_string()
        };
        let mut resp = json_response(
            status,
            &json!({"error": {"code": code, "message": message}}),
        );
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The request body, up to [`MAX_BODY`].
pub(crate) async fn read_body(req: Request<Incoming>) -> Result<Bytes, Error> {
    Ok(Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Error::TooLarge
            } else {
                Error::Body(e.to_string())
            }
        })?
        .to_bytes())
}

/// The body as `T`; a malformed one is refused without echoing any of its values.
async fn read_json<T: for<'de> Deserialize<'de>>(req: Request<Incoming>) -> Result<T, Error> {
    let body = read_body(req).await?;
    serde_json::from_slice(&body).map_err(|e| Error::Body(store::json_error(&e)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameBody {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnforceBody {
    enforce: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    #[serde(default)]
    member: Option<String>,
    #[serde(default)]
    expires: Option<String>,
}

/// `PUT .../limits`: a rate limit to set (`burst` defaults to the rate's N); `DELETE` names one
/// with `subject` and `pattern` only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitBody {
    subject: String,
    pattern: String,
    #[serde(default)]
    rate: Option<String>,
    #[serde(default)]
    burst: Option<u64>,
}

/// `POST .../tools/approve`: which changed tools to approve (all of the workspace's when empty).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    tool: Option<String>,
    /// The reviewed definition's fingerprint (a prefix of 8 or more hex characters).
    #[serde(default)]
    fingerprint: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    member: String,
    patterns: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    name: String,
    #[serde(default)]
    patterns: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternsBody {
    patterns: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisabledBody {
    disabled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupRoleBody {
    role: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    token: String,
}

/// One role as listed.
pub(crate) async fn role_named(
    store: &store::Store,
    ws: &str,
    name: &str,
) -> Result<store::Role, Error> {
    store
        .role_list(ws)
        .await?
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| Error::Store(store::Error::NotFound("role", name.to_owned())))
}

/// `k=v&…` with percent-decoding (`+` is a space).
pub(crate) fn query_params(query: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = |b: u8| (b as char).to_digit(16);
                    match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                        (Some(h), Some(l)) => {
                            out.push((h * 16 + l) as u8);
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The audit filters of `GET /v1/audit`, as the CLI takes them.
fn audit_filter(query: &str) -> Result<audit::Filter, Error> {
    let mut f = audit::Filter::default();
    for (k, v) in query_params(query) {
        let int = |v: &str| {
            v.parse::<i64>()
                .map_err(|_| Error::Body(format!("{k}: not a number: {v:?}")))
        };
        match k.as_str() {
            "workspace" => f.workspace = Some(v),
            "member" => f.member = Some(v),
            "server" => f.server = Some(v),
            "tool" => f.tool = Some(v),
            "decision" => f.decision = Some(v),
            "status" => f.status = Some(v),
            "since" => f.since_ms = Some(audit::parse_time(&v)?),
            "until" => f.until_ms = Some(audit::parse_time(&v)?),
            "after" => f.after_id = Some(int(&v)?),
            "before" => f.before_id = Some(int(&v)?),
            "limit" => f.limit = Some(int(&v)?),
            _ => return Err(Error::Body(format!("unknown audit filter {k:?}"))),
        }
    }
    Ok(f)
}

impl Admin {
    /// Serves one request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let result = self.route(req).await;
        let resp = result.unwrap_or_else(Error::into_response);
        self.metrics.request("admin", resp.status().as_u16());
        tracing::debug!(%method, %path, status = resp.status().as_u16(), "admin request");
        Ok(resp)
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        bool::from(given.as_bytes().ct_eq(self.token.expose().as_bytes()))
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Error> {
        let path = req.uri().path().trim_end_matches('/').to_owned();
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        if req.method() == Method::GET && segments.is_empty() {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::SEE_OTHER;
            resp.headers_mut().insert(
                header::LOCATION,
                header::HeaderValue::from_static("/console/"),
            );
            return Ok(resp);
        }
        // The console signs in with the admin token and keeps a session of its own.
        if let ["console", rest @ ..] = segments.as_slice() {
            return Ok(self.console.handle(self, req, rest).await);
        }
        if req.method() == Method::GET && segments == ["healthz"] {
            return Ok(json_response(StatusCode::OK, &json!({"status": "ok"})));
        }
        // SCIM has its own bearer token per workspace, checked there.
        if let ["scim", "v2", workspace, rest @ ..] = segments.as_slice() {
            let query = req.uri().query().unwrap_or("").to_owned();
            return Ok(crate::scim::handle(&self.directory, req, workspace, rest, &query).await);
        }
        if !self.authorized(&req) {
            return Err(Error::Unauthorized);
        }
        if req.method() == Method::GET && segments == ["metrics"] {
            let text = self.metrics.render(&self.audit, &self.policies);
            let mut resp = Response::new(Full::new(Bytes::from(text)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return Ok(resp);
        }
        let query = req.uri().query().unwrap_or("").to_owned();
        let store = self.directory.store();
        let method = req.method().clone();
        let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
        let created = |v: Value| Ok(json_response(StatusCode::CREATED, &v));
        match (&method, segments.as_slice()) {
            (&Method::GET, ["v1", "workspaces"]) => ok(to_json(&store.workspace_list().await?)),
            (&Method::POST, ["v1", "workspaces"]) => {
                let body: NameBody = read_json(req).await?;
                let ws = store.workspace_create(&body.name).await?;
                self.changed().await;
                created(to_json(&ws))
            }
            (&Method::DELETE, ["v1", "workspaces", ws]) => {
                store.workspace_delete(ws).await?;
                self.changed().await;
                ok(json!({"deleted": ws}))
            }
            (&Method::PUT, ["v1", "workspaces", ws, "enforce"]) => {
                let body: EnforceBody = read_json(req).await?;
                store.enforce_set(ws, body.enforce).await?;
                self.changed().await;
                ok(json!({"workspace": ws, "enforce": body.enforce}))
            }
            (&Method::GET, ["v1", "workspaces", ws, "servers", "status"]) => {
                // Every stdio server of the workspace, with its process if it has one (a server
                // not used since the gateway started has none yet).
                let mut out = Vec::new();
                let running = self.stdio.status(ws);
                for server in store.server_list(ws).await? {
                    if !server.url.starts_with("stdio://") {
                        continue;
                    }
                    out.push(match running.iter().find(|p| p.server == server.name) {
                        Some(p) => to_json(p),
                        None => {
                            json!({"workspace": ws, "server": server.name, "state": "not started",
                            "restarts": 0, "in_flight": 0, "sessions": 0})
                        }
                    });
                }
                ok(Value::Array(out))
            }
            (&Method::GET, ["v1", "workspaces", ws, "servers"]) => {
                ok(to_json(&store.server_list(ws).await?))
            }
            (&Method::POST, ["v1", "workspaces", ws, "servers"]) => {
                // Parsed by the store, so that an error names the field at fault.
                let spec = store::NewServer::from_json(&read_body(req).await?)?;
                let server = store.server_add_spec(ws, spec).await?;
                self.changed().await;
                created(to_json(&server))
            }
            (&Method::PUT, ["v1", "workspaces", ws, "servers", name]) => {
                let spec = store::NewServer::from_json(&read_body(req).await?)?;
                if spec.name != *name {
                    return Err(Error::Body(
                        "name: must be the server named in the path".into(),
                    ));
                }
                let server = store.server_replace(ws, spec).await?;
                self.changed().await;
                ok(to_json(&server))
            }
            (&Method::DELETE, ["v1", "workspaces", ws, "servers", name]) => {
                store.server_remove(ws, name).await?;
                self.changed().await;
                ok(json!({"deleted": name}))
            }
            (&Method::GET, ["v1", "workspaces", ws, "members"]) => {
                ok(to_json(&store.member_list(ws).await?))
            }
            (&Method::POST, ["v1", "workspaces", ws, "members"]) => {
                let body: NameBody = read_json(req).await?;
                let member = store.member_add(ws, &body.name).await?;
                self.changed().await;
                created(to_json(&member))
            }
            (&Method::DELETE, ["v1", "workspaces", ws, "members", name]) => {
                store.member_remove(ws, name).await?;
                self.changed().await;
                ok(json!({"deleted": name}))
            }
            (&Method::PUT, ["v1", "workspaces", ws, "members", name, "disabled"]) => {
                let body: DisabledBody = read_json(req).await?;
                store.member_set_disabled(ws, name, body.disabled).await?;
                self.changed().await;
                ok(json!({"member": name, "disabled": body.disabled}))
            }
            (&Method::PUT, ["v1", "workspaces", ws, "members", name, "roles", role]) => {
                store.role_assign(ws, name, role).await?;
                self.changed().await;
                ok(json!({"member": name, "role": role}))
            }
            (&Method::DELETE, ["v1", "workspaces", ws, "members", name, "roles", role]) => {
                store.role_unassign(ws, name, role).await?;
                self.changed().await;
                ok(json!({"member": name, "unassigned": role}))
            }
            (&Method::GET, ["v1", "workspaces", ws, "roles"]) => {
                ok(to_json(&store.role_list(ws).await?))
            }
            (&Method::POST, ["v1", "workspaces", ws, "roles"]) => {
                let body: RoleBody = read_json(req).await?;
                store.role_create(ws, &body.name, &body.patterns).await?;
                self.changed().await;
                created(to_json(&role_named(store, ws, &body.name).await?))
            }
            (&Method::DELETE, ["v1", "workspaces", ws, "roles", name]) => {
                store.role_delete(ws, name).await?;
                self.changed().await;
                ok(json!({"deleted": name}))
            }
            (&Method::POST, ["v1", "workspaces", ws, "roles", name, "grants"]) => {
                let body: PatternsBody = read_json(req).await?;
                store.role_grant(ws, name, &body.patterns).await?;
                self.changed().await;
                ok(to_json(&role_named(store, ws, name).await?))
            }
            (&Method::DELETE, ["v1", "workspaces", ws, "roles", name, "grants"]) => {
                let body: PatternsBody = read_json(req).await?;
                store.role_revoke(ws, name, &body.patterns).await?;
                self.changed().await;
                ok(to_json(&role_named(store, ws, name).await?))
            }
            (&Method::GET, ["v1", "workspaces", ws, "idp"]) => match store.idp_get(ws).await? {
                Some(config) => {
                    let status = self.idp.status(&config);
                    ok(json!({"config": config, "status": status}))
                }
                None => Err(Error::Store(store::Error::NotFound(
                    "identity provider of",
                    (*ws).to_owned(),
                ))),
            },
            (&Method::PUT, ["v1", "workspaces", ws, "idp"]) => {
                let body = read_body(req).await?;
                let config: store::IdpConfig = serde_json::from_slice(&body)
                    .map_err(|e| Error::Body(store::json_error(&e)))?;
                store.idp_set(ws, &config).await?;
                self.changed().await;
                let directory = self.directory.clone();
                let idp = self.idp.clone();
                // Fetch the keys now, so the first token does not wait and status has news.
                tokio::spawn(async move { idp.refresh_all(&directory).await });
                ok(json!({"config": config}))
            }
            (&Method::DELETE, ["v1", "workspaces", ws, "idp"]) => {
                store.idp_remove(ws).await?;
                self.changed().await;
                ok(json!({"removed": ws}))
            }
            (&Method::GET, ["v1", "workspaces", ws, "tokens"]) => {
                ok(to_json(&store.token_list(ws).await?))
            }
            (&Method::POST, ["v1", "workspaces", ws, "tokens"]) => {
                let body: TokenBody = read_json(req).await?;
                let ttl = body
                    .expires
                    .as_deref()
                    .map(store::parse_duration)
                    .transpose()?;
                let issued = store.token_issue(ws, body.member.as_deref(), ttl).await?;
                self.changed().await;
                created(to_json(&issued))
            }
            (&Method::DELETE, ["v1", "workspaces", ws, "tokens", id]) => {
                store.token_revoke(id, Some(ws)).await?;
                self.changed().await;
                ok(json!({"revoked": id}))
            }
            (&Method::GET, ["v1", "workspaces", ws, "tools"]) => {
                ok(to_json(&store.pins(Some(ws)).await?))
            }
            (&Method::POST, ["v1", "workspaces", ws, "tools", "approve"]) => {
                let body: ApproveBody = read_json(req).await?;
                let approved = store
                    .pins_approve(
                        ws,
                        body.server.as_deref(),
                        body.tool.as_deref(),
                        body.fingerprint.as_deref(),
                    )
                    .await?;
                for p in &approved {
                    self.audit.event(
                        crate::audit::KIND_TOOL_APPROVED,
                        &p.workspace,
                        &p.server,
                        &p.tool,
                        "tool-approved",
                    );
                }
                ok(to_json(&approved))
            }
            (&Method::GET, ["v1", "workspaces", ws, "limits"]) => {
                ok(to_json(&store.limit_list(ws).await?))
            }
            (&Method::PUT, ["v1", "workspaces", ws, "limits"]) => {
                let body: LimitBody = read_json(req).await?;
                let rate = crate::limit::Rate::parse(body.rate.as_deref().unwrap_or(""))
                    .map_err(store::Error::from)?;
                let subject = store.limit_subject(ws, &body.subject).await?;
                let burst = body.burst.unwrap_or(rate.calls);
                store
                    .limit_set(ws, &subject, &body.pattern, rate, burst)
                    .await?;
                self.changed().await;
                ok(to_json(&store.limit_list(ws).await?))
            }
            (&Method::DELETE, ["v1", "workspaces", ws, "limits"]) => {
                let body: LimitBody = read_json(req).await?;
                let subject = match crate::limit::Subject::parse(&body.subject) {
                    Ok(s) => s,
                    Err(_) => store.limit_subject(ws, &body.subject).await?,
                };
                store
                    .limit_remove(ws, &subject.to_string(), &body.pattern)
                    .await?;
                self.changed().await;
                ok(to_json(&store.limit_list(ws).await?))
            }
            (&Method::GET, ["v1", "workspaces", ws, "grants"]) => {
                let member = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("member="))
                    .filter(|m| !m.is_empty());
                ok(to_json(&store.grant_list(ws, member).await?))
            }
            (&Method::POST, ["v1", "workspaces", ws, "grants"]) => {
                let body: GrantBody = read_json(req).await?;
                store.grant_add(ws, &body.member, &body.patterns).await?;
                self.changed().await;
                ok(to_json(&store.grant_list(ws, Some(&body.member)).await?))
            }
            (&Method::DELETE, ["v1", "workspaces", ws, "grants"]) => {
                let body: GrantBody = read_json(req).await?;
                store.grant_remove(ws, &body.member, &body.patterns).await?;
                self.changed().await;
                ok(to_json(&store.grant_list(ws, Some(&body.member)).await?))
            }
            (&Method::POST, ["v1", "tokens", "verify"]) => {
                let body: VerifyBody = read_json(req).await?;
                // Checked against this process's snapshot: what a request arriving now would get.
                ok(
                    match self
                        .directory
                        .snapshot()
                        .authenticate(&body.token, store::now_ms())
                    {
                        Ok(id) => json!({
                            "valid": true,
                            "token_id": id.token_id,
                            "workspace": id.principal.workspace,
                            "member": id.principal.member,
                            "grants": id.principal.grants,
                        }),
                        Err(r) => json!({"valid": false, "reason": r.error.to_string()}),
                    },
                )
            }
            (&Method::POST, ["v1", "workspaces", ws, "scim", "token"]) => {
                let token = store.scim_token_issue(ws).await?;
                created(
                    json!({"workspace": ws, "token": token, "base_path": format!("/scim/v2/{ws}")}),
                )
            }
            (&Method::DELETE, ["v1", "workspaces", ws, "scim", "token"]) => {
                store.scim_token_revoke(ws).await?;
                ok(json!({"workspace": ws, "scim": "revoked"}))
            }
            (&Method::PUT, ["v1", "workspaces", ws, "scim", "groups", group, "role"]) => {
                let body: GroupRoleBody = read_json(req).await?;
                store
                    .scim_group_map(ws, group, body.role.as_deref())
                    .await?;
                self.changed().await;
                ok(json!({"workspace": ws, "group": group, "role": body.role}))
            }
            (&Method::GET, ["v1", "policy", "status"]) => ok(to_json(&self.policies.status())),
            (&Method::GET, ["v1", "audit"]) => {
                let filter = audit_filter(&query)?;
                let records = audit::store::query(store.db(), &filter).await?;
                ok(json!({ "records": records }))
            }
            (&Method::GET, ["v1", "audit", "verify"]) => {
                let workspace = query_params(&query)
                    .into_iter()
                    .find(|(k, _)| k == "workspace")
                    .map(|(_, v)| v);
                let report = audit::store::verify(store.db(), workspace.as_deref(), &[]).await?;
                ok(json!({ "ok": report.broken.is_none(), "report": report }))
            }
            (&Method::GET, ["v1", "audit", "checkpoint"]) => {
                ok(to_json(&audit::store::heads(store.db()).await?))
            }
            _ => Err(Error::NoRoute(method, path)),
        }
    }

    /// After a write: make it hold on this process at once (other processes follow via the watcher).
    pub(crate) async fn changed(&self) {
        if let Err(e) = self.directory.reload().await {
            tracing::warn!(error = %e, "identity reload after admin change failed");
        }
    }
}

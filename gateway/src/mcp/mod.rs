//! The MCP endpoints: `/mcp/{server}` (a transparent Streamable HTTP proxy to one upstream of the
//! caller's workspace) and `/mcp` (the gateway as the MCP server of every upstream of the
//! workspace), with authentication, policy and audit on the way.
//!
//! One request, in the order of its stages (the files say where):
//! - [`Proxy::handle`] (here): route → guard (`guard.rs`: `Origin`, `Host`) → authenticate;
//! - the endpoint's handler, `server.rs` or `aggregate.rs`: read (`request.rs`) → decide
//!   (`policy`) → forward (`upstream`) → relay (`relay.rs`, with `sse.rs`);
//! - every failure is one [`Error`] (`error.rs`), mapped once to the client's answer and the
//!   audit record's status; the record of a `tools/call` is finished in one place per endpoint.

mod aggregate;
mod error;
mod guard;
pub mod jsonrpc;
mod relay;
mod request;
mod server;
mod session;
pub mod sse;

pub use aggregate::exposed_name;
pub use error::Error;
pub use guard::Origins;

use crate::audit::{self, Audit, Call};
use crate::identity::{AuthError, Directory, Identity, Refusal};
use crate::policy::PolicySet;
use crate::upstream::{self, Upstream};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::body::Incoming;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tracing::Instrument as _;

/// The body type of every response.
pub type Body = BoxBody<Bytes, sse::BoxError>;

/// Request limits of the MCP endpoint.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body; more is refused with 413.
    pub max_body_bytes: usize,
    /// Longest request URI; more is refused with 414.
    pub max_uri_bytes: usize,
    /// Largest `tools/list` or inspected tool result the gateway holds to rewrite.
    pub max_rewrite_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 4 * 1024 * 1024,
            max_uri_bytes: 8 * 1024,
            max_rewrite_bytes: 16 * 1024 * 1024,
        }
    }
}

/// The MCP endpoints' state.
pub struct Proxy {
    directory: Arc<Directory>,
    /// Checks identity-provider JWTs.
    idp: Arc<crate::oidc::Idp>,
    policies: Arc<PolicySet>,
    upstream: Upstream,
    limits: Limits,
    origins: Origins,
    /// Where clients reach the gateway, for the RFC 9728 metadata (else the request's `Host`).
    public_url: Option<String>,
    /// `/mcp/{server}`: the upstream sessions each token opened.
    sessions: session::Sessions,
    /// `/mcp`: the gateway's own sessions, its upstream sessions and the names it exposed.
    aggregates: aggregate::Aggregates,
    next_request: AtomicU64,
    request_prefix: String,
    audit: Arc<Audit>,
    metrics: Arc<crate::metrics::Metrics>,
    flows: Arc<crate::flow::Flows>,
    catalog: Arc<crate::catalog::Catalog>,
    /// Rate limits' buckets.
    limiter: Arc<crate::limit::Limiter>,
}

/// Which endpoint a path names.
enum Route {
    /// `/mcp/{server}`.
    Server(String),
    /// `/mcp`.
    Aggregated,
    /// `/.well-known/oauth-protected-resource[/path]`.
    Metadata,
}

impl Route {
    fn of(path: &str) -> Result<Route, Error> {
        if path == "/mcp" || path == "/mcp/" {
            return Ok(Route::Aggregated);
        }
        if path.starts_with("/.well-known/oauth-protected-resource") {
            return Ok(Route::Metadata);
        }
        match path
            .strip_prefix("/mcp/")
            .filter(|s| !s.is_empty() && !s.contains('/'))
        {
            Some(s) => Ok(Route::Server(s.to_owned())),
            None => Err(Error::NoEndpoint),
        }
    }

    /// The metrics label.
    fn label(route: &Result<Route, Error>) -> &'static str {
        match route {
            Ok(Route::Aggregated) => "mcp",
            Ok(Route::Server(_)) => "mcp_server",
            Ok(Route::Metadata) => "metadata",
            Err(_) => "other",
        }
    }
}

/// The gateway's settings for the MCP endpoints.
pub struct Settings {
    /// Request limits.
    pub limits: Limits,
    /// Origins and hosts accepted.
    pub origins: Origins,
    /// The URL clients reach the gateway at, when it sits behind a proxy.
    pub public_url: Option<String>,
    /// Flow labels of every session.
    pub flows: Arc<crate::flow::Flows>,
    /// The upstream tools seen, and their pins.
    pub catalog: Arc<crate::catalog::Catalog>,
}

/// `{name, version}` as the client gave it, each cut to 128 bytes.
pub(crate) fn client_info_of(info: &Value) -> Option<crate::policy::ClientInfo> {
    let field = |k: &str| -> String {
        let v = info.get(k).and_then(Value::as_str).unwrap_or_default();
        let mut end = v.len().min(128);
        while !v.is_char_boundary(end) {
            end -= 1;
        }
        v[..end].to_owned()
    };
    let name = field("name");
    (!name.is_empty()).then(|| crate::policy::ClientInfo {
        name,
        version: field("version"),
    })
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Holds a call's audit record open until its response body is done with.
fn tracked(resp: Response<Body>, call: Option<Arc<Call>>) -> Response<Body> {
    match call {
        Some(call) => resp.map(|b| audit::Tracked::new(b, call).boxed()),
        None => resp,
    }
}

/// The outcome of a request: the response, or the error it failed with, finished into the call's
/// audit record (if it is a `tools/call`) and answered to request `id`.
fn finish(
    result: Result<Response<Body>, Error>,
    call: Option<Arc<Call>>,
    id: Option<&Value>,
    request: bool,
) -> Response<Body> {
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            if let Some(call) = &call {
                let (status, code) = e.audit();
                call.finish(status, code);
            }
            if !matches!(
                e,
                Error::CallDenied(_) | Error::UnknownTool(_) | Error::RateLimited { .. }
            ) {
                tracing::info!(error = %e, "request failed");
            }
            e.into_response(id, request)
        }
    };
    tracked(resp, call)
}

impl Proxy {
    /// The endpoints over this identity snapshot, policy chain and upstream client.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        directory: Arc<Directory>,
        idp: Arc<crate::oidc::Idp>,
        policies: Arc<PolicySet>,
        upstream: Upstream,
        settings: Settings,
        audit: Arc<Audit>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Proxy {
        let mut seed = [0u8; 4];
        let _ = getrandom::fill(&mut seed);
        Proxy {
            directory,
            idp,
            policies,
            upstream: upstream.clone(),
            limits: settings.limits.clone(),
            origins: settings.origins,
            public_url: settings
                .public_url
                .map(|u| u.trim_end_matches('/').to_owned()),
            sessions: session::Sessions::new(session::MAX_SESSIONS, 1024),
            aggregates: aggregate::Aggregates::new(upstream::client::Client::new(
                upstream.clone(),
                settings.limits.max_rewrite_bytes,
            )),
            next_request: AtomicU64::new(1),
            request_prefix: hex::encode(seed),
            audit,
            limiter: Arc::new(crate::limit::Limiter::new(metrics.clone())),
            metrics,
            flows: settings.flows,
            catalog: settings.catalog,
        }
    }

    /// The client an `initialize` request names, bounded.
    fn client_info(msg: &jsonrpc::Message) -> Option<crate::policy::ClientInfo> {
        let info = msg.value.get("params")?.get("clientInfo")?;
        client_info_of(info)
    }

    /// Serves one HTTP request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let received = Instant::now();
        let n = self.next_request.fetch_add(1, Ordering::Relaxed);
        let request_id = format!("{}-{n}", self.request_prefix);
        // At debug level: at the default level a request that logs nothing must cost nothing
        // (an info span cost ~8 µs a call, a seventh of the gateway's CPU per call); the lines a
        // request writes at info and above carry their identifying fields themselves.
        let span = tracing::debug_span!("mcp", request_id = %request_id, workspace = tracing::field::Empty,
            member = tracing::field::Empty, server = tracing::field::Empty, method = tracing::field::Empty,
            tool = tracing::field::Empty, decision = tracing::field::Empty);
        let route = Route::of(req.uri().path());
        let endpoint = Route::label(&route);
        let resp = async {
            match self.route(req, route, request_id, received).await {
                Ok(resp) => resp,
                Err(e) => {
                    let request_id = format_args!("{}-{n}", self.request_prefix);
                    tracing::info!(%request_id, error = %e, "request refused");
                    e.into_response(None, false)
                }
            }
        }
        .instrument(span)
        .await;
        self.metrics.request(endpoint, resp.status().as_u16());
        Ok(resp)
    }

    /// Route → guard → authenticate → the endpoint's handler.
    async fn route(
        &self,
        req: Request<Incoming>,
        route: Result<Route, Error>,
        request_id: String,
        received: Instant,
    ) -> Result<Response<Body>, Error> {
        let route = route?;
        if let Route::Metadata = route {
            return Ok(self.resource_metadata(&req));
        }
        self.origins.check(req.headers())?;
        request::check_uri(req.uri(), &self.limits)?;
        let identity = match self.authenticate(req.headers()).await {
            Ok(id) => id,
            Err(refusal) => {
                let server = match &route {
                    Route::Server(s) => s.as_str(),
                    _ => "",
                };
                let who = refusal.who.as_deref().map(|id| audit::Refused {
                    workspace: &id.principal.workspace,
                    member: id.principal.member.as_deref(),
                    token_id: &id.token_id,
                    subject: id.subject.as_ref().map(|(s, _)| s.as_str()),
                    issuer: id.subject.as_ref().map(|(_, i)| i.as_str()),
                });
                self.audit
                    .auth_failure(who, server, refusal.error.code(), &request_id, received);
                return Ok(self.unauthorized(&req, &refusal));
            }
        };
        let span = tracing::Span::current();
        span.record("workspace", identity.principal.workspace.as_str());
        span.record(
            "member",
            identity
                .principal
                .member
                .as_deref()
                .unwrap_or("(workspace token)"),
        );
        match route {
            Route::Server(name) => {
                span.record("server", name.as_str());
                self.serve_server(req, &name, identity, request_id, received)
                    .await
            }
            Route::Aggregated => Ok(self.aggregate(req, identity, request_id, received).await),
            Route::Metadata => Ok(self.resource_metadata(&req)),
        }
    }

    /// Reserves the audit record of a `tools/call` request (`None` for any other message, or
    /// with the trail off); a full queue refuses the call.
    fn begin_call(
        &self,
        msg: &jsonrpc::Message,
        identity: &Identity,
        server: &str,
        request_id: &str,
        session_id: Option<&str>,
        received: Instant,
    ) -> Result<Option<Arc<Call>>, Error> {
        if msg.kind != jsonrpc::Kind::Request || msg.method() != Some("tools/call") {
            return Ok(None);
        }
        let start = audit::CallStart {
            workspace: &identity.principal.workspace,
            member: identity.principal.member.as_deref(),
            token_id: &identity.token_id,
            server,
            tool: msg.param_str("name").unwrap_or_default(),
            request_id,
            session_id,
            subject: identity.subject.as_ref().map(|(s, _)| s.as_str()),
            issuer: identity.subject.as_ref().map(|(_, i)| i.as_str()),
            received,
        };
        Ok(self.audit.begin_call(&start)?)
    }

    /// An `mcpgw_` token against the snapshot; anything else as a JWT of a workspace's identity
    /// provider.
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Identity>, Refusal> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or(AuthError::Missing)?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or(AuthError::Missing)?;
        let token = token.trim();
        if token.starts_with(crate::store::TOKEN_PREFIX) {
            self.directory.authenticate(token)
        } else {
            self.idp.authenticate(token, &self.directory).await
        }
    }

    /// Where clients reach the gateway: `public_url`, else what the request's `Host` says.
    fn base_url(&self, req: &Request<Incoming>) -> String {
        if let Some(url) = &self.public_url {
            return url.clone();
        }
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        format!("http://{host}")
    }

    /// The identity providers' issuers and required scopes of every workspace, each once, in
    /// name order: what the metadata and challenges name (the endpoint is shared by every
    /// workspace of this gateway).
    fn providers(&self) -> (Vec<String>, Vec<String>) {
        let snapshot = self.directory.snapshot();
        let mut issuers = std::collections::BTreeSet::new();
        let mut scopes = std::collections::BTreeSet::new();
        for idp in snapshot.workspaces().filter_map(|w| w.idp.as_ref()) {
            issuers.insert(idp.issuer.clone());
            scopes.extend(idp.scopes.iter().cloned());
        }
        (issuers.into_iter().collect(), scopes.into_iter().collect())
    }

    /// 401 (403 for a missing scope) with the RFC 9728 / RFC 6750 challenge.
    fn unauthorized(&self, req: &Request<Incoming>, refusal: &Refusal) -> Response<Body> {
        let e = refusal.error;
        let metadata = format!(
            "{}/.well-known/oauth-protected-resource{}",
            self.base_url(req),
            req.uri().path()
        );
        // The scopes the caller's workspace requires when it is known, else any workspace's.
        let scopes = match refusal.who.as_ref().and_then(|w| w.workspace.idp.clone()) {
            Some(idp) => idp.scopes.clone(),
            None => self.providers().1,
        };
        let mut challenge = format!("Bearer resource_metadata=\"{metadata}\"");
        match e {
            AuthError::Missing => {}
            AuthError::InsufficientScope => challenge.push_str(", error=\"insufficient_scope\""),
            _ => challenge.push_str(", error=\"invalid_token\""),
        }
        if !scopes.is_empty() {
            challenge.push_str(&format!(", scope=\"{}\"", scopes.join(" ")));
        }
        tracing::info!(error = %e, "authentication failed");
        let mut resp = Error::Auth(e).into_response(None, false);
        // The provider's keys are unavailable: not the token's fault, no challenge (a 503).
        if e != AuthError::KeysUnavailable
            && let Ok(v) = HeaderValue::from_str(&challenge)
        {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        resp
    }

    /// RFC 9728 protected-resource metadata: the workspaces' identity providers as authorization
    /// servers (none when only mcpgw's own tokens are in use) and their required scopes.
    fn resource_metadata(&self, req: &Request<Incoming>) -> Response<Body> {
        let resource_path = req
            .uri()
            .path()
            .strip_prefix("/.well-known/oauth-protected-resource")
            .unwrap_or("");
        let base = self.base_url(req);
        let resource = if resource_path.is_empty() {
            format!("{base}/mcp")
        } else {
            format!("{base}{resource_path}")
        };
        let (issuers, scopes) = self.providers();
        let mut meta = json!({
            "resource": resource,
            "authorization_servers": issuers,
            "bearer_methods_supported": ["header"],
            "resource_name": "mcpgw",
            "resource_documentation": "Sign in through your organisation's identity provider, or ask your workspace admin for a token: mcpgw token issue WORKSPACE MEMBER",
        });
        if !scopes.is_empty() {
            meta["scopes_supported"] = json!(scopes);
        }
        error::json(http::StatusCode::OK, &meta)
    }
}

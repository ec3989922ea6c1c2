//! Every way an MCP request can fail, mapped once to what the client gets (HTTP status, JSON-RPC
//! code and message) and what the audit record says (status and error code).
//!
//! Two kinds: *refusals of the request* (it cannot be taken at all: bad origin, no token, an
//! unreadable body) carry their own HTTP status and a JSON-RPC error without id; *answers* (the
//! request was a well-formed JSON-RPC request, and this is its outcome) go back as a JSON-RPC
//! error with the request's id and HTTP 200, so the client's pending call receives it. A
//! call-phase denial is the one answer that is a result: a tool result with `isError: true`
//! carrying the module's reason, so the model can correct itself.

use super::jsonrpc::{self, code};
use super::{Body, full};
use crate::audit::{self, Status};
use crate::identity::AuthError;
use crate::upstream;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::Value;

/// Why an MCP request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `Origin` names a site that is not this gateway's (DNS rebinding protection).
    #[error("origin {0:?} is not allowed")]
    ForbiddenOrigin(String),
    /// `Host` is not a name of this gateway while it listens on loopback.
    #[error("host {0:?} is not allowed")]
    ForbiddenHost(String),
    /// The request URI is over the bound.
    #[error("request URI too long")]
    UriTooLong,
    /// No such endpoint.
    #[error("not found: MCP endpoints are /mcp (every server) and /mcp/{{server}}")]
    NoEndpoint,
    /// A credential in the query string (it would end up in logs along the way).
    #[error("tokens in query strings are refused; use Authorization: Bearer")]
    TokenInQuery,
    /// Missing, unknown, expired or revoked token.
    #[error(transparent)]
    Auth(AuthError),
    /// `/mcp/{server}` names no server of the caller's workspace.
    #[error("unknown server {0:?} in this workspace")]
    UnknownServer(String),
    /// `Mcp-Session-Id` is malformed or repeated.
    #[error("invalid Mcp-Session-Id")]
    BadSessionId,
    /// `Mcp-Session-Id` names no session of this token (the client should open a new one).
    #[error("session not found")]
    SessionNotFound,
    /// An HTTP method the endpoint does not serve; the value lists those it does.
    #[error("method not allowed; use {0}")]
    MethodNotAllowed(&'static str),
    /// The body is over the bound.
    #[error("request body over {0} bytes")]
    BodyTooLarge(usize),
    /// The body could not be read.
    #[error("could not read the body: {0}")]
    BodyUnreadable(String),
    /// The body is not one JSON-RPC message.
    #[error(transparent)]
    Message(#[from] jsonrpc::Error),
    /// A message without an id that is not a notification.
    #[error("a message without an id must be a notifications/* method")]
    RequestWithoutId,
    /// `Mcp-Method` / `Mcp-Name` disagree with the body, or are missing (2026-07-28).
    #[error("{0}")]
    HeaderMismatch(String),
    /// `_meta` is malformed.
    #[error("invalid _meta: {0}")]
    InvalidMeta(String),
    /// A 2026-07-28 request in a revision the gateway does not speak.
    #[error("Unsupported protocol version")]
    UnsupportedVersion(String),
    /// A method the aggregated endpoint does not serve, asked in 2026-07-28 (HTTP 404).
    #[error("Method not found: {0}")]
    NoSuchMethod(String),
    /// A response that answers no request of this gateway.
    #[error("a response to no request of this gateway")]
    StrayResponse,

    /// The audit queue is full and the trail must not be skipped.
    #[error(transparent)]
    AuditFull(#[from] audit::QueueFull),
    /// A tool the caller may not see (or that does not exist): reported exactly like a missing one.
    #[error("Unknown tool: {0}")]
    UnknownTool(String),
    /// A prompt the caller may not use, or that does not exist.
    #[error("Unknown prompt: {0}")]
    UnknownPrompt(String),
    /// A resource that no server of the workspace listed.
    #[error("Unknown resource: {0}")]
    UnknownResource(String),
    /// Prompts, resources and other server-wide methods need a grant covering the whole server.
    #[error("{method} on {server} needs a grant covering the whole server ({server}:*)")]
    NeedsServerGrant {
        /// The method asked for.
        method: String,
        /// The server it is for.
        server: String,
    },
    /// A call-phase module refused the call: a tool result the model can read.
    #[error("{0}")]
    CallDenied(String),
    /// A rate limit refused the call: a JSON-RPC error saying when to retry (`data.retryAfterMs`).
    #[error("{reason}")]
    RateLimited {
        /// Which limit, and the wait.
        reason: String,
        /// When to retry.
        retry_after_ms: u64,
    },
    /// A task-augmented call while a module inspects results (its result would bypass them).
    #[error("task-augmented tool calls are refused while a policy inspects results")]
    TaskWhileInspecting,
    /// An answer replayed on a resumed stream that the result phase cannot attribute.
    #[error("a replayed result cannot be inspected by the gateway's policy; call the tool again")]
    ReplayedResult,
    /// A method the aggregated endpoint does not serve.
    #[error("Method not found: {0}")]
    MethodNotFound(String),
    /// The session table is full.
    #[error("too many open sessions; try again later")]
    TooManySessions,
    /// Forwarding failed (unreachable, timeout, unusable URL, missing secret).
    #[error(transparent)]
    Upstream(#[from] upstream::Error),
    /// The upstream refused the gateway's own credentials (never relayed as a challenge).
    #[error("upstream {server} refused the gateway's credentials ({status})")]
    UpstreamCredentials {
        /// Server name.
        server: String,
        /// The upstream's status.
        status: StatusCode,
    },
    /// The upstream's answer could not be read whole.
    #[error("upstream {server} answer unreadable: {reason}")]
    Unreadable {
        /// Server name.
        server: String,
        /// Why.
        reason: String,
    },
    /// The upstream's answer is not JSON.
    #[error("upstream {server} answer is not JSON: {reason}")]
    NotJson {
        /// Server name.
        server: String,
        /// Why.
        reason: String,
    },
    /// The upstream's stream failed before its answer.
    #[error("upstream {server} stream failed: {reason}")]
    StreamFailed {
        /// Server name.
        server: String,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// The HTTP status of a refusal; `None` for an answer (HTTP 200 to a request).
    fn refusal_status(&self) -> Option<StatusCode> {
        use Error::*;
        Some(match self {
            ForbiddenOrigin(_) | ForbiddenHost(_) => StatusCode::FORBIDDEN,
            UriTooLong => StatusCode::URI_TOO_LONG,
            NoEndpoint | UnknownServer(_) | SessionNotFound => StatusCode::NOT_FOUND,
            TokenInQuery
            | BadSessionId
            | BodyUnreadable(_)
            | Message(_)
            | RequestWithoutId
            | HeaderMismatch(_)
            | InvalidMeta(_)
            | UnsupportedVersion(_)
            | StrayResponse => StatusCode::BAD_REQUEST,
            NoSuchMethod(_) => StatusCode::NOT_FOUND,
            Auth(AuthError::InsufficientScope) => StatusCode::FORBIDDEN,
            Auth(AuthError::KeysUnavailable) => StatusCode::SERVICE_UNAVAILABLE,
            Auth(_) => StatusCode::UNAUTHORIZED,
            MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => return None,
        })
    }

    /// The JSON-RPC error code.
    pub fn code(&self) -> i64 {
        use Error::*;
        match self {
            Message(e) => e.code(),
            BodyUnreadable(_) => code::PARSE_ERROR,
            HeaderMismatch(_) => code::HEADER_MISMATCH,
            InvalidMeta(_)
            | UnknownTool(_)
            | UnknownPrompt(_)
            | UnknownResource(_)
            | NeedsServerGrant { .. }
            | TaskWhileInspecting => code::INVALID_PARAMS,
            MethodNotFound(_) | NoSuchMethod(_) => code::METHOD_NOT_FOUND,
            RateLimited { .. } => code::RATE_LIMITED,
            UnsupportedVersion(_) => code::UNSUPPORTED_VERSION,
            AuditFull(_)
            | ReplayedResult
            | TooManySessions
            | Upstream(_)
            | UpstreamCredentials { .. }
            | Unreadable { .. }
            | NotJson { .. }
            | StreamFailed { .. }
            | CallDenied(_) => code::INTERNAL_ERROR,
            _ => code::INVALID_REQUEST,
        }
    }

    /// How a `tools/call` that failed this way is recorded: status and error code.
    pub fn audit(&self) -> (Status, Option<String>) {
        use Error::*;
        let status = match self {
            Upstream(upstream::Error::Timeout { .. }) => Status::Timeout,
            Upstream(_)
            | UpstreamCredentials { .. }
            | Unreadable { .. }
            | NotJson { .. }
            | StreamFailed { .. } => Status::UpstreamError,
            _ => Status::Denied,
        };
        let code = match self {
            UpstreamCredentials { status, .. } => status.as_u16().to_string(),
            Unreadable { .. } => "unreadable".into(),
            NotJson { .. } => "not-json".into(),
            StreamFailed { .. } => "stream-error".into(),
            e => e.code().to_string(),
        };
        (status, Some(code))
    }

    /// The response: a refusal with its status, or the answer to request `id`. `request` says
    /// whether the message was a request (an answer to anything else is a 502: nobody waits
    /// for it).
    pub fn into_response(self, id: Option<&Value>, request: bool) -> Response<Body> {
        if let Error::CallDenied(text) = &self {
            return json(StatusCode::OK, &jsonrpc::tool_error_result(id, text));
        }
        let (status, id) = match self.refusal_status() {
            // Only the header check knows the message it refuses; others have no id to give.
            Some(s)
                if matches!(
                    self,
                    Error::HeaderMismatch(_)
                        | Error::InvalidMeta(_)
                        | Error::UnsupportedVersion(_)
                        | Error::NoSuchMethod(_)
                ) =>
            {
                (s, id)
            }
            Some(s) => (s, None),
            None if request => (StatusCode::OK, id),
            None => (StatusCode::BAD_GATEWAY, None),
        };
        let mut body = jsonrpc::error_response(id, self.code(), &self.to_string());
        if let Error::UnsupportedVersion(requested) = &self {
            body["error"]["data"] =
                serde_json::json!({"supported": super::request::SUPPORTED, "requested": requested});
        }
        if let Error::RateLimited { retry_after_ms, .. } = &self {
            body["error"]["data"] = serde_json::json!({"retryAfterMs": retry_after_ms});
        }
        let mut resp = json(status, &body);
        if let Error::MethodNotAllowed(allow) = self {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        resp
    }
}

/// A JSON response.
pub(super) fn json(status: StatusCode, value: &Value) -> Response<Body> {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

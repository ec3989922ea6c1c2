//! `/mcp/{server}`: a transparent proxy to one upstream. Both revisions pass through: 2025-11-25
//! (initialize, `Mcp-Session-Id`, GET stream, DELETE, server-to-client requests, `Last-Event-ID`)
//! and 2026-07-28 (stateless POST, `Mcp-Method`/`Mcp-Name` checked against the body).
//!
//! A POST reads top to bottom: read → (a `tools/call` reserves its audit record) → decide →
//! forward → relay; the record is finished in [`super::finish`].

use super::jsonrpc::{Kind, Message};
use super::relay::{self, Context, Relay, denial_text, log_denial};
use super::{Body, Error, Proxy, finish, request, session};
use crate::audit::Call;
use crate::catalog::{PinMode, Trust};
use crate::identity::{Identity, ServerView};
use crate::policy::Denial;
use crate::policy::Verdict;
use crate::upstream::{self, client::Revision};
use bytes::Bytes;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

/// Methods that touch a server's prompts, resources, completions, tasks or anything unknown, and so
/// need a server-wide grant; tools and the protocol's own plumbing do not.
pub(super) fn needs_server_grant(method: &str) -> bool {
    !matches!(
        method,
        "initialize"
            | "ping"
            | "tools/list"
            | "tools/call"
            | "server/discover"
            | "logging/setLevel"
            | "subscriptions/listen"
    )
}

impl Proxy {
    /// One request to `/mcp/{name}`.
    pub(super) async fn serve_server(
        &self,
        req: Request<Incoming>,
        name: &str,
        identity: Arc<Identity>,
        request_id: String,
        received: Instant,
    ) -> Result<Response<Body>, Error> {
        let server = identity
            .workspace
            .servers
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownServer(name.to_owned()))?;
        let session_key = request::session_id(req.headers())?.map(|s| {
            format!(
                "{}\u{1f}{}\u{1f}{s}",
                identity.principal.workspace, server.name
            )
        });
        if let Some(key) = &session_key
            && !self.sessions.owned_by(key, &identity.token_id)
        {
            return Err(Error::SessionNotFound);
        }
        let method = req.method().clone();
        match method {
            Method::POST => Ok(self.post(req, server, identity, request_id, received).await),
            Method::GET | Method::DELETE => {
                let ctx = self.context(&identity, &server, request_id, Value::Null, None);
                let relay = match method {
                    Method::GET => Relay::Resumed,
                    _ => Relay::Stream,
                };
                let resp = self
                    .forward(
                        &server,
                        method.clone(),
                        req.headers(),
                        Bytes::new(),
                        relay,
                        ctx,
                        false,
                    )
                    .await?;
                if method == Method::DELETE
                    && resp.status().is_success()
                    && let Some(key) = &session_key
                {
                    self.sessions.forget(key);
                }
                Ok(resp)
            }
            _ => Err(Error::MethodNotAllowed("GET, POST, DELETE")),
        }
    }

    fn context(
        &self,
        identity: &Arc<Identity>,
        server: &ServerView,
        request_id: String,
        client_id: Value,
        call: Option<Arc<Call>>,
    ) -> Context {
        // A client holds one session per server here: only its token ties its calls together.
        let key = crate::flow::key(&identity.principal.workspace, None, &identity.token_id);
        Context {
            chain: self.policies.chain(),
            identity: identity.clone(),
            server: server.name.clone(),
            request_id,
            rpc_id: client_id.clone(),
            client_id,
            call,
            aggregated: false,
            flow: relay::Flow::of(&self.flows, key),
            facts: None,
            catalog: self.catalog.clone(),
            limiter: self.limiter.clone(),
        }
    }

    async fn post(
        &self,
        req: Request<Incoming>,
        server: Arc<ServerView>,
        identity: Arc<Identity>,
        request_id: String,
        received: Instant,
    ) -> Response<Body> {
        let (parts, msg) = match request::read_message(req, &self.limits).await {
            Ok(read) => read,
            Err(e) => return finish(Err(e), None, None, false),
        };
        let span = tracing::Span::current();
        if let Some(m) = msg.method() {
            span.record("method", m);
        }
        let is_request = msg.kind == Kind::Request;
        let session = parts
            .headers
            .get(&upstream::MCP_SESSION_ID)
            .and_then(|v| v.to_str().ok());
        let call = match self.begin_call(
            &msg,
            &identity,
            &server.name,
            &request_id,
            session,
            received,
        ) {
            Ok(call) => call,
            Err(e) => return finish(Err(e), None, msg.id(), true),
        };
        let ctx = self.context(
            &identity,
            &server,
            request_id,
            msg.id().cloned().unwrap_or(Value::Null),
            call.clone(),
        );
        let result = self.post_message(&parts.headers, &msg, &server, ctx).await;
        finish(result, call, msg.id(), is_request)
    }

    /// Decide → forward → relay, for one POSTed message.
    async fn post_message(
        &self,
        headers: &http::HeaderMap,
        msg: &Message,
        server: &ServerView,
        mut ctx: Context,
    ) -> Result<Response<Body>, Error> {
        let relay = match (&msg.kind, msg.method()) {
            (Kind::Request, Some("initialize")) => {
                if let Some(info) = Proxy::client_info(msg) {
                    self.flows.set_client(&ctx.flow.key, info);
                }
                Relay::Stream
            }
            (Kind::Request, Some("tools/list")) => {
                self.catalog
                    .ensure_loaded(&ctx.identity.principal.workspace)
                    .await;
                Relay::FilterTools
            }
            (Kind::Request, Some("tools/call")) => {
                let tool = msg.param_str("name").unwrap_or_default().to_owned();
                tracing::Span::current().record("tool", tool.as_str());
                let arguments = msg.arguments_json();
                self.check_tool(&mut ctx, server, &tool, &tool, Revision::Legacy, None)
                    .await?;
                decide_call(&mut ctx, &tool, &arguments, &tool)?;
                if !ctx.chain.inspects_results() {
                    Relay::Stream
                } else if msg
                    .value
                    .get("params")
                    .is_some_and(|p| p.get("task").is_some())
                {
                    // A task's result arrives later through tasks/result, out of reach of the
                    // result phase: refuse rather than let it bypass inspection.
                    return Err(Error::TaskWhileInspecting);
                } else {
                    Relay::InspectResult { tool, arguments }
                }
            }
            (Kind::Request, Some(method)) if needs_server_grant(method) => {
                decide_server_wide(&ctx, method)?;
                Relay::Stream
            }
            _ => Relay::Stream,
        };
        // Forward exactly what was decided on: the parsed message, re-serialized (duplicate keys,
        // whitespace and number spellings cannot differ between the gateway's reading and the
        // upstream's). Answers the gateway rewrites are matched by an id of its own.
        let body = if msg.kind == Kind::Request && !matches!(relay, Relay::Stream) {
            ctx.rpc_id = relay::gateway_id(&ctx.request_id, &ctx.client_id);
            msg.to_json(Some(&ctx.rpc_id))
        } else {
            msg.to_json(None)
        };
        let tool_call = msg.kind == Kind::Request && msg.method() == Some("tools/call");
        self.forward(server, Method::POST, headers, body, relay, ctx, tool_call)
            .await
    }

    /// Forward → relay. A session id the upstream issues is bound to the caller's token.
    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        server: &ServerView,
        method: Method,
        headers: &http::HeaderMap,
        body: Bytes,
        relay: Relay,
        ctx: Context,
        tool_call: bool,
    ) -> Result<Response<Body>, Error> {
        if let Some(call) = &ctx.call {
            call.upstream_started();
        }
        let upstream = self
            .upstream
            .forward(server, method, headers, body)
            .await
            .inspect_err(|e| relay::log_upstream_failure(&ctx, e))?;
        if let Some(session) = upstream
            .headers()
            .get(&upstream::MCP_SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|s| s.len() <= session::MAX_SESSION_ID)
        {
            let key = format!(
                "{}\u{1f}{}\u{1f}{session}",
                ctx.identity.principal.workspace, server.name
            );
            self.sessions.bind(key, &ctx.identity.token_id);
        }
        relay::relay(
            &server.name,
            upstream,
            relay,
            ctx,
            tool_call,
            self.limits.max_rewrite_bytes,
        )
        .await
    }
}

/// Methods other than tools (prompts, resources, completions, tasks, anything else) reach a server
/// only for a member whose grants cover the whole server (`server:*`): grants name tools, so
/// nothing narrower can say a prompt or resource is allowed.
pub(super) fn decide_server_wide(ctx: &Context, method: &str) -> Result<(), Error> {
    let Verdict::Deny(d) = ctx.chain.decide(&ctx.question("*", None)) else {
        return Ok(());
    };
    log_denial(ctx, "server", &d);
    if !ctx.enforced() {
        return Ok(());
    }
    tracing::Span::current().record("decision", "deny");
    Err(Error::NeedsServerGrant {
        method: method.to_owned(),
        server: ctx.server.clone(),
    })
}

impl Proxy {
    /// Before a `tools/call` is decided: the tool's facts from the catalog (listing its server
    /// again when its last listing is stale or missing), and its pin. With `pinning = "enforce"`
    /// a tool whose definition is not the pinned one, or whose pin cannot be checked, is refused;
    /// a tool the server does not list is an unknown tool; a server whose listing fails fails
    /// the call with that error (nothing is forwarded).
    pub(super) async fn check_tool(
        &self,
        ctx: &mut Context,
        server: &ServerView,
        tool: &str,
        shown_as: &str,
        revision: Revision,
        meta: Option<&Value>,
    ) -> Result<(), Error> {
        let ws = &ctx.identity.principal.workspace;
        let loaded = self.catalog.ensure_loaded(ws).await;
        let mut known = self.catalog.known(ws, &server.name, tool);
        // With pinning off, facts come from the last listing, if any: nothing is listed for them.
        if known.is_none() && loaded && self.catalog.mode() != PinMode::Off {
            // A tool the caller may not see is unknown before the server is listed for it: no
            // upstream listing per call to a made-up or forbidden name.
            refuse_hidden(ctx, tool, shown_as)?;
            let revision = self.aggregates.client.revision(server, revision).await;
            match self
                .aggregates
                .client
                .list(
                    &ctx.identity.token_id,
                    server,
                    "tools/list",
                    "tools",
                    revision,
                    meta,
                )
                .await
            {
                Ok(listed) => {
                    for t in &listed.items {
                        self.catalog.observe(ws, &server.name, t);
                    }
                    known = self.catalog.known(ws, &server.name, tool);
                }
                Err(e) if self.catalog.mode() == PinMode::Enforce => {
                    relay::log_upstream_failure(ctx, &e);
                    return Err(e.into());
                }
                Err(e) => {
                    tracing::warn!(server = %server.name, error = %e, "cannot list the tools to check a call")
                }
            }
        }
        let trust = match known {
            Some((facts, trust)) => {
                ctx.facts = Some(facts);
                trust
            }
            None if loaded => {
                if self.catalog.mode() != PinMode::Enforce {
                    return Ok(());
                }
                // Listed just now, and not there: no definition to check it against.
                let d = Denial {
                    module: "pinning".into(),
                    digest: String::new(),
                    code: "tool-unlisted".into(),
                    reason: format!("{shown_as} is not listed by its server"),
                    fault: false,
                };
                log_denial(ctx, "pin", &d);
                if let Some(call) = &ctx.call {
                    call.denied(&d, true);
                }
                return Err(Error::UnknownTool(shown_as.to_owned()));
            }
            None => Trust::Unchecked,
        };
        if self.catalog.usable(trust) {
            return Ok(());
        }
        // Whether a tool changed is only told to callers who may see it.
        refuse_hidden(ctx, tool, shown_as)?;
        let (code, reason) = match trust {
            Trust::Changed => (
                "tool-changed",
                format!(
                    "the definition of {shown_as} changed since this workspace approved it; \
                     an admin must review it (mcpgw tools diff / approve) before it can be called"
                ),
            ),
            _ => (
                "tool-unchecked",
                format!(
                    "the definition of {shown_as} could not be checked against its pin; \
                     try again later"
                ),
            ),
        };
        let d = Denial {
            module: "pinning".into(),
            digest: String::new(),
            code: code.into(),
            reason,
            fault: false,
        };
        log_denial(ctx, "pin", &d);
        if let Some(call) = &ctx.call {
            call.denied(&d, true);
        }
        tracing::Span::current().record("decision", "deny");
        Err(Error::CallDenied(denial_text(&d)))
    }
}

/// An unknown-tool refusal when the caller may not see `tool` and the workspace enforces (the
/// list question without facts; [`decide_call`] asks it again with them).
fn refuse_hidden(ctx: &Context, tool: &str, shown_as: &str) -> Result<(), Error> {
    if !ctx.enforced() {
        return Ok(());
    }
    if let Verdict::Deny(d) = ctx.chain.decide(&ctx.question_about(tool, None, None)) {
        log_denial(ctx, "list", &d);
        if let Some(call) = &ctx.call {
            call.denied(&d, true);
        }
        tracing::Span::current().record("decision", "deny");
        return Err(Error::UnknownTool(shown_as.to_owned()));
    }
    Ok(())
}

/// Policy for a `tools/call`: visibility first (a hidden tool is an unknown tool, named as the
/// client named it), then the call-phase modules with its arguments, any of which may refuse (a
/// refusal is a tool error the model can read). Labels the call-phase modules attached are
/// applied to the flow when the call goes ahead.
pub(super) fn decide_call(
    ctx: &mut Context,
    tool: &str,
    arguments: &str,
    shown_as: &str,
) -> Result<(), Error> {
    let span = tracing::Span::current();
    let mut decision = "allow";
    if let Verdict::Deny(d) = ctx.chain.decide(&ctx.question(tool, None)) {
        log_denial(ctx, "list", &d);
        if let Some(call) = &ctx.call {
            call.denied(&d, ctx.enforced());
        }
        if ctx.enforced() {
            span.record("decision", "deny");
            return Err(Error::UnknownTool(shown_as.to_owned()));
        }
        decision = "would-deny";
    }
    let mut labels = Vec::new();
    if let Verdict::Deny(d) = ctx
        .chain
        .veto_labelled(&ctx.question(tool, Some(arguments)), &mut labels)
    {
        log_denial(ctx, "call", &d);
        if let Some(call) = &ctx.call {
            call.denied(&d, ctx.enforced());
        }
        if ctx.enforced() {
            span.record("decision", "deny");
            return Err(Error::CallDenied(denial_text(&d)));
        }
        decision = "would-deny";
    }
    // Rate limits last: a call the policy refuses takes nothing from a bucket.
    let limits = &ctx.identity.workspace.limits;
    if !limits.is_empty()
        && let Err(refused) = ctx.limiter.take(limits, &ctx.identity, &ctx.server, tool)
    {
        let d = Denial {
            module: "rate-limit".into(),
            digest: String::new(),
            code: "rate-limited".into(),
            reason: refused.reason(&ctx.server, tool),
            fault: false,
        };
        log_denial(ctx, "call", &d);
        ctx.limiter.count_refusal(ctx.enforced());
        if let Some(call) = &ctx.call {
            call.denied(&d, ctx.enforced());
        }
        if ctx.enforced() {
            span.record("decision", "deny");
            return Err(Error::RateLimited {
                reason: d.reason,
                retry_after_ms: u64::try_from(refused.retry_after.as_millis()).unwrap_or(u64::MAX),
            });
        }
        decision = "would-deny";
    }
    span.record("decision", decision);
    ctx.apply_labels(&labels);
    tracing::debug!(decision, "tools/call forwarded");
    Ok(())
}

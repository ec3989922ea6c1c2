//! The way back, shared by both endpoints: an upstream's response becomes the client's.
//!
//! Bodies stream; an SSE event is forwarded the moment its blank line arrives. The gateway looks
//! inside only where it must: the answer to the request it forwarded is found by its id (the
//! gateway's own whenever the answer is rewritten, so matching never depends on how an upstream
//! re-encodes a client's id), given back the client's id, and
//! - filtered per tool through the chain's list phase (`tools/list`), marked `cacheScope: private`
//!   (what a member sees depends on their grants);
//! - run through the result phase when a module inspects results (`tools/call`);
//! - read for the call's outcome (audit);
//! - on `/mcp`, completed to the client's revision (`resultType`), and server-to-client requests
//!   given ids that route the client's reply back to their upstream.
//!
//! A `tools/call`'s stream ends with its answer; its headers wait for the first event
//! ([`sse::primed`]), so a quick call's whole answer leaves in one write.

use super::jsonrpc::{self, Answer};
use super::{Body, Error, full, sse};
use crate::audit::Call;
use crate::catalog::Catalog;
use crate::flow::{Flows, Labels};
use crate::identity::Identity;
use crate::policy::{ClientInfo, Denial, PolicyChain, Question, ToolFacts, Verdict};
use crate::upstream;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Limited};
use serde_json::{Value, json};
use std::sync::Arc;

/// Prefix of relayed server-to-client request ids on `/mcp`: `mcpgw~{server}~{id}`.
pub const RELAY_ID: &str = "mcpgw~";

/// What to do with the answer.
pub enum Relay {
    /// Pass it through (read only for a call's outcome).
    Stream,
    /// Filter `result.tools`.
    FilterTools,
    /// Run the result phase on this call's result.
    InspectResult {
        /// The tool as the upstream knows it.
        tool: String,
        /// Its arguments, as the call phase saw them.
        arguments: String,
    },
    /// A GET stream (2025-11-25): answers replayed on it (`Last-Event-ID`) get the same
    /// filtering, or are withheld when the result phase cannot attribute them.
    Resumed,
}

/// Everything the relay needs to know about the request it answers.
pub struct Context {
    /// The chain the request was decided by (kept to the end of the request).
    pub chain: Arc<PolicyChain>,
    /// The caller.
    pub identity: Arc<Identity>,
    /// The upstream server.
    pub server: String,
    /// The gateway's request id (logs, audit, policy).
    pub request_id: String,
    /// The id the upstream sees.
    pub rpc_id: Value,
    /// The client's id, restored on the answer.
    pub client_id: Value,
    /// The audit record of a `tools/call`.
    pub call: Option<Arc<Call>>,
    /// On `/mcp`: the answer is completed to the client's revision, server-to-client requests
    /// are renamed with [`RELAY_ID`], and the upstream's session header is not the client's.
    pub aggregated: bool,
    /// The request's flow: its labels, client and where new labels go.
    pub flow: Flow,
    /// The called tool's facts (`tools/call`), when the catalog has them.
    pub facts: Option<Arc<ToolFacts>>,
    /// The upstream tools seen, and their pins.
    pub catalog: Arc<Catalog>,
    /// Rate limits' buckets.
    pub limiter: Arc<crate::limit::Limiter>,
}

/// The flow a request belongs to (see [`crate::flow`]).
#[derive(Clone)]
pub struct Flow {
    /// Every flow's labels.
    pub flows: Arc<Flows>,
    /// This flow's key.
    pub key: String,
    /// Its labels when the request began (and after its call phase).
    pub labels: Labels,
    /// The client, as it named itself.
    pub client: Option<Arc<ClientInfo>>,
}

impl Flow {
    /// The flow `key` of `flows`, as it stands.
    pub fn of(flows: &Arc<Flows>, key: String) -> Flow {
        let (labels, client) = flows.state(&key);
        Flow {
            flows: flows.clone(),
            key,
            labels,
            client,
        }
    }
}

/// The deny as a log line, with the request's identifying fields (the request span is at
/// debug level, so that a call that logs nothing costs nothing).
pub fn log_denial(ctx: &Context, phase: &str, d: &Denial) {
    let decision = if ctx.enforced() { "deny" } else { "would-deny" };
    let p = &ctx.identity.principal;
    tracing::info!(request_id = %ctx.request_id, workspace = %p.workspace,
        member = p.member.as_deref().unwrap_or("(workspace token)"), server = %ctx.server,
        phase, decision, module = %d.module, code = %d.code, fault = d.fault, "policy denial");
}

/// An upstream that could not be reached or did not answer, as a log line.
pub fn log_upstream_failure(ctx: &Context, e: &upstream::Error) {
    tracing::warn!(request_id = %ctx.request_id, workspace = %ctx.identity.principal.workspace,
        server = %ctx.server, error = %e, "upstream failed");
}

/// What a refused call tells the model.
pub fn denial_text(d: &Denial) -> String {
    format!("Denied by policy {} ({}): {}", d.module, d.code, d.reason)
}

impl Context {
    /// The policy question about `tool` of this request's server.
    pub fn question<'a>(&'a self, tool: &'a str, arguments: Option<&'a str>) -> Question<'a> {
        self.question_about(tool, arguments, self.facts.as_deref())
    }

    /// The policy question about `tool` with these facts.
    pub fn question_about<'a>(
        &'a self,
        tool: &'a str,
        arguments: Option<&'a str>,
        facts: Option<&'a ToolFacts>,
    ) -> Question<'a> {
        Question {
            request_id: &self.request_id,
            principal: &self.identity.principal,
            server: &self.server,
            tool,
            arguments,
            facts,
            client: self.flow.client.as_deref(),
            labels: &self.flow.labels,
        }
    }

    /// Applies the labels a phase's modules attached to the request's flow, and records them
    /// in the call's audit record; the flow's labels are read again for later questions.
    pub fn apply_labels(&mut self, labels: &[String]) {
        if labels.is_empty() {
            return;
        }
        let added = self.flow.flows.apply(&self.flow.key, labels);
        // A session's labels also hold for its token's flow: the token's calls on
        // `/mcp/{server}` (and stateless ones on `/mcp`) are where the same client could go
        // around the session. Other sessions of the token start clean.
        if crate::flow::is_session(&self.flow.key) {
            let p = &self.identity.principal;
            let token_flow = crate::flow::key(&p.workspace, None, &self.identity.token_id);
            self.flow.flows.apply(&token_flow, labels);
        }
        if let Some(call) = &self.call {
            call.labelled(labels);
        }
        if !added.is_empty() {
            tracing::info!(request_id = %self.request_id, workspace = %self.identity.principal.workspace,
                server = %self.server, labels = %added.join(","), "flow labelled");
        }
        self.flow.labels = self.flow.flows.labels(&self.flow.key);
    }

    /// The workspace enforces its policy (else denials are would-deny).
    pub fn enforced(&self) -> bool {
        self.identity.workspace.enforce
    }

    /// Whether the caller may see `tool` (with enforcement off, every tool is visible).
    pub fn visible(&self, tool: &str, facts: Option<&ToolFacts>) -> bool {
        match self.chain.decide(&self.question_about(tool, None, facts)) {
            Verdict::Allow => true,
            Verdict::Deny(_) => !self.enforced(),
        }
    }

    /// Whether a listed tool is shown: its definition is the pinned one (or pinning lets it
    /// through), and the chain lets the caller see it.
    fn shown(&self, tool: &Value) -> bool {
        let name = tool.get("name").and_then(Value::as_str).unwrap_or("");
        let (facts, trust) =
            self.catalog
                .observe(&self.identity.principal.workspace, &self.server, tool);
        if !self.catalog.usable(trust) {
            tracing::debug!(tool = name, ?trust, "hidden: definition not the pinned one");
            return false;
        }
        self.visible(name, Some(&facts))
    }

    /// Drops tools the caller may not see from a `tools/list` result, which is then private.
    fn filter_tools(&self, response: &mut Value) {
        let Some(result) = response.get_mut("result").and_then(Value::as_object_mut) else {
            return;
        };
        if let Some(tools) = result.get_mut("tools").and_then(Value::as_array_mut) {
            let before = tools.len();
            tools.retain(|t| self.shown(t));
            tracing::debug!(
                listed = before,
                visible = tools.len(),
                "tools/list filtered"
            );
        }
        make_private(result);
    }

    /// Replaces a tool result a module refuses (when enforcement is on); applies the labels
    /// the result phase attached.
    fn inspect(&mut self, response: &mut Value, tool: &str, arguments: &str) {
        let Some(result) = response.get("result") else {
            return;
        };
        let mut labels = Vec::new();
        let verdict = self.chain.inspect_result_labelled(
            &self.question(tool, Some(arguments)),
            &result.to_string(),
            &mut labels,
        );
        self.apply_labels(&labels);
        if let Verdict::Deny(d) = verdict {
            log_denial(self, "result", &d);
            if let Some(call) = &self.call {
                call.denied(&d, self.enforced());
            }
            if self.enforced() {
                *response = jsonrpc::tool_error_result(Some(&self.client_id), &denial_text(&d));
            }
        }
    }

    /// Rewrites the answer to this request and gives it back the client's id.
    fn rewrite(&mut self, relay: &Relay, response: &mut Value) {
        match relay {
            Relay::FilterTools => self.filter_tools(response),
            Relay::InspectResult { tool, arguments } => self.inspect(response, tool, arguments),
            Relay::Stream | Relay::Resumed => {}
        }
        if self.aggregated
            && let Some(result) = response.get_mut("result").and_then(Value::as_object_mut)
        {
            complete_result(result);
        }
        if let Some(call) = &self.call {
            call.answered(Answer::outcome_of(response));
        }
        response["id"] = self.client_id.clone();
    }

    /// Reads a message passing through untouched for the outcome of the call it may answer:
    /// true when it is that answer, an error when it is not JSON.
    fn watch(&self, text: &[u8]) -> Result<bool, serde_json::Error> {
        let answer = Answer::read(text)?;
        if answer.id.as_ref() != Some(&self.rpc_id) {
            return Ok(false);
        }
        if let Some(call) = &self.call {
            call.answered(answer.outcome);
        }
        Ok(true)
    }

    /// An answer replayed on a GET stream: tool lists are filtered, tool results withheld when a
    /// module inspects results (the gateway no longer knows which call they answer), and the
    /// gateway's ids turned back into the client's.
    fn rewrite_resumed(&self, response: &mut Value) -> bool {
        if response.get("method").is_some() || response.get("id").is_none() {
            return false;
        }
        if let Some(client_id) = response["id"].as_str().and_then(client_id_from_gateway_id) {
            response["id"] = client_id;
        }
        if response.pointer("/result/tools").is_some() {
            self.filter_tools(response);
        } else if response.get("result").is_some() && self.chain.inspects_results() {
            let e = Error::ReplayedResult;
            *response = jsonrpc::error_response(response.get("id"), e.code(), &e.to_string());
        }
        true
    }

    /// What one SSE event of the upstream's stream becomes.
    fn event(&mut self, relay: &Relay, tool_call: bool, event: &sse::Event<'_>) -> sse::Step {
        let Some(data) = event.data.as_deref() else {
            return sse::Step::PASS;
        };
        if let Relay::Resumed = relay {
            let rewritten = || {
                let mut value: Value = serde_json::from_str(data).ok()?;
                self.rewrite_resumed(&mut value)
                    .then(|| event.with_data(&value.to_string()))
            };
            return rewritten().into();
        }
        if let (Relay::Stream, false) = (relay, self.aggregated) {
            // A call's answer passes untouched: read for its id and outcome; it ends the stream.
            // An event that is not JSON is not the answer and passes as it came.
            let answer = tool_call && self.watch(data.as_bytes()).unwrap_or(false);
            return sse::Step {
                last: answer,
                ..sse::Step::PASS
            };
        }
        let Ok(mut value) = serde_json::from_str::<Value>(data) else {
            return sse::Step::PASS;
        };
        if value.get("id") == Some(&self.rpc_id) && value.get("method").is_none() {
            self.rewrite(relay, &mut value);
            return sse::Step::replace(event.with_data(&value.to_string())).last();
        }
        if value.get("method").is_none()
            && value.get("id").is_some()
            && matches!(relay, Relay::FilterTools | Relay::InspectResult { .. })
        {
            // An answer under another id would reach the client unfiltered or uninspected.
            tracing::warn!(server = %self.server, "upstream answered under an id the gateway did not send; dropped");
            return sse::Step::replace(bytes::Bytes::new());
        }
        if self.aggregated && value.get("method").is_some() && value.get("id").is_some() {
            // A server-to-client request: the client's reply must find its way back here.
            let id = value["id"].to_string();
            value["id"] = json!(format!("{RELAY_ID}{}~{id}", self.server));
            return sse::Step::replace(event.with_data(&value.to_string()));
        }
        sse::Step::PASS
    }

    /// Whether the answer must be parsed and rewritten, not just read.
    fn rewrites(&self, relay: &Relay) -> bool {
        self.aggregated || !matches!(relay, Relay::Stream | Relay::Resumed)
    }
}

/// Marks a list the gateway filtered per member as private, keeping the upstream's TTL (none
/// given: 0, nothing to keep).
pub fn make_private(result: &mut serde_json::Map<String, Value>) {
    result.insert("cacheScope".into(), json!("private"));
    if !result.get("ttlMs").is_some_and(Value::is_u64) {
        result.insert("ttlMs".into(), json!(0));
    }
}

/// Completes a result from an upstream to what the client's revision requires: every result has
/// a `resultType` (an earlier-revision upstream's results are complete).
pub fn complete_result(result: &mut serde_json::Map<String, Value>) {
    if !result.contains_key("resultType") {
        result.insert("resultType".into(), json!("complete"));
    }
}

/// The id the upstream sees for a request whose answer the gateway rewrites: unique, and carrying
/// the client's id so that an answer replayed later can be given back its own.
pub fn gateway_id(request_id: &str, client_id: &Value) -> Value {
    json!(format!("mcpgw-{request_id}~{client_id}"))
}

/// The client's id inside a [`gateway_id`].
fn client_id_from_gateway_id(id: &str) -> Option<Value> {
    let rest = id.strip_prefix("mcpgw-")?;
    serde_json::from_str(rest.split_once('~')?.1).ok()
}

/// Turns the upstream's response to a forwarded message into the client's. `tool_call`: the
/// message was a `tools/call` request, whose answer ends its stream. `max_held`: the bound on a
/// JSON answer held to be rewritten or read.
pub async fn relay(
    server: &str,
    upstream: upstream::UpstreamResponse,
    relay: Relay,
    mut ctx: Context,
    tool_call: bool,
    max_held: usize,
) -> Result<Response<Body>, Error> {
    let status = upstream.status();
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        // The upstream refused the gateway's own credentials; the client cannot fix that, and
        // the upstream's OAuth challenge must not send it to another authorization server.
        tracing::error!(
            status = status.as_u16(),
            "upstream refused the gateway's credentials"
        );
        return Err(Error::UpstreamCredentials {
            server: server.to_owned(),
            status,
        });
    }
    let mut headers = upstream::response_headers(upstream.headers());
    let sse = upstream::is_event_stream(upstream.headers());
    let body = upstream.into_body();
    if ctx.aggregated {
        headers.remove(&upstream::MCP_SESSION_ID);
    }
    // Streams that end with the answer the gateway watches for; their headers wait for the
    // first event.
    let answer_stream =
        sse && !matches!(relay, Relay::Resumed) && (tool_call || ctx.rewrites(&relay));
    let body: Body = if sse {
        if !answer_stream && !matches!(relay, Relay::Resumed) {
            body.map_err(Into::into).boxed()
        } else {
            sse::Rewrite::new(body, move |event: &sse::Event<'_>| {
                ctx.event(&relay, tool_call, event)
            })
            .boxed()
        }
    } else if !ctx.rewrites(&relay) && (!tool_call || ctx.call.is_none()) {
        body.map_err(Into::into).boxed()
    } else {
        // A JSON answer: held (bounded), then rewritten, or only read for its outcome and sent
        // unchanged. What cannot be read fails closed: it cannot be filtered, inspected or
        // audited.
        let bytes = Limited::new(body, max_held)
            .collect()
            .await
            .map_err(|e| Error::Unreadable {
                server: server.to_owned(),
                reason: e.to_string(),
            })?
            .to_bytes();
        let not_json = |e: serde_json::Error| Error::NotJson {
            server: server.to_owned(),
            reason: e.to_string(),
        };
        if ctx.rewrites(&relay) {
            let mut value: Value = serde_json::from_slice(&bytes).map_err(not_json)?;
            if value.get("id") == Some(&ctx.rpc_id) {
                ctx.rewrite(&relay, &mut value);
            } else if matches!(relay, Relay::FilterTools | Relay::InspectResult { .. }) {
                // Under another id it would reach the client unfiltered or uninspected.
                return Err(Error::Unreadable {
                    server: server.to_owned(),
                    reason: "the answer's id is not the request's".into(),
                });
            }
            headers.remove(header::CONTENT_LENGTH);
            full(value.to_string())
        } else {
            ctx.watch(&bytes).map_err(not_json)?;
            full(bytes)
        }
    };
    let body = if answer_stream {
        let primed = sse::primed(body, sse::FIRST_EVENT_WAIT).await;
        if let Some(e) = primed.failed() {
            return Err(Error::StreamFailed {
                server: server.to_owned(),
                reason: e.to_string(),
            });
        }
        primed.boxed()
    } else {
        body
    };
    Ok(respond(status, headers, body, sse))
}

fn respond(status: StatusCode, headers: http::HeaderMap, body: Body, sse: bool) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    if sse {
        resp.headers_mut().insert(
            upstream::X_ACCEL_BUFFERING.clone(),
            HeaderValue::from_static("no"),
        );
    }
    resp
}

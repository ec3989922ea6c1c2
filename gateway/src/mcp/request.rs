//! The read stage, shared by both endpoints: the request line and headers are checked, the body is
//! read (bounded) and parsed into one JSON-RPC message, and the 2026-07-28 routing headers
//! (`Mcp-Method`, `Mcp-Name`) are checked against it. Policy decides on the body, never on the
//! headers, so a header that says otherwise is refused rather than trusted.

use super::jsonrpc::{Kind, Message};
use super::session::MAX_SESSION_ID;
use super::{Error, Limits};
use crate::upstream;
use http::{HeaderMap, HeaderName, Request};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;

/// The first revision without sessions.
pub const MODERN: &str = "2026-07-28";
/// Revisions the gateway speaks to clients on `/mcp`, newest first.
pub const SUPPORTED: &[&str] = &["2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26"];

/// Refuses what can be refused before authentication: an over-long URI, or a credential in the
/// query string (it would end up in access logs along the way).
pub fn check_uri(uri: &http::Uri, limits: &Limits) -> Result<(), Error> {
    let len = uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if len > limits.max_uri_bytes {
        return Err(Error::UriTooLong);
    }
    let query = uri.query().unwrap_or("");
    if query.split('&').any(|kv| {
        let k = kv.split('=').next().unwrap_or("");
        matches!(k, "access_token" | "token" | "api_key" | "key" | "auth")
    }) {
        return Err(Error::TokenInQuery);
    }
    Ok(())
}

/// The request's `Mcp-Session-Id`: absent, or one well-formed value.
pub fn session_id(headers: &HeaderMap) -> Result<Option<String>, Error> {
    let mut values = headers.get_all(&upstream::MCP_SESSION_ID).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(id)
            if values.next().is_none()
                && !id.is_empty()
                && id.len() <= MAX_SESSION_ID
                && id.bytes().all(|b| (0x21..=0x7e).contains(&b)) =>
        {
            Ok(Some(id.to_owned()))
        }
        _ => Err(Error::BadSessionId),
    }
}

/// True when the request speaks the stateless revision (2026-07-28 or later).
pub fn is_modern(headers: &HeaderMap) -> bool {
    headers
        .get(&upstream::MCP_PROTOCOL_VERSION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v >= MODERN)
}

/// Reads (bounded) and parses the body, and checks `Mcp-Method`/`Mcp-Name` against it.
pub async fn read_message(
    req: Request<Incoming>,
    limits: &Limits,
) -> Result<(http::request::Parts, Message), Error> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, limits.max_body_bytes).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Error::BodyTooLarge(limits.max_body_bytes));
        }
        Err(e) => return Err(Error::BodyUnreadable(e.to_string())),
    };
    let msg = Message::parse(&body)?;
    if msg.kind == Kind::Notification
        && !msg
            .method()
            .unwrap_or_default()
            .starts_with("notifications/")
    {
        // A request without an id would skip every decision made on requests.
        return Err(Error::RequestWithoutId);
    }
    check_routing_headers(&parts.headers, &msg).map_err(Error::HeaderMismatch)?;
    Ok((parts, msg))
}

/// `=?base64?…?=` header values (2026-07-28) decoded; plain values as they are.
fn header_text(headers: &HeaderMap, name: &HeaderName) -> Option<Result<String, ()>> {
    let raw = headers.get(name)?.to_str().map_err(|_| ());
    Some(raw.and_then(|v| {
        match v
            .strip_prefix("=?base64?")
            .and_then(|r| r.strip_suffix("?="))
        {
            Some(b64) => base64_decode(b64).and_then(|b| String::from_utf8(b).map_err(|_| ())),
            None => Ok(v.to_owned()),
        }
    }))
}

fn base64_decode(s: &str) -> Result<Vec<u8>, ()> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return Err(()),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// Checks `Mcp-Method` / `Mcp-Name` against the body.
fn check_routing_headers(headers: &HeaderMap, msg: &Message) -> Result<(), String> {
    for name in [
        &upstream::MCP_METHOD,
        &upstream::MCP_NAME,
        &upstream::MCP_PROTOCOL_VERSION,
    ] {
        if headers.get_all(name).iter().count() > 1 {
            return Err(format!("{name} header given more than once"));
        }
    }
    let method = msg.method().unwrap_or_default();
    match header_text(headers, &upstream::MCP_METHOD) {
        Some(Ok(h)) if h == method => {}
        Some(Ok(h)) => {
            return Err(format!(
                "Mcp-Method header {h:?} does not match the body's method {method:?}"
            ));
        }
        Some(Err(())) => return Err("Mcp-Method header is not valid".into()),
        None if is_modern(headers) && msg.kind != Kind::Notification => {
            return Err("Mcp-Method header is required".into());
        }
        None => {}
    }
    let name_field = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return Ok(()),
    };
    let body_name = msg.param_str(name_field).unwrap_or_default();
    match header_text(headers, &upstream::MCP_NAME) {
        Some(Ok(h)) if h == body_name => Ok(()),
        Some(Ok(h)) => Err(format!(
            "Mcp-Name header {h:?} does not match the body's {name_field} {body_name:?}"
        )),
        Some(Err(())) => Err("Mcp-Name header is not valid".into()),
        None if is_modern(headers) => Err("Mcp-Name header is required".into()),
        None => Ok(()),
    }
}

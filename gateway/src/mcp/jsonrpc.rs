//! The few JSON-RPC facts the gateway needs from a message: its kind, id and method, and for
//! `tools/call` the tool name and arguments. The message itself is forwarded byte for byte.

use serde_json::{Map, Value, json};

/// JSON-RPC error codes the gateway answers with.
pub mod code {
    /// Invalid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a JSON-RPC 2.0 message.
    pub const INVALID_REQUEST: i64 = -32600;
    /// Unknown tool (MCP reports unknown tools as invalid params).
    pub const INVALID_PARAMS: i64 = -32602;
    /// The gateway failed (upstream unreachable, timeout, audit backlog).
    pub const INTERNAL_ERROR: i64 = -32603;
    /// `Mcp-Method` / `Mcp-Name` headers disagree with the body (MCP 2026-07-28).
    pub const HEADER_MISMATCH: i64 = -32020;
}

/// Why a body is not a message we can handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not JSON.
    #[error("parse error: {0}")]
    Parse(String),
    /// JSON, but not a JSON-RPC 2.0 request, notification or response.
    #[error("invalid request: {0}")]
    Invalid(&'static str),
}

impl Error {
    /// The JSON-RPC code.
    pub fn code(&self) -> i64 {
        match self {
            Error::Parse(_) => code::PARSE_ERROR,
            Error::Invalid(_) => code::INVALID_REQUEST,
        }
    }
}

/// What a message is.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Has an id and a method: expects a response.
    Request,
    /// Has a method and no id.
    Notification,
    /// Has an id and a result or error: a client's answer to a server-to-client request.
    Response,
}

/// A parsed message.
#[derive(Debug, Clone)]
pub struct Message {
    /// The whole object.
    pub value: Map<String, Value>,
    /// Its kind.
    pub kind: Kind,
}

impl Message {
    /// Parses one JSON-RPC 2.0 message (batches are not part of MCP since 2025-06-18).
    pub fn parse(body: &[u8]) -> Result<Message, Error> {
        let value: Value = serde_json::from_slice(body).map_err(|e| Error::Parse(e.to_string()))?;
        let Value::Object(obj) = value else {
            return Err(Error::Invalid("expected a JSON-RPC object"));
        };
        if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(Error::Invalid("jsonrpc must be \"2.0\""));
        }
        let id_ok = match obj.get("id") {
            None => true,
            Some(Value::String(_)) | Some(Value::Number(_)) => true,
            Some(_) => false,
        };
        if !id_ok {
            return Err(Error::Invalid("id must be a string or a number"));
        }
        let kind = match (obj.get("method"), obj.contains_key("id")) {
            (Some(Value::String(_)), true) => Kind::Request,
            (Some(Value::String(_)), false) => Kind::Notification,
            (Some(_), _) => return Err(Error::Invalid("method must be a string")),
            (None, true) if obj.contains_key("result") || obj.contains_key("error") => {
                Kind::Response
            }
            (None, _) => {
                return Err(Error::Invalid(
                    "neither a request, a notification nor a response",
                ));
            }
        };
        if obj
            .get("params")
            .is_some_and(|p| !p.is_object() && !p.is_array())
        {
            return Err(Error::Invalid("params must be an object"));
        }
        Ok(Message { value: obj, kind })
    }

    /// The method, for requests and notifications.
    pub fn method(&self) -> Option<&str> {
        self.value.get("method").and_then(Value::as_str)
    }

    /// The id, for requests and responses.
    pub fn id(&self) -> Option<&Value> {
        self.value.get("id")
    }

    /// `params.name` (the tool of `tools/call`, the prompt of `prompts/get`).
    pub fn param_str(&self, key: &str) -> Option<&str> {
        self.value.get("params")?.get(key)?.as_str()
    }

    /// `params.arguments` as JSON text (`{}` when absent).
    pub fn arguments_json(&self) -> String {
        match self.value.get("params").and_then(|p| p.get("arguments")) {
            Some(v) => v.to_string(),
            None => "{}".to_owned(),
        }
    }
}

/// A JSON-RPC error response.
pub fn error_response(id: Option<&Value>, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "error": {"code": code, "message": message}})
}

/// A tool result that reports an error to the model (so it can correct itself).
pub fn tool_error_result(id: Option<&Value>, text: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "result": {"content": [{"type": "text", "text": text}], "isError": true}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_errors() {
        let m = Message::parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"q","arguments":{"a":1}}}"#).unwrap();
        assert_eq!(
            (m.kind.clone(), m.method(), m.param_str("name")),
            (Kind::Request, Some("tools/call"), Some("q"))
        );
        assert_eq!(m.arguments_json(), r#"{"a":1}"#);
        let n =
            Message::parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(n.kind, Kind::Notification);
        let r = Message::parse(br#"{"jsonrpc":"2.0","id":"s1","result":{}}"#).unwrap();
        assert_eq!(r.kind, Kind::Response);
        for (bad, code) in [
            (&b"{not json"[..], code::PARSE_ERROR),
            (b"[]", code::INVALID_REQUEST),
            (
                br#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
                code::INVALID_REQUEST,
            ),
            (
                br#"{"jsonrpc":"2.0","id":{},"method":"x"}"#,
                code::INVALID_REQUEST,
            ),
            (br#"{"jsonrpc":"2.0","id":1}"#, code::INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0","method":5}"#, code::INVALID_REQUEST),
            (
                br#"{"jsonrpc":"2.0","method":"x","params":3}"#,
                code::INVALID_REQUEST,
            ),
        ] {
            assert_eq!(
                Message::parse(bad).unwrap_err().code(),
                code,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}

//! The few JSON-RPC facts the gateway needs from a message: its kind, id and method, and for
//! `tools/call` the tool name and arguments. The message itself is forwarded byte for byte.

use crate::audit::Outcome;
use serde_json::{Map, Value, json};

/// JSON-RPC error codes the gateway answers with.
pub mod code {
    /// Invalid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a JSON-RPC 2.0 message.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Unknown tool (MCP reports unknown tools as invalid params).
    pub const INVALID_PARAMS: i64 = -32602;
    /// The gateway failed (upstream unreachable, timeout, audit backlog).
    pub const INTERNAL_ERROR: i64 = -32603;
    /// `Mcp-Method` / `Mcp-Name` headers disagree with the body (MCP 2026-07-28).
    pub const HEADER_MISMATCH: i64 = -32020;
    /// A protocol version the server does not speak (MCP 2026-07-28).
    pub const UNSUPPORTED_VERSION: i64 = -32022;
    /// A rate limit of the gateway refused the call (`data.retryAfterMs` says when to retry);
    /// the gateway's own code, in the implementation-defined server-error range.
    pub const RATE_LIMITED: i64 = -32029;
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

    /// The message as JSON text, with its id replaced by `id` when given. This is what the gateway
    /// forwards: exactly what it decided on (duplicate keys, whitespace and number spellings
    /// cannot differ between the gateway's reading and the upstream's).
    pub fn to_json(&self, id: Option<&Value>) -> bytes::Bytes {
        struct WithId<'a>(&'a Map<String, Value>, Option<&'a Value>);
        impl serde::Serialize for WithId<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap as _;
                let mut map = s.serialize_map(Some(self.0.len()))?;
                for (k, v) in self.0 {
                    match (k.as_str(), self.1) {
                        ("id", Some(id)) => map.serialize_entry(k, id)?,
                        _ => map.serialize_entry(k, v)?,
                    }
                }
                map.end()
            }
        }
        let mut out = Vec::with_capacity(256);
        // Writing a map of strings and values into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &WithId(&self.value, id));
        bytes::Bytes::from(out)
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

/// What an answer says about the call it answers: read straight from its text, without building
/// the message (the gateway only needs this much of an answer it passes through untouched).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The id it answers; `None` for anything that is not a response.
    pub id: Option<Value>,
    /// How the call went.
    pub outcome: Outcome,
}

impl Answer {
    /// The outcome an already parsed answer reports.
    pub fn outcome_of(answer: &Value) -> Outcome {
        if let Some(e) = answer.get("error") {
            Outcome::Error {
                code: e.get("code").map(Value::to_string),
            }
        } else if let Some(r) = answer.get("result") {
            Outcome::Result {
                is_error: r.get("isError").and_then(Value::as_bool) == Some(true),
            }
        } else {
            Outcome::Other
        }
    }

    /// Reads the id and outcome of one JSON message. Everything else is skipped over (and
    /// validated as JSON) without being kept.
    pub fn read(text: &[u8]) -> Result<Answer, serde_json::Error> {
        #[derive(serde::Deserialize)]
        struct Head {
            id: Option<Value>,
            method: Option<serde::de::IgnoredAny>,
            result: Option<ResultHead>,
            error: Option<ErrorHead>,
        }
        #[derive(serde::Deserialize)]
        struct ResultHead {
            #[serde(rename = "isError")]
            is_error: Option<Value>,
        }
        #[derive(serde::Deserialize)]
        struct ErrorHead {
            code: Option<Value>,
        }
        let head: Head = serde_json::from_slice(text)?;
        let outcome = match (head.method, head.error, head.result) {
            (Some(_), _, _) => Outcome::Other,
            (None, Some(e), _) => Outcome::Error {
                code: e.code.as_ref().map(Value::to_string),
            },
            (None, None, Some(r)) => Outcome::Result {
                is_error: r.is_error.as_ref().and_then(Value::as_bool) == Some(true),
            },
            (None, None, None) => Outcome::Other,
        };
        let id = match outcome {
            Outcome::Other => None,
            _ => head.id,
        };
        Ok(Answer { id, outcome })
    }
}

/// A JSON-RPC error response.
pub fn error_response(id: Option<&Value>, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "error": {"code": code, "message": message}})
}

/// A tool result that reports an error to the model (so it can correct itself). It is complete
/// (`resultType`, which 2026-07-28 requires and earlier revisions ignore).
pub fn tool_error_result(id: Option<&Value>, text: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "result": {"content": [{"type": "text", "text": text}], "isError": true, "resultType": "complete"}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_text_is_the_parsed_message_with_the_gateways_id() {
        let m = Message::parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"q","name":"deploy","arguments":{"n":1.0e2}}}"#).unwrap();
        let as_is: Value = serde_json::from_slice(&m.to_json(None)).unwrap();
        assert_eq!(as_is, Value::Object(m.value.clone()));
        assert_eq!(
            as_is["params"]["name"], "deploy",
            "the name the gateway decided on"
        );
        let renamed: Value = serde_json::from_slice(&m.to_json(Some(&json!("mcpgw-1~1")))).unwrap();
        assert_eq!(renamed["id"], "mcpgw-1~1");
        assert_eq!(renamed["params"], as_is["params"]);
    }

    #[test]
    fn answers_are_read_for_their_id_and_outcome_only() {
        let read = |t: &str| Answer::read(t.as_bytes()).unwrap();
        assert_eq!(
            read(
                r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"x"}],"isError":false}}"#
            ),
            Answer {
                id: Some(json!(7)),
                outcome: Outcome::Result { is_error: false }
            }
        );
        assert_eq!(
            read(r#"{"result":{"isError":true,"content":[]},"id":"a","jsonrpc":"2.0"}"#),
            Answer {
                id: Some(json!("a")),
                outcome: Outcome::Result { is_error: true }
            }
        );
        assert_eq!(
            read(r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"no"}}"#),
            Answer {
                id: Some(json!(1)),
                outcome: Outcome::Error {
                    code: Some("-32602".into())
                }
            }
        );
        // A server's own request that happens to reuse the client's id is not the answer.
        assert_eq!(
            read(r#"{"jsonrpc":"2.0","id":1,"method":"sampling/createMessage","params":{}}"#),
            Answer {
                id: None,
                outcome: Outcome::Other
            }
        );
        assert_eq!(
            read(r#"{"jsonrpc":"2.0","method":"notifications/progress"}"#).outcome,
            Outcome::Other
        );
        assert!(Answer::read(b"{not json").is_err());
        // The same reading as the full parse, for every shape above.
        for t in [
            r#"{"jsonrpc":"2.0","id":2,"result":{"isError":"yes"}}"#,
            r#"{"jsonrpc":"2.0","id":2,"error":{"message":"no code"}}"#,
        ] {
            let v: Value = serde_json::from_str(t).unwrap();
            assert_eq!(read(t).outcome, Answer::outcome_of(&v), "{t}");
        }
    }

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

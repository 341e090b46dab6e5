//! The JSON envelopes of a bus between processes (Redis): what the gateway
//! publishes, and what handlers written in any language publish back.
//!
//! - An **event** is the event's body (`{"event", "context", "message"?, "closed"?}`)
//!   with a `reply_to` address: `{"node", "connection", "reply_type", "on_connect"}`.
//! - A **reply** or **failure**, published on the reply channel of the event's node
//!   ([`reply_channel`]): `{"reply_to": <the event's reply_to>, "reply": payload}` or
//!   `{"reply_to": ..., "fail": payload}`; the payload is any JSON, `null`
//!   included (the key must be there, and exactly one of the two).
//! - A **send**, on the configured `send` topic: `{"username", "namespace"?, "type",
//!   "payload"?}`.
//! - A **broadcast**, on the configured `broadcast` topic: `{"namespace"?, "type",
//!   "payload"?}`.
//!
//! Unknown keys are refused (a misspelt `usename` must not turn a send into
//! something else); every refusal says what is wrong.

use serde::Deserialize;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

use crate::service::Command;

/// Where the answer to an event goes. Borrowed when the gateway encodes it (once
/// per event: no copies of the node id and topic), owned when parsed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyTo<'a> {
    /// The gateway node that holds the connection.
    pub node: Cow<'a, str>,
    /// The connection's id on that node.
    pub connection: u64,
    /// The `type` of a reply: `onconnect`, or the topic the message went to.
    pub reply_type: Cow<'a, str>,
    /// Whether the event was the connect event (a failure then closes).
    pub on_connect: bool,
}

/// The start of every node's reply channel; no configured topic may use it.
pub const REPLY_CHANNEL_PREFIX: &str = "chinwag:reply:";

/// The channel a node's replies and failures arrive on.
pub fn reply_channel(node: &str) -> String {
    format!("{REPLY_CHANNEL_PREFIX}{node}")
}

/// An event's body with its reply address, encoded as it leaves on the bus.
/// Encoded straight from the borrowed body: one pass, no copy of its JSON.
pub fn event(body: &Value, reply_to: &ReplyTo<'_>) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Envelope<'a> {
        #[serde(flatten)]
        body: &'a Map<String, Value>,
        reply_to: &'a ReplyTo<'a>,
    }
    let encoded = match body {
        Value::Object(body) => serde_json::to_vec(&Envelope { body, reply_to }),
        // Event bodies are objects; anything else leaves as it is.
        other => serde_json::to_vec(other),
    };
    encoded.expect("JSON values and string-keyed maps always encode")
}

/// An envelope refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeError(pub String);

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EnvelopeError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyEnvelope {
    reply_to: ReplyTo<'static>,
    // `None` only when the key is absent: plain `Option<Value>` would read
    // `"reply": null` as no reply at all, refusing a valid null payload.
    #[serde(default, deserialize_with = "present")]
    reply: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    fail: Option<Value>,
}

/// A key that is present, whatever its value (`null` included).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendEnvelope {
    username: String,
    namespace: Option<String>,
    #[serde(rename = "type")]
    message_type: String,
    #[serde(default)]
    payload: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastEnvelope {
    namespace: Option<String>,
    #[serde(rename = "type")]
    message_type: String,
    #[serde(default)]
    payload: Value,
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, EnvelopeError> {
    let bad = |e: &dyn fmt::Display| EnvelopeError(format!("bad {what} envelope: {e}"));
    // Objects only: serde would also take a struct's fields as an array.
    let value: Value = serde_json::from_slice(bytes).map_err(|e| bad(&e))?;
    if !value.is_object() {
        return Err(bad(&"it must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| bad(&e))
}

fn non_empty(what: &str, value: &str) -> Result<(), EnvelopeError> {
    if value.is_empty() { Err(EnvelopeError(format!("{what} cannot be empty"))) } else { Ok(()) }
}

/// A reply or failure from the reply channel: where it goes, and the command.
pub fn parse_reply(bytes: &[u8]) -> Result<(ReplyTo<'static>, Command), EnvelopeError> {
    let envelope: ReplyEnvelope = parse("reply", bytes)?;
    let command = match (envelope.reply, envelope.fail) {
        (Some(payload), None) => Command::Reply(payload),
        (None, Some(payload)) => Command::Fail(payload),
        _ => return Err(EnvelopeError("a reply envelope has exactly one of \"reply\" and \"fail\"".into())),
    };
    Ok((envelope.reply_to, command))
}

/// A send from the `send` topic.
pub fn parse_send(bytes: &[u8]) -> Result<Command, EnvelopeError> {
    let envelope: SendEnvelope = parse("send", bytes)?;
    non_empty("username", &envelope.username)?;
    non_empty("type", &envelope.message_type)?;
    if let Some(ns) = &envelope.namespace {
        non_empty("namespace", ns)?;
    }
    Ok(Command::Send {
        username: envelope.username,
        namespace: envelope.namespace,
        message_type: envelope.message_type,
        payload: envelope.payload,
    })
}

/// A broadcast from the `broadcast` topic.
pub fn parse_broadcast(bytes: &[u8]) -> Result<Command, EnvelopeError> {
    let envelope: BroadcastEnvelope = parse("broadcast", bytes)?;
    non_empty("type", &envelope.message_type)?;
    if let Some(ns) = &envelope.namespace {
        non_empty("namespace", ns)?;
    }
    Ok(Command::Broadcast {
        namespace: envelope.namespace,
        message_type: envelope.message_type,
        payload: envelope.payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn reply_to() -> ReplyTo<'static> {
        ReplyTo { node: "n1".into(), connection: 7, reply_type: "socket:type_one".into(), on_connect: false }
    }

    #[test]
    fn events_carry_their_reply_address_and_replies_come_back() {
        let body = json!({"event": "message", "context": {"username": "alex"}});
        let out: Value = serde_json::from_slice(&event(&body, &reply_to())).unwrap();
        assert_eq!(out["event"], "message");
        assert_eq!(out["context"]["username"], "alex");
        assert_eq!(out["reply_to"]["connection"], 7);
        // A handler in another language echoes reply_to with its answer.
        let reply = json!({"reply_to": out["reply_to"], "reply": {"ok": true}}).to_string();
        assert_eq!(parse_reply(reply.as_bytes()), Ok((reply_to(), Command::Reply(json!({"ok": true})))));
        let fail = json!({"reply_to": out["reply_to"], "fail": "no"}).to_string();
        assert_eq!(parse_reply(fail.as_bytes()), Ok((reply_to(), Command::Fail(json!("no")))));
        assert_eq!(reply_channel("n1"), "chinwag:reply:n1");
    }

    /// A null payload is a payload: `"reply": null` answers with null, `"fail":
    /// null` fails with null; only an absent key is absent.
    #[test]
    fn null_payloads_are_payloads() {
        let reply = json!({"reply_to": reply_to(), "reply": null}).to_string();
        assert_eq!(parse_reply(reply.as_bytes()), Ok((reply_to(), Command::Reply(Value::Null))));
        let fail = json!({"reply_to": reply_to(), "fail": null}).to_string();
        assert_eq!(parse_reply(fail.as_bytes()), Ok((reply_to(), Command::Fail(Value::Null))));
        let both = json!({"reply_to": reply_to(), "reply": null, "fail": null}).to_string();
        assert!(parse_reply(both.as_bytes()).unwrap_err().0.contains("exactly one"));
    }

    #[test]
    fn sends_and_broadcasts() {
        let send = br#"{"username": "alex", "namespace": "acme", "type": "note", "payload": {"n": 1}}"#;
        assert_eq!(
            parse_send(send),
            Ok(Command::Send {
                username: "alex".into(),
                namespace: Some("acme".into()),
                message_type: "note".into(),
                payload: json!({"n": 1})
            })
        );
        let all = parse_send(br#"{"username": "alex", "type": "note"}"#).unwrap();
        assert!(matches!(all, Command::Send { namespace: None, payload: Value::Null, .. }));
        let broadcast = parse_broadcast(br#"{"namespace": "acme", "type": "news", "payload": 1}"#).unwrap();
        assert!(matches!(broadcast, Command::Broadcast { namespace: Some(ns), .. } if ns == "acme"));
    }

    #[test]
    fn bad_envelopes_say_what_is_wrong() {
        let cases: [(&[u8], &str); 9] = [
            (br#"{"usename": "alex", "type": "t"}"#, "unknown field `usename`"),
            (br#"{"type": "t"}"#, "missing field `username`"),
            (br#"{"username": "", "type": "t"}"#, "username cannot be empty"),
            (br#"{"username": "a", "type": ""}"#, "type cannot be empty"),
            (br#"{"username": "a", "type": "t", "namespace": ""}"#, "namespace cannot be empty"),
            (br#"{"username": "a", "type": 3}"#, "invalid type"),
            (b"not json", "bad send envelope"),
            (br#"{"username": "a", "type": "t", "namespace": null}"#, ""),
            (br#"["alex", "acme", "note", 1]"#, "must be a JSON object"),
        ];
        for (bytes, expected) in cases {
            match parse_send(bytes) {
                Err(e) => assert!(e.0.contains(expected), "{}: {e}", String::from_utf8_lossy(bytes)),
                Ok(command) => assert_eq!(expected, "", "{command:?}"),
            }
        }
        let both = json!({"reply_to": reply_to(), "reply": 1, "fail": 2}).to_string();
        assert!(parse_reply(both.as_bytes()).unwrap_err().0.contains("exactly one"));
        let neither = json!({"reply_to": reply_to()}).to_string();
        assert!(parse_reply(neither.as_bytes()).is_err());
        assert!(parse_broadcast(br#"{"type": "t", "username": "a"}"#).unwrap_err().0.contains("unknown field"));
    }

    proptest! {
        /// Arbitrary bytes never panic any parser.
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_reply(&bytes);
            let _ = parse_send(&bytes);
            let _ = parse_broadcast(&bytes);
        }

        /// Every send round-trips through its JSON form.
        #[test]
        fn sends_round_trip(user in "[a-z]{1,8}", ns in proptest::option::of("[a-z]{1,8}"), t in "[a-z:_]{1,12}", n in any::<i64>()) {
            let text = json!({"username": user, "namespace": ns, "type": t, "payload": n}).to_string();
            prop_assert_eq!(
                parse_send(text.as_bytes()),
                Ok(Command::Send { username: user, namespace: ns, message_type: t, payload: json!(n) })
            );
        }
    }
}

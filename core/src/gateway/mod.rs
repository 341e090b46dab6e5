//! The socket gateway's rules, as pure functions over a [`Hub`] (like
//! [`chat::room`](crate::chat::room) for the chat): clients identified by a username
//! and an optional namespace send typed JSON messages, which become events for an
//! event bus; the bus answers with replies, failures, sends to a user and
//! broadcasts. No I/O: the functions change the hub (which queues deliveries) and
//! return the events to publish.
//!
//! Tenancy is the rule that matters most: a message sent to a user in a namespace
//! reaches that user's connections in that namespace and no other; only a
//! broadcast to all crosses namespaces. Routing uses hub groups whose names encode
//! the identity unambiguously (see [`user_group`]), and a property test checks the
//! rule on random users, namespaces, connections and sends.
//!
//! Messages to clients are JSON objects `{"type": ..., "payload": ...}`:
//! - a reply to the connect event has type `onconnect`;
//! - a reply to a message has the type of the topic the message was published to;
//! - errors have type `error` and a payload `{"message": ...}` (or the handler's
//!   own payload for a failure).

use serde_json::{Map, Value, json};

use crate::chat::{ConnId, Hub};
use crate::{CloseCode, Closed, Initiator, Message};

/// Connection attribute: the username.
pub const USERNAME: &str = "username";
/// Connection attribute: the namespace (absent when the client gave none).
pub const NAMESPACE: &str = "namespace";

/// The bus topics of a gateway, as its configuration names them (`onconnect.publish`,
/// `onmessage.publish`, `onmessage.types`, `onclose.publish`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topics {
    /// Published when a connection opens.
    pub on_connect: Option<String>,
    /// Published for every message (the general topic).
    pub on_message: Option<String>,
    /// Published, in addition, for messages of a given `type`.
    pub message_types: Vec<TypeRoute>,
    /// Published when a connection closes.
    pub on_close: Option<String>,
}

/// A message type with a topic of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeRoute {
    /// The `type` of incoming messages this applies to.
    pub message_type: String,
    /// The topic they are published to.
    pub topic: String,
}

/// Who a connection belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    /// The user (a JWT's `preferred_username`).
    pub username: String,
    /// The tenant, from `?namespace=`; `None` when the client gave none.
    pub namespace: Option<String>,
}

/// An event for the bus: the topic and the JSON body to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    /// The topic.
    pub topic: String,
    /// The event: `{"event", "context", "message"?, "closed"?}`; see [`context`].
    pub body: Value,
}

impl Publish {
    /// Whether this is the connect event (a failure of it closes the connection).
    pub fn is_connect(&self) -> bool {
        self.body["event"] == "connect"
    }

    /// The `type` of a handler's reply to this event: `onconnect` for the connect
    /// event, the topic's name for a message.
    pub fn reply_type(&self) -> &str {
        if self.is_connect() { CONNECT_REPLY_TYPE } else { &self.topic }
    }
}

/// The `type` of replies to the connect event.
pub const CONNECT_REPLY_TYPE: &str = "onconnect";

/// The group of every connection of `username` (any namespace).
pub fn user_group(username: &str) -> String {
    json!(["user", username]).to_string()
}

/// The group of `username`'s connections in `namespace` (`None`: those opened
/// without a namespace).
pub fn user_namespace_group(username: &str, namespace: Option<&str>) -> String {
    json!(["user-ns", username, namespace]).to_string()
}

/// The group of every connection in `namespace`.
pub fn namespace_group(namespace: &str) -> String {
    json!(["ns", namespace]).to_string()
}

/// The context every event about `conn` carries: username, namespace, connection
/// id, and what the adapter adds in `extra` (path parameters, query, headers).
pub fn context(hub: &Hub, conn: ConnId, extra: &Map<String, Value>) -> Value {
    let mut context = extra.clone();
    context.insert("connection".into(), json!(conn.0));
    context.insert("username".into(), json!(hub.attribute(conn, USERNAME)));
    context.insert("namespace".into(), json!(hub.attribute(conn, NAMESPACE)));
    Value::Object(context)
}

/// A connection was accepted for `identity`: records it (attributes and routing
/// groups) and returns its context, to keep for every event about it: the
/// connect event ([`connected`]), its messages and its close.
pub fn register(hub: &mut Hub, conn: ConnId, identity: &Identity, extra: &Map<String, Value>) -> Value {
    let _ = hub.set_attribute(conn, USERNAME, identity.username.as_str());
    if let Some(ns) = &identity.namespace {
        let _ = hub.set_attribute(conn, NAMESPACE, ns.as_str());
        let _ = hub.add_to_group(conn, &namespace_group(ns));
    }
    let _ = hub.add_to_group(conn, &user_group(&identity.username));
    let _ = hub.add_to_group(conn, &user_namespace_group(&identity.username, identity.namespace.as_deref()));
    context(hub, conn, extra)
}

/// The connection is open: the connect event to publish (if the gateway publishes
/// one). Publish it once the connection can take a reply.
pub fn connected(topics: &Topics, context: &Value) -> Vec<Publish> {
    topics
        .on_connect
        .iter()
        .map(|topic| Publish { topic: topic.clone(), body: json!({"event": "connect", "context": context}) })
        .collect()
}

/// Why an incoming message was refused (the client gets it as an `error` message,
/// and its connection stays open).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadMessage {
    /// The text is not JSON.
    NotJson(String),
    /// The JSON is not an object with a string `type`.
    NoType,
    /// The type has no topic and there is no general topic.
    UnknownType(String),
    /// A binary frame: the gateway speaks JSON text.
    Binary,
    /// A message over the size limit (skipped unread, see
    /// [`Oversized::Skip`](crate::Oversized::Skip)).
    TooBig {
        /// Its size in bytes.
        len: u64,
        /// The limit in bytes.
        limit: usize,
    },
}

impl std::fmt::Display for BadMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotJson(e) => write!(f, "the message is not JSON: {e}"),
            Self::NoType => f.write_str("the message must be a JSON object with a string \"type\""),
            Self::UnknownType(t) => write!(f, "unknown message type {t:?}"),
            Self::Binary => f.write_str("binary messages are not supported; send JSON text"),
            Self::TooBig { len, limit } => {
                write!(f, "the message is {len} bytes; the limit is {limit} bytes; it was not delivered")
            }
        }
    }
}

/// Sends `{"type": "error", "payload": payload}` to `conn`.
pub fn push_error(hub: &mut Hub, conn: ConnId, payload: Value) {
    let _ = hub.push(conn, &Message::text(json!({"type": "error", "payload": payload}).to_string()));
}

/// A text message from `conn`: the events to publish (the general topic, then its
/// type's topic), or why it was refused (the client has been told).
/// `context` is the connection's [`context`], computed once when it opened.
pub fn message(
    hub: &mut Hub,
    conn: ConnId,
    text: &str,
    topics: &Topics,
    context: &Value,
) -> Result<Vec<Publish>, BadMessage> {
    let refused = |hub: &mut Hub, bad: BadMessage| {
        push_error(hub, conn, json!({"message": bad.to_string()}));
        Err(bad)
    };
    let parsed: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return refused(hub, BadMessage::NotJson(e.to_string())),
    };
    let Some(message_type) = parsed.get("type").and_then(Value::as_str).map(str::to_owned) else {
        return refused(hub, BadMessage::NoType);
    };
    let typed = topics.message_types.iter().find(|r| r.message_type == message_type).map(|r| r.topic.clone());
    let targets: Vec<String> = topics.on_message.iter().cloned().chain(typed).collect();
    if targets.is_empty() {
        return refused(hub, BadMessage::UnknownType(message_type));
    }
    Ok(targets
        .into_iter()
        .map(|topic| Publish {
            body: json!({"event": "message", "context": context, "message": parsed, "topic": topic}),
            topic,
        })
        .collect())
}

/// A binary message from `conn`: refused with an error message (documented: the
/// gateway speaks JSON text); the connection stays open.
pub fn binary(hub: &mut Hub, conn: ConnId) -> BadMessage {
    push_error(hub, conn, json!({"message": BadMessage::Binary.to_string()}));
    BadMessage::Binary
}

/// A message from `conn` too big to read (`len` bytes over `limit`): refused with
/// an error message; the connection stays open (the core skipped it unread, so it
/// cost no memory).
pub fn too_big(hub: &mut Hub, conn: ConnId, len: u64, limit: usize) -> BadMessage {
    let bad = BadMessage::TooBig { len, limit };
    push_error(hub, conn, json!({"message": bad.to_string()}));
    bad
}

/// A connection closed: the close event to publish, with the connection's
/// [`context`] (kept from when it opened: the hub may have forgotten it already,
/// after a failed connect) and what [`close_summary`] says of the closing.
/// Closing it in the hub removes it from its groups.
pub fn close(closed: &Closed, topics: &Topics, context: &Value) -> Vec<Publish> {
    let summary = close_summary(closed);
    topics
        .on_close
        .iter()
        .map(|topic| Publish {
            topic: topic.clone(),
            body: json!({"event": "close", "context": context, "closed": summary}),
        })
        .collect()
}

/// How a connection ended, as its close event tells a handler (`"closed"`):
/// `{"code", "reason", "initiator"}`.
///
/// - `code`: the code of the end that closed: the client's close frame, or the one
///   the server sent (1008 for a failed connect or a flood, 1001 at shutdown);
///   1006 when the connection ended without either (no answer to the heartbeat, a
///   lost connection); 1005 for a client's close frame without a code.
/// - `reason`: the reason sent with that code; when there was no close frame or it
///   had no reason, what happened (empty if nothing is known).
/// - `initiator`: `"client"` or `"server"`, the end that started the closing.
///
/// [`Closed::code`] is only what the client said (RFC 6455 §7.1.5), and a client
/// answering the server's close usually echoes the code with no reason: so when
/// the server closed, its own frame is the one that says why.
pub fn close_summary(closed: &Closed) -> Value {
    let (initiator, code, reason) = match (closed.initiator, &closed.sent) {
        (Initiator::Local, Some(sent)) => ("server", sent.code, sent.reason.as_str()),
        (Initiator::Local, None) => ("server", closed.code, closed.reason.as_str()),
        (Initiator::Peer, _) => ("client", closed.code, closed.reason.as_str()),
    };
    let reason = match &closed.error {
        Some(error) if reason.is_empty() => error.to_string(),
        _ => reason.to_owned(),
    };
    json!({"code": code.0, "reason": reason, "initiator": initiator})
}

/// A handler's reply to an event about `conn`: `{"type": reply_type, "payload"}`
/// to that connection (`reply_type` is `onconnect` for the connect event, the
/// topic's name for a message). False if the connection is gone.
pub fn reply(hub: &mut Hub, conn: ConnId, reply_type: &str, payload: Value) -> bool {
    hub.push(conn, &Message::text(json!({"type": reply_type, "payload": payload}).to_string())).is_ok()
}

/// A handler's failure: an `error` message to `conn`; for the connect event the
/// connection is then closed (1008, with `reason`). False if the connection is gone.
pub fn fail(hub: &mut Hub, conn: ConnId, on_connect: bool, payload: Value) -> bool {
    if !hub.is_open(conn) {
        return false;
    }
    push_error(hub, conn, payload);
    if on_connect {
        let _ = hub.disconnect(conn, CloseCode::POLICY_VIOLATION, "refused by the connect handler");
    }
    true
}

/// Sends `{"type", "payload"}` to every connection of `username` in `namespace`
/// (`None`: all of that user's connections, whatever their namespace). Returns how
/// many connections it reached.
pub fn send(hub: &mut Hub, username: &str, namespace: Option<&str>, message_type: &str, payload: Value) -> usize {
    let group = match namespace {
        Some(ns) => user_namespace_group(username, Some(ns)),
        None => user_group(username),
    };
    let message = Message::text(json!({"type": message_type, "payload": payload}).to_string());
    hub.push_to_group(&group, &message).unwrap_or(0)
}

/// Sends `{"type", "payload"}` to every connection (`namespace`: only those in it).
/// Returns how many.
pub fn broadcast(hub: &mut Hub, namespace: Option<&str>, message_type: &str, payload: Value) -> usize {
    let message = Message::text(json!({"type": message_type, "payload": payload}).to_string());
    match namespace {
        Some(ns) => hub.push_to_group(&namespace_group(ns), &message).unwrap_or(0),
        None => hub.broadcast(&message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Delivery;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn closed(code: u16, reason: &str, initiator: Initiator, sent: Option<(u16, &str)>) -> Closed {
        Closed {
            code: CloseCode(code),
            reason: reason.into(),
            initiator,
            sent: sent.map(|(code, reason)| crate::CloseFrame { code: CloseCode(code), reason: reason.into() }),
            error: None,
        }
    }

    fn summary(code: u16, reason: &str, initiator: &str) -> Value {
        json!({"code": code, "reason": reason, "initiator": initiator})
    }

    #[test]
    fn close_events_say_who_closed_and_why() {
        use crate::ConnectionError;
        // The client closed: its code and reason (our echo is not news).
        let by_client = closed(1000, "bye", Initiator::Peer, Some((1000, "")));
        assert_eq!(close_summary(&by_client), summary(1000, "bye", "client"));
        let no_code = closed(1005, "", Initiator::Peer, Some((1000, "")));
        assert_eq!(close_summary(&no_code), summary(1005, "", "client"));
        // The server closed: its code and reason, whatever the client echoed.
        let refused = closed(1000, "", Initiator::Local, Some((1008, "refused by the connect handler")));
        assert_eq!(close_summary(&refused), summary(1008, "refused by the connect handler", "server"));
        // No close frame from the client: what happened.
        let lost = Closed { error: Some(ConnectionError::TransportClosed), ..closed(1006, "", Initiator::Peer, None) };
        assert_eq!(close_summary(&lost), summary(1006, &ConnectionError::TransportClosed.to_string(), "client"));
        let silent =
            Closed { error: Some(ConnectionError::KeepaliveTimeout), ..closed(1006, "", Initiator::Local, None) };
        assert_eq!(close_summary(&silent), summary(1006, &ConnectionError::KeepaliveTimeout.to_string(), "server"));
        let flooded = Closed {
            error: Some(ConnectionError::CloseTimeout),
            ..closed(1006, "", Initiator::Local, Some((1008, "too many messages")))
        };
        assert_eq!(close_summary(&flooded), summary(1008, "too many messages", "server"));
        let events = close(&flooded, &topics(), &json!({"username": "bob"}));
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].body,
            json!({"event": "close", "context": {"username": "bob"}, "closed": summary(1008, "too many messages", "server")})
        );
    }

    fn topics() -> Topics {
        Topics {
            on_connect: Some("socket:connection".into()),
            on_message: Some("socket:generalMessage".into()),
            message_types: vec![TypeRoute { message_type: "one".into(), topic: "socket:type_one".into() }],
            on_close: Some("socket:close".into()),
        }
    }

    fn id(user: &str, ns: Option<&str>) -> Identity {
        Identity { username: user.into(), namespace: ns.map(str::to_owned) }
    }

    /// Every (recipient, text) queued so far.
    fn delivered(hub: &mut Hub) -> Vec<(ConnId, Value)> {
        let mut out = Vec::new();
        while let Some(d) = hub.poll_delivery() {
            if let Delivery::Frame { to, frame } = d {
                let body = &frame.as_bytes()[2..];
                let value: Value = serde_json::from_slice(body).unwrap();
                out.extend(to.into_iter().map(|c| (c, value.clone())));
            }
        }
        out
    }

    #[test]
    fn messages_go_to_the_general_topic_then_their_types() {
        let mut hub = Hub::new();
        let conn = hub.open();
        let extra = Map::new();
        let cx = register(&mut hub, conn, &id("alex", Some("acme")), &extra);
        let events = connected(&topics(), &cx);
        assert_eq!(events[0].topic, "socket:connection");
        assert!(events[0].is_connect());
        assert_eq!(events[0].reply_type(), "onconnect");
        assert_eq!(events[0].body["context"]["username"], "alex");
        assert_eq!(events[0].body["context"]["namespace"], "acme");

        let out = message(&mut hub, conn, r#"{"type":"one","payload":{"n":1}}"#, &topics(), &cx).unwrap();
        let topics_hit: Vec<&str> = out.iter().map(|p| p.topic.as_str()).collect();
        assert_eq!(topics_hit, ["socket:generalMessage", "socket:type_one"]);
        assert_eq!(out[1].reply_type(), "socket:type_one");
        assert_eq!(out[1].body["message"]["payload"]["n"], 1);
        let out = message(&mut hub, conn, r#"{"type":"other"}"#, &topics(), &cx).unwrap();
        assert_eq!(out.len(), 1, "an unconfigured type goes to the general topic only");
        assert_eq!(out[0].body["context"]["username"], "alex");
        let closed = close(&self::closed(1000, "", Initiator::Peer, Some((1000, ""))), &topics(), &cx);
        assert_eq!(closed[0].topic, "socket:close");
        assert_eq!(closed[0].body["closed"]["code"], 1000);
        assert_eq!(closed[0].body["context"]["namespace"], "acme");
    }

    #[test]
    fn bad_messages_get_an_error_and_publish_nothing() {
        let mut hub = Hub::new();
        let conn = hub.open();
        let only_typed = Topics { on_message: None, ..topics() };
        register(&mut hub, conn, &id("alex", None), &Map::new());
        for (text, expected) in [
            ("not json", "not JSON"),
            ("[1,2]", "\"type\""),
            (r#"{"type":5}"#, "\"type\""),
            (r#"{"type":"nope"}"#, "unknown message type"),
        ] {
            assert!(message(&mut hub, conn, text, &only_typed, &Value::Null).is_err(), "{text}");
            let got = delivered(&mut hub);
            assert_eq!(got.len(), 1, "{text}");
            assert_eq!(got[0].1["type"], "error");
            assert!(got[0].1["payload"]["message"].as_str().unwrap().contains(expected), "{text}: {got:?}");
        }
        assert_eq!(binary(&mut hub, conn), BadMessage::Binary);
        assert!(hub.is_open(conn), "bad input never closes the connection");
    }

    #[test]
    fn replies_and_failures() {
        let mut hub = Hub::new();
        let conn = hub.open();
        register(&mut hub, conn, &id("alex", Some("acme")), &Map::new());
        assert!(reply(&mut hub, conn, "onconnect", json!({"data": [1]})));
        assert!(fail(&mut hub, conn, false, json!({"message": "nope"})));
        assert!(hub.is_open(conn), "a failed message keeps the connection");
        let got = delivered(&mut hub);
        assert_eq!(got[0].1, json!({"type": "onconnect", "payload": {"data": [1]}}));
        assert_eq!(got[1].1, json!({"type": "error", "payload": {"message": "nope"}}));
        assert!(fail(&mut hub, conn, true, json!("denied")));
        assert!(!hub.is_open(conn), "a failed connect closes");
        assert!(!reply(&mut hub, conn, "x", Value::Null), "the connection is gone");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Open(u8, Option<u8>),
        Close(usize),
        Send(u8, Option<u8>),
        Broadcast(Option<u8>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..4, proptest::option::of(0u8..3)).prop_map(|(u, n)| Op::Open(u, n)),
            1 => any::<usize>().prop_map(Op::Close),
            3 => (0u8..4, proptest::option::of(0u8..3)).prop_map(|(u, n)| Op::Send(u, n)),
            1 => proptest::option::of(0u8..3).prop_map(Op::Broadcast),
        ]
    }

    proptest! {
        /// Random users, namespaces, connections and sends: every message reaches
        /// exactly the connections of its user in its namespace (all of the user's
        /// without one), and a broadcast to a namespace exactly that namespace.
        #[test]
        fn nothing_crosses_namespaces(ops in proptest::collection::vec(op(), 1..80)) {
            let mut hub = Hub::new();
            let mut model: BTreeMap<ConnId, Identity> = BTreeMap::new();
            let user = |u: u8| format!("user{u}");
            let ns = |n: Option<u8>| n.map(|n| format!("ns{n}"));
            for op in ops {
                let expected: BTreeSet<ConnId> = match &op {
                    Op::Open(u, n) => {
                        let conn = hub.open();
                        let identity = id(&user(*u), ns(*n).as_deref());
                        register(&mut hub, conn, &identity, &Map::new());
                        model.insert(conn, identity);
                        BTreeSet::new()
                    }
                    Op::Close(k) => {
                        if let Some(&conn) = model.keys().nth(k % model.len().max(1)) {
                            hub.close(conn);
                            model.remove(&conn);
                        }
                        BTreeSet::new()
                    }
                    Op::Send(u, n) => {
                        let reached = send(&mut hub, &user(*u), ns(*n).as_deref(), "t", json!(null));
                        let expected: BTreeSet<ConnId> = model.iter()
                            .filter(|(_, i)| i.username == user(*u) && (n.is_none() || i.namespace == ns(*n)))
                            .map(|(c, _)| *c).collect();
                        prop_assert_eq!(reached, expected.len());
                        expected
                    }
                    Op::Broadcast(n) => {
                        let reached = broadcast(&mut hub, ns(*n).as_deref(), "t", json!(null));
                        let expected: BTreeSet<ConnId> = model.iter()
                            .filter(|(_, i)| n.is_none() || i.namespace == ns(*n))
                            .map(|(c, _)| *c).collect();
                        prop_assert_eq!(reached, expected.len());
                        expected
                    }
                };
                let got: BTreeSet<ConnId> = delivered(&mut hub).into_iter().map(|(c, _)| c).collect();
                prop_assert_eq!(got, expected, "after {:?}", op);
            }
        }
    }
}

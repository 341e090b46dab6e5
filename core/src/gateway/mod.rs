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
//! Who may join which namespace is decided here too ([`authorize`], from a token's
//! claim), and so is the life of a connection the connect handler must approve
//! first: [`Sessions`] keeps each connection's context, whether it is still
//! pending, and its deadlines (the approval's, the token's expiry), with time
//! passed in as `now` like every other input of the core. A pending connection is
//! in no routing group, so no send or broadcast can reach it.
//!
//! Messages to clients are JSON objects `{"type": ..., "payload": ...}`:
//! - a reply to the connect event has type `onconnect`;
//! - a reply to a message has the type of the topic the message was published to;
//! - errors have type `error` and a payload `{"message": ...}` (or the handler's
//!   own payload for a failure).

use serde_json::{Map, Value, json};

use crate::chat::{ConnId, Hub};
use crate::{CloseCode, Closed, Initiator, Message};

mod sessions;
mod tenancy;

pub use sessions::{
    APPROVAL_TIMEOUT_REASON, NOT_ADMITTED, Sessions, TOKEN_EXPIRED_CODE, TOKEN_EXPIRED_REASON, Timeout,
};
pub use tenancy::{ANY_NAMESPACE, NamespacePolicy, NamespaceRefusal, authorize};

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

/// The group of every admitted connection: what a broadcast to all reaches. (Not
/// the hub's own broadcast, which would reach connections still waiting for their
/// connect handler's approval.)
pub fn everyone_group() -> String {
    json!(["all"]).to_string()
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
    let context = record(hub, conn, identity, extra);
    join(hub, conn, identity);
    context
}

/// Records who `conn` is (its attributes) and returns its context, without
/// making it reachable: a connection that waits for approval is recorded, and
/// [`join`]s its groups once admitted.
pub fn record(hub: &mut Hub, conn: ConnId, identity: &Identity, extra: &Map<String, Value>) -> Value {
    let _ = hub.set_attribute(conn, USERNAME, identity.username.as_str());
    if let Some(ns) = &identity.namespace {
        let _ = hub.set_attribute(conn, NAMESPACE, ns.as_str());
    }
    context(hub, conn, extra)
}

/// Makes `conn` reachable: it joins the groups that sends and broadcasts go to
/// (its namespace's, its user's, its user's in its namespace, everyone's).
pub fn join(hub: &mut Hub, conn: ConnId, identity: &Identity) {
    if let Some(ns) = &identity.namespace {
        let _ = hub.add_to_group(conn, &namespace_group(ns));
    }
    let _ = hub.add_to_group(conn, &user_group(&identity.username));
    let _ = hub.add_to_group(conn, &user_namespace_group(&identity.username, identity.namespace.as_deref()));
    let _ = hub.add_to_group(conn, &everyone_group());
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
    /// The connection waits for its connect handler's approval: its messages are
    /// not published until then (the client is told, see [`NOT_ADMITTED`]).
    NotAdmitted,
    /// The connection is closing (refused, timed out, its token expired): what it
    /// still sends is dropped without an answer.
    Closing,
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
            Self::NotAdmitted => f.write_str(NOT_ADMITTED),
            Self::Closing => f.write_str("the connection is closing"),
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

/// Sends `{"type", "payload"}` to every admitted connection (`namespace`: only
/// those in it). Returns how many.
pub fn broadcast(hub: &mut Hub, namespace: Option<&str>, message_type: &str, payload: Value) -> usize {
    let message = Message::text(json!({"type": message_type, "payload": payload}).to_string());
    let group = match namespace {
        Some(ns) => namespace_group(ns),
        None => everyone_group(),
    };
    hub.push_to_group(&group, &message).unwrap_or(0)
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

    /// The payload of one encoded server frame.
    pub(super) fn payload(frame: &[u8]) -> &[u8] {
        let (header, len) = crate::frame::FrameHeader::decode(frame).unwrap().unwrap();
        &frame[len..len + header.payload_len as usize]
    }

    /// Every (recipient, text) queued so far.
    fn delivered(hub: &mut Hub) -> Vec<(ConnId, Value)> {
        let mut out = Vec::new();
        while let Some(d) = hub.poll_delivery() {
            if let Delivery::Frame { to, frame } = d {
                let value: Value = serde_json::from_slice(payload(frame.as_bytes())).unwrap();
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

    /// A token's namespaces claim, as the property test draws it.
    #[derive(Debug, Clone)]
    enum ClaimDraw {
        Missing,
        Null,
        NotAList,
        WithANumber(Vec<u8>),
        Names(Vec<u8>),
        Everything,
    }

    impl ClaimDraw {
        fn json(&self) -> Map<String, Value> {
            let names = |ns: &[u8]| ns.iter().map(|n| json!(format!("ns{n}"))).collect::<Vec<_>>();
            let claim = match self {
                Self::Missing => return Map::new(),
                Self::Null => Value::Null,
                Self::NotAList => json!("ns0"),
                Self::WithANumber(ns) => Value::Array(names(ns).into_iter().chain([json!(1)]).collect()),
                Self::Names(ns) => Value::Array(names(ns)),
                Self::Everything => json!(["*"]),
            };
            let mut claims = Map::new();
            claims.insert("namespaces".into(), claim);
            claims
        }

        /// The model: may this token join `namespace`?
        fn allows(&self, namespace: Option<u8>) -> bool {
            match (self, namespace) {
                (_, None) => true,
                (Self::Names(ns), Some(n)) => ns.contains(&n),
                (Self::Everything, Some(_)) => true,
                _ => false,
            }
        }
    }

    fn claim_draw() -> impl Strategy<Value = ClaimDraw> {
        let names = || proptest::collection::vec(0u8..4, 0..3);
        prop_oneof![
            1 => Just(ClaimDraw::Missing),
            1 => Just(ClaimDraw::Null),
            1 => Just(ClaimDraw::NotAList),
            1 => names().prop_map(ClaimDraw::WithANumber),
            4 => names().prop_map(ClaimDraw::Names),
            1 => Just(ClaimDraw::Everything),
        ]
    }

    #[derive(Debug, Clone)]
    enum Step {
        Open {
            user: u8,
            claim: ClaimDraw,
            namespace: Option<u8>,
            token_secs: Option<u64>,
        },
        Approve(usize),
        Refuse(usize),
        Say(usize),
        Send(u8, Option<u8>),
        Broadcast(Option<u8>),
        /// Time passes; the adapter's timer fires then, or is late (the next
        /// call must fire what is due).
        Wait(u64, bool),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0u8..3, claim_draw(), proptest::option::of(0u8..4), proptest::option::of(1u64..40))
                .prop_map(|(user, claim, namespace, token_secs)| Step::Open { user, claim, namespace, token_secs }),
            2 => any::<usize>().prop_map(Step::Approve),
            1 => any::<usize>().prop_map(Step::Refuse),
            1 => any::<usize>().prop_map(Step::Say),
            2 => (0u8..3, proptest::option::of(0u8..4)).prop_map(|(u, n)| Step::Send(u, n)),
            2 => proptest::option::of(0u8..4).prop_map(Step::Broadcast),
            2 => (0u64..15, any::<bool>()).prop_map(|(secs, tick)| Step::Wait(secs, tick)),
        ]
    }

    /// A connection as the model sees it.
    #[derive(Debug, Clone)]
    struct Modelled {
        identity: Identity,
        admitted: bool,
        approve_by: Option<u64>,
        expires: Option<u64>,
    }

    /// The model's connections whose deadline is due at `clock`, removed, with the
    /// code each is closed with (the earliest deadline wins; at a tie, approval).
    fn fire(model: &mut BTreeMap<ConnId, Modelled>, clock: u64) -> Vec<(ConnId, u16)> {
        let mut closed = Vec::new();
        for (conn, m) in model.clone() {
            let approval = m.approve_by.filter(|_| !m.admitted).map(|t| (t, 1008));
            let expiry = m.expires.map(|t| (t, 4001));
            if let Some((t, code)) = approval.into_iter().chain(expiry).min()
                && t <= clock
            {
                closed.push((conn, code));
                model.remove(&conn);
            }
        }
        closed
    }

    proptest! {
        /// Random users, tokens (their namespaces claims: missing, malformed,
        /// lists, "*"), requested namespaces, approvals, refusals, token expiries
        /// and time: a connection exists only in a namespace its token allows;
        /// with approval on, no send or broadcast reaches a pending connection and
        /// nothing it says is published; each deadline closes its connection with
        /// its code; and admitted connections get exactly what is addressed to them.
        #[test]
        fn admission_and_pending(approval in proptest::option::of(1u64..10), steps in proptest::collection::vec(step(), 1..60)) {
            let t0 = std::time::Instant::now();
            let at = |secs: u64| t0 + std::time::Duration::from_secs(secs);
            let policy = NamespacePolicy::Claim("namespaces".into());
            let mut hub = Hub::new();
            let mut sessions = Sessions::new(approval.map(std::time::Duration::from_secs));
            let mut model: BTreeMap<ConnId, Modelled> = BTreeMap::new();
            let mut clock = 0u64;
            let nth = |model: &BTreeMap<ConnId, Modelled>, k: usize| model.keys().nth(k % model.len().max(1)).copied();
            for step in steps {
                // The model's deadlines due by now close their connections first.
                // (Unless nothing is called: a late timer fires nothing.)
                let mut expected_closes =
                    if matches!(step, Step::Wait(_, false)) { Vec::new() } else { fire(&mut model, clock) };
                let mut expected: BTreeSet<ConnId> = BTreeSet::new();
                let mut replies: Vec<ConnId> = Vec::new();
                match &step {
                    Step::Open { user, claim, namespace, token_secs } => {
                        let ns = namespace.map(|n| format!("ns{n}"));
                        let verdict = authorize(&policy, &claim.json(), ns.as_deref());
                        prop_assert_eq!(verdict.is_ok(), claim.allows(*namespace), "{:?} for {:?}", claim, ns);
                        if verdict.is_ok() {
                            let conn = hub.open();
                            let identity = id(&format!("user{user}"), ns.as_deref());
                            let expires = token_secs.map(|s| clock + s);
                            sessions.open(at(clock), &mut hub, conn, identity.clone(), &Map::new(), expires.map(at));
                            model.insert(conn, Modelled {
                                identity,
                                admitted: approval.is_none(),
                                approve_by: approval.map(|a| clock + a),
                                expires,
                            });
                        }
                    }
                    Step::Approve(k) => {
                        if let Some(conn) = nth(&model, *k) {
                            prop_assert!(sessions.reply(at(clock), &mut hub, conn, CONNECT_REPLY_TYPE, true, json!("hi")));
                            model.get_mut(&conn).unwrap().admitted = true;
                            replies.push(conn);
                        }
                    }
                    Step::Refuse(k) => {
                        if let Some(conn) = nth(&model, *k) {
                            prop_assert!(sessions.fail(at(clock), &mut hub, conn, true, json!("no")));
                            model.remove(&conn);
                            replies.push(conn);
                            expected_closes.push((conn, 1008));
                        }
                    }
                    Step::Say(k) => {
                        if let Some(conn) = nth(&model, *k) {
                            let said = sessions.message(at(clock), &mut hub, conn, r#"{"type":"one"}"#, &topics());
                            if model[&conn].admitted {
                                let events = said.unwrap();
                                prop_assert!(events.iter().all(|e| e.body["context"]["namespace"] == json!(model[&conn].identity.namespace)));
                            } else {
                                prop_assert_eq!(said, Err(BadMessage::NotAdmitted), "a pending connection publishes nothing");
                                replies.push(conn);
                            }
                        }
                    }
                    Step::Send(u, n) => {
                        let (user, ns) = (format!("user{u}"), n.map(|n| format!("ns{n}")));
                        let reached = sessions.send(at(clock), &mut hub, &user, ns.as_deref(), "t", json!(null));
                        expected = model.iter()
                            .filter(|(_, m)| m.admitted && m.identity.username == user && (ns.is_none() || m.identity.namespace == ns))
                            .map(|(c, _)| *c).collect();
                        prop_assert_eq!(reached, expected.len());
                    }
                    Step::Broadcast(n) => {
                        let ns = n.map(|n| format!("ns{n}"));
                        let reached = sessions.broadcast(at(clock), &mut hub, ns.as_deref(), "t", json!(null));
                        expected = model.iter()
                            .filter(|(_, m)| m.admitted && (ns.is_none() || m.identity.namespace == ns))
                            .map(|(c, _)| *c).collect();
                        prop_assert_eq!(reached, expected.len());
                    }
                    Step::Wait(secs, tick) => {
                        clock += secs;
                        if *tick {
                            sessions.handle_timeout(at(clock), &mut hub);
                        }
                    }
                }
                if !matches!(step, Step::Wait(_, false)) {
                    // A step that found nothing to act on fires what is due all the
                    // same (a no-op after any call, which fired it first).
                    sessions.handle_timeout(at(clock), &mut hub);
                }
                let mut got: Vec<ConnId> = Vec::new();
                let mut closes: Vec<(ConnId, u16)> = Vec::new();
                while let Some(d) = hub.poll_delivery() {
                    match d {
                        Delivery::Frame { to, .. } => got.extend(to),
                        Delivery::Close { conn, code, .. } => closes.push((conn, code.0)),
                    }
                }
                let mut wanted: Vec<ConnId> = replies.into_iter().chain(expected).collect();
                wanted.sort();
                got.sort();
                prop_assert_eq!(got, wanted, "after {:?}", step);
                closes.sort();
                expected_closes.sort();
                if let Step::Wait(_, true) = step {
                    // Deadlines due during the wait fire in the wait.
                    expected_closes.extend(fire(&mut model, clock));
                    expected_closes.sort();
                }
                prop_assert_eq!(closes, expected_closes, "after {:?}", step);
                for (conn, m) in &model {
                    prop_assert_eq!(sessions.is_admitted(*conn), m.admitted);
                    prop_assert_eq!(sessions.is_pending(*conn), !m.admitted);
                }
            }
        }
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

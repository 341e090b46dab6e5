//! The core's gateway rules (`chinwag_core::gateway`) on a hub: connections of
//! arbitrary users in arbitrary namespaces (names drawn from a small pool, so they
//! meet, and made of JSON-hostile characters), JSON-ish messages, replies,
//! failures, sends and broadcasts, against a model. Checks that a message is
//! published exactly when it is a JSON object with a string `type` and a topic
//! takes it, to the general topic then its type's, carrying the message and the
//! connection's context; that every refusal tells the sender, and only the sender,
//! with one `error` message; that a send reaches exactly the user's connections in
//! that namespace (all of the user's without one) and a broadcast exactly the
//! namespace's (everyone without one); that every frame delivered is
//! `{"type", "payload"}` JSON to an open connection; and that a failed connect
//! closes the connection with 1008.
#![no_main]

use arbitrary::{Result, Unstructured};
use chinwag_core::chat::{ConnId, Delivery, Hub};
use chinwag_core::frame::FrameHeader;
use chinwag_core::gateway::{self, Identity, Topics, TypeRoute};
use chinwag_core::{CloseCode, CloseFrame, Closed, ConnectionError, Initiator};
use chinwag_fuzz::json;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// What the hub queued: each recipient with the JSON it gets, and the closes.
fn deliveries(hub: &mut Hub) -> (Vec<(ConnId, Value)>, Vec<(ConnId, CloseCode)>) {
    let (mut frames, mut closes) = (Vec::new(), Vec::new());
    let queued: Vec<Delivery> = std::iter::from_fn(|| hub.poll_delivery()).collect();
    // A recipient was open when its frame was queued: it still is, or a later
    // delivery closes it (a failed connect gets its error, then the close).
    let closed_later = |at: usize, conn: ConnId| {
        queued[at..].iter().any(|d| matches!(d, Delivery::Close { conn: c, .. } if *c == conn))
    };
    for (at, delivery) in queued.iter().cloned().enumerate() {
        match delivery {
            Delivery::Frame { to, frame } => {
                let bytes = frame.as_bytes();
                let (header, len) = FrameHeader::decode(bytes).expect("a valid header").expect("a whole header");
                assert_eq!(header.opcode, 1, "the gateway speaks text");
                assert_eq!(bytes.len() - len, header.payload_len as usize, "one whole frame");
                let value: Value = serde_json::from_slice(&bytes[len..]).expect("a frame of JSON");
                assert!(value["type"].is_string(), "every message has a string type: {value}");
                assert!(value.as_object().is_some_and(|o| o.len() == 2 && o.contains_key("payload")), "{value}");
                for conn in &to {
                    assert!(hub.is_open(*conn) || closed_later(at, *conn), "a frame for {conn:?}, which is not open");
                }
                let mut seen = to.clone();
                seen.sort();
                seen.dedup();
                assert_eq!(seen.len(), to.len(), "a recipient twice in one delivery");
                frames.extend(to.into_iter().map(|c| (c, value.clone())));
            }
            Delivery::Close { conn, code, .. } => closes.push((conn, code)),
        }
    }
    (frames, closes)
}

fn sorted(mut frames: Vec<(ConnId, Value)>) -> Vec<(ConnId, String)> {
    let mut out: Vec<(ConnId, String)> = frames.drain(..).map(|(c, v)| (c, v.to_string())).collect();
    out.sort();
    out
}

struct Open {
    identity: Identity,
    context: Value,
}

fn pick<'a, T>(u: &mut Unstructured<'_>, items: &'a [T]) -> Result<Option<&'a T>> {
    if items.is_empty() { Ok(None) } else { Ok(Some(u.choose(items)?)) }
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let topic = |u: &mut Unstructured<'_>| -> Result<Option<String>> {
        Ok(if u.arbitrary()? { Some(json::string(u)?) } else { None })
    };
    let mut types: Vec<TypeRoute> = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        let route = TypeRoute { message_type: json::string(u)?, topic: json::string(u)? };
        // The configuration refuses a type listed twice.
        if !types.iter().any(|t| t.message_type == route.message_type) {
            types.push(route);
        }
    }
    let topics = Topics { on_connect: topic(u)?, on_message: topic(u)?, message_types: types, on_close: topic(u)? };
    let mut names: Vec<String> = Vec::new();
    for _ in 0..u.int_in_range(1..=4)? {
        names.push(json::string(u)?);
    }
    let mut hub = Hub::new();
    let mut open: BTreeMap<ConnId, Open> = BTreeMap::new();
    // Ids of connections that closed, to keep using them.
    let mut ids: Vec<ConnId> = Vec::new();

    while !u.is_empty() {
        let conn = pick(u, &ids)?.copied();
        match u.int_in_range(0..=8)? {
            0 => {
                let identity = Identity {
                    username: u.choose(&names)?.clone(),
                    namespace: if u.arbitrary()? { Some(u.choose(&names)?.clone()) } else { None },
                };
                let extra = json::object(u, 2)?;
                let conn = hub.open();
                let context = gateway::register(&mut hub, conn, &identity, &extra);
                assert_eq!(context["username"], json!(identity.username));
                assert_eq!(context["namespace"], json!(identity.namespace));
                assert_eq!(context["connection"], json!(conn.0));
                let events = gateway::connected(&topics, &context);
                assert_eq!(events.len(), usize::from(topics.on_connect.is_some()));
                for event in &events {
                    assert!(event.is_connect());
                    assert_eq!(event.reply_type(), gateway::CONNECT_REPLY_TYPE);
                    assert_eq!(event.body["context"], context);
                }
                ids.push(conn);
                open.insert(conn, Open { identity, context });
            }
            1 => {
                let Some(conn) = conn else { continue };
                let text = json::text(u)?;
                let context = open.get(&conn).map_or(Value::Null, |o| o.context.clone());
                let result = gateway::message(&mut hub, conn, &text, &topics, &context);
                let parsed: Option<Value> = serde_json::from_str(&text).ok();
                let message_type = parsed.as_ref().and_then(|v| v.get("type")).and_then(Value::as_str);
                let expected: Vec<&str> = match message_type {
                    Some(t) => topics
                        .on_message
                        .iter()
                        .map(String::as_str)
                        .chain(topics.message_types.iter().filter(|r| r.message_type == t).map(|r| r.topic.as_str()))
                        .collect(),
                    None => Vec::new(),
                };
                let (frames, closes) = deliveries(&mut hub);
                assert!(closes.is_empty());
                match result {
                    Ok(publishes) => {
                        let got: Vec<&str> = publishes.iter().map(|p| p.topic.as_str()).collect();
                        assert_eq!(got, expected, "{text:?}");
                        for p in &publishes {
                            assert_eq!(p.body["event"], "message");
                            assert_eq!(&p.body["message"], parsed.as_ref().expect("published, so parsed"));
                            assert_eq!(p.body["context"], context);
                            assert_eq!(p.body["topic"], json!(p.topic));
                            assert!(!p.is_connect());
                            assert_eq!(p.reply_type(), p.topic);
                        }
                        assert!(frames.is_empty(), "a published message got an answer: {frames:?}");
                    }
                    Err(bad) => {
                        assert!(expected.is_empty(), "{text:?} refused ({bad}) though {expected:?} take it");
                        let to_sender = usize::from(hub.is_open(conn));
                        assert_eq!(frames.len(), to_sender, "{text:?}: one error, to the sender: {frames:?}");
                        for (to, value) in frames {
                            assert_eq!(to, conn);
                            assert_eq!(value["type"], "error");
                            assert!(value["payload"]["message"].is_string());
                        }
                    }
                }
            }
            2 | 3 => {
                let Some(conn) = conn else { continue };
                if u.arbitrary()? {
                    gateway::binary(&mut hub, conn);
                } else {
                    gateway::too_big(&mut hub, conn, u.arbitrary()?, u.arbitrary()?);
                }
                let (frames, _) = deliveries(&mut hub);
                assert_eq!(frames.len(), usize::from(hub.is_open(conn)));
                assert!(frames.iter().all(|(to, v)| *to == conn && v["type"] == "error"));
            }
            4 => {
                let Some(conn) = conn else { continue };
                // Any way a connection can end: who started it, what each end sent.
                let code = CloseCode(u.arbitrary()?);
                let reason = json::string(u)?;
                let by_peer: bool = u.arbitrary()?;
                let sent: Option<(u16, String)> =
                    if u.arbitrary()? { Some((u.arbitrary()?, json::string(u)?)) } else { None };
                let error = match u.int_in_range(0u8..=3)? {
                    0 => None,
                    1 => Some(ConnectionError::TransportClosed),
                    2 => Some(ConnectionError::KeepaliveTimeout),
                    _ => Some(ConnectionError::CloseTimeout),
                };
                let closed = Closed {
                    code,
                    reason: reason.clone(),
                    initiator: if by_peer { Initiator::Peer } else { Initiator::Local },
                    sent: sent.clone().map(|(code, reason)| CloseFrame { code: CloseCode(code), reason }),
                    error,
                };
                let context = open.get(&conn).map_or(Value::Null, |o| o.context.clone());
                let events = gateway::close(&closed, &topics, &context);
                assert_eq!(events.len(), usize::from(topics.on_close.is_some()));
                // The end that closed speaks: the client's frame when it closed, the
                // server's own when it did; what happened when no reason was given.
                let (expect_code, expect_reason, initiator) = match (by_peer, &sent) {
                    (false, Some((sent_code, sent_reason))) => (*sent_code, sent_reason.clone(), "server"),
                    (false, None) => (code.0, reason.clone(), "server"),
                    (true, _) => (code.0, reason.clone(), "client"),
                };
                let expect_reason = match error {
                    Some(error) if expect_reason.is_empty() => error.to_string(),
                    _ => expect_reason,
                };
                for event in &events {
                    assert_eq!(
                        event.body["closed"],
                        json!({"code": expect_code, "reason": expect_reason, "initiator": initiator})
                    );
                    assert_eq!(event.body["context"], context);
                }
                hub.close(conn);
                open.remove(&conn);
            }
            5 => {
                let Some(conn) = conn else { continue };
                let reply_type = json::string(u)?;
                let payload = json::value(u, 3)?;
                let was_open = hub.is_open(conn);
                assert_eq!(gateway::reply(&mut hub, conn, &reply_type, payload.clone()), was_open);
                let (frames, _) = deliveries(&mut hub);
                let expected =
                    if was_open { vec![(conn, json!({"type": reply_type, "payload": payload}))] } else { vec![] };
                assert_eq!(sorted(frames), sorted(expected));
            }
            6 => {
                let Some(conn) = conn else { continue };
                let on_connect = u.arbitrary()?;
                let payload = json::value(u, 3)?;
                let was_open = hub.is_open(conn);
                assert_eq!(gateway::fail(&mut hub, conn, on_connect, payload.clone()), was_open);
                let (frames, closes) = deliveries(&mut hub);
                let expected =
                    if was_open { vec![(conn, json!({"type": "error", "payload": payload}))] } else { vec![] };
                // The error is queued before the connection is forgotten.
                assert_eq!(frames.len(), expected.len());
                assert_eq!(sorted(frames), sorted(expected));
                if was_open && on_connect {
                    assert_eq!(closes, [(conn, CloseCode::POLICY_VIOLATION)]);
                    assert!(!hub.is_open(conn));
                    open.remove(&conn);
                } else {
                    assert!(closes.is_empty());
                }
            }
            7 => {
                let username = u.choose(&names)?.clone();
                let namespace = if u.arbitrary()? { Some(u.choose(&names)?.clone()) } else { None };
                let message_type = json::string(u)?;
                let payload = json::value(u, 2)?;
                let reached = gateway::send(&mut hub, &username, namespace.as_deref(), &message_type, payload.clone());
                let expected: Vec<(ConnId, Value)> = open
                    .iter()
                    .filter(|(_, o)| {
                        o.identity.username == username && (namespace.is_none() || o.identity.namespace == namespace)
                    })
                    .map(|(c, _)| (*c, json!({"type": message_type, "payload": payload})))
                    .collect();
                assert_eq!(reached, expected.len(), "send to {username:?} in {namespace:?}");
                assert_eq!(sorted(deliveries(&mut hub).0), sorted(expected), "send to {username:?} in {namespace:?}");
            }
            _ => {
                let namespace = if u.arbitrary()? { Some(u.choose(&names)?.clone()) } else { None };
                let message_type = json::string(u)?;
                let payload = json::value(u, 2)?;
                let reached = gateway::broadcast(&mut hub, namespace.as_deref(), &message_type, payload.clone());
                let expected: Vec<(ConnId, Value)> = open
                    .iter()
                    .filter(|(_, o)| namespace.is_none() || o.identity.namespace == namespace)
                    .map(|(c, _)| (*c, json!({"type": message_type, "payload": payload})))
                    .collect();
                assert_eq!(reached, expected.len(), "broadcast to {namespace:?}");
                assert_eq!(sorted(deliveries(&mut hub).0), sorted(expected), "broadcast to {namespace:?}");
            }
        }
        let (frames, closes) = deliveries(&mut hub);
        assert!(frames.is_empty() && closes.is_empty(), "deliveries no op accounts for: {frames:?} {closes:?}");
    }
    Ok(())
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});

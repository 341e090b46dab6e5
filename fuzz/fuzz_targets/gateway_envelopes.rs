//! chinwag-gateway's bus envelopes (`chinwag_gateway::envelope`): arbitrary bytes,
//! and JSON objects made of the envelopes' own keys with values of every type,
//! through `parse_reply`, `parse_send` and `parse_broadcast`; and events through
//! `event` and back as a handler's reply. Checks that nothing panics; that each
//! parser accepts exactly what the module documentation describes (a model of it
//! here: the known keys only, the required ones present with the right types,
//! `username`, `type` and a given `namespace` non-empty, exactly one of `reply`
//! and `fail`) and returns what the envelope said; that an accepted send or
//! broadcast encodes back to the same command; and that an event carries its body
//! and its reply address, which a handler's echo brings back unchanged.
#![no_main]

use arbitrary::{Result, Unstructured};
use chinwag_fuzz::json;
use chinwag_gateway::Command;
use chinwag_gateway::envelope::{ReplyTo, event, parse_broadcast, parse_reply, parse_send};
use serde_json::{Map, Value, json};

/// What the documentation says `parse_send` returns for `value`.
fn send_model(value: &Value) -> Option<Command> {
    let object = value.as_object()?;
    if !object.keys().all(|k| ["username", "namespace", "type", "payload"].contains(&k.as_str())) {
        return None;
    }
    let username = object.get("username")?.as_str().filter(|s| !s.is_empty())?.to_owned();
    let (namespace, message_type, payload) = common_model(object)?;
    Some(Command::Send { username, namespace, message_type, payload })
}

fn broadcast_model(value: &Value) -> Option<Command> {
    let object = value.as_object()?;
    if !object.keys().all(|k| ["namespace", "type", "payload"].contains(&k.as_str())) {
        return None;
    }
    let (namespace, message_type, payload) = common_model(object)?;
    Some(Command::Broadcast { namespace, message_type, payload })
}

/// `namespace` (absent or null: none; else a non-empty string), `type` (a
/// non-empty string) and `payload` (any value; absent: null).
fn common_model(object: &Map<String, Value>) -> Option<(Option<String>, String, Value)> {
    let namespace = match object.get("namespace") {
        None | Some(Value::Null) => None,
        Some(Value::String(ns)) if !ns.is_empty() => Some(ns.clone()),
        Some(_) => return None,
    };
    let message_type = object.get("type")?.as_str().filter(|s| !s.is_empty())?.to_owned();
    Some((namespace, message_type, object.get("payload").cloned().unwrap_or(Value::Null)))
}

/// `{"reply_to": {node, connection, reply_type, on_connect}, "reply" or "fail":
/// payload}`: the payload is any JSON value, `null` included.
fn reply_model(value: &Value) -> Option<(ReplyTo<'static>, Command)> {
    let object = value.as_object()?;
    if !object.keys().all(|k| ["reply_to", "reply", "fail"].contains(&k.as_str())) {
        return None;
    }
    let to = object.get("reply_to")?.as_object()?;
    if !to.keys().all(|k| ["node", "connection", "reply_type", "on_connect"].contains(&k.as_str())) {
        return None;
    }
    let reply_to = ReplyTo {
        node: to.get("node")?.as_str()?.to_owned().into(),
        connection: to.get("connection")?.as_u64()?,
        reply_type: to.get("reply_type")?.as_str()?.to_owned().into(),
        on_connect: to.get("on_connect")?.as_bool()?,
    };
    let command = match (object.get("reply"), object.get("fail")) {
        (Some(payload), None) => Command::Reply(payload.clone()),
        (None, Some(payload)) => Command::Fail(payload.clone()),
        _ => return None,
    };
    Some((reply_to, command))
}

/// A send or broadcast as a handler would publish it.
fn encode(command: &Command) -> Value {
    match command {
        Command::Send { username, namespace, message_type, payload } => {
            json!({"username": username, "namespace": namespace, "type": message_type, "payload": payload})
        }
        Command::Broadcast { namespace, message_type, payload } => {
            json!({"namespace": namespace, "type": message_type, "payload": payload})
        }
        other => panic!("not a send or broadcast: {other:?}"),
    }
}

/// The parsers on any bytes: no panic, and what they accept round-trips.
fn any_bytes(bytes: &[u8]) {
    let value: Option<Value> = serde_json::from_slice(bytes).ok();
    let send = parse_send(bytes);
    let broadcast = parse_broadcast(bytes);
    let reply = parse_reply(bytes);
    for (what, result) in [("send", &send), ("broadcast", &broadcast)] {
        if let Ok(command) = result {
            let again = encode(command).to_string();
            let parsed = if what == "send" { parse_send(again.as_bytes()) } else { parse_broadcast(again.as_bytes()) };
            assert_eq!(parsed.as_ref(), Ok(command), "{what} {again}");
        }
        if let Err(e) = result {
            assert!(!e.0.is_empty(), "a refusal says why");
        }
    }
    // Text that is JSON is judged by the model.
    if let Some(value) = value {
        assert_eq!(send.ok(), send_model(&value), "send {value}");
        assert_eq!(broadcast.ok(), broadcast_model(&value), "broadcast {value}");
        assert_eq!(reply.ok(), reply_model(&value), "reply {value}");
    } else {
        assert!(send.is_err() && broadcast.is_err() && reply.is_err(), "not JSON, yet accepted");
    }
}

const KEYS: &[&str] = &["username", "namespace", "type", "payload", "reply_to", "reply", "fail", "usename", "extra"];

/// A value likely to be what a key wants, or anything.
fn field(u: &mut Unstructured<'_>, key: &str) -> Result<Value> {
    if u.ratio(1, 3)? {
        return json::value(u, 2);
    }
    Ok(match key {
        "reply_to" => {
            let mut to = Map::new();
            for key in ["node", "connection", "reply_type", "on_connect", "extra"] {
                if u.ratio(7, 8)? && (key != "extra" || u.ratio(1, 4)?) {
                    let value = match key {
                        "node" | "reply_type" => json!(json::string(u)?),
                        "connection" => json!(u.arbitrary::<u64>()?),
                        "on_connect" => json!(u.arbitrary::<bool>()?),
                        _ => json::value(u, 1)?,
                    };
                    to.insert(key.to_owned(), value);
                }
            }
            Value::Object(to)
        }
        "payload" | "reply" | "fail" => json::value(u, 3)?,
        _ => json!(json::string(u)?),
    })
}

fn envelopes(u: &mut Unstructured<'_>) -> Result<()> {
    // An envelope made of known keys.
    let mut object = Map::new();
    for key in KEYS {
        if u.arbitrary()? {
            object.insert((*key).to_owned(), field(u, key)?);
        }
    }
    any_bytes(Value::Object(object).to_string().as_bytes());

    // An event and a handler's echo of its reply address.
    let mut body = json::object(u, 2)?;
    // A body never has a key of its own named reply_to (the gateway makes the
    // bodies); one would make the encoded event's keys ambiguous.
    body.remove("reply_to");
    let reply_to = ReplyTo {
        node: json::string(u)?.into(),
        connection: u.arbitrary()?,
        reply_type: json::string(u)?.into(),
        on_connect: u.arbitrary()?,
    };
    let encoded: Value = serde_json::from_slice(&event(&Value::Object(body.clone()), &reply_to)).expect("JSON");
    let encoded = encoded.as_object().expect("an object");
    assert_eq!(encoded.len(), body.len() + 1, "the body's keys and reply_to");
    for (key, value) in &body {
        assert_eq!(encoded.get(key), Some(value), "{key}");
    }
    let payload = json::value(u, 2)?;
    let fail = u.arbitrary::<bool>()?;
    let answer = json!({"reply_to": encoded["reply_to"], (if fail { "fail" } else { "reply" }): payload});
    let command = if fail { Command::Fail(payload) } else { Command::Reply(payload) };
    assert_eq!(parse_reply(answer.to_string().as_bytes()), Ok((reply_to, command)), "{answer}");
    Ok(())
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        any_bytes(rest);
    } else {
        let _ = envelopes(&mut Unstructured::new(rest));
    }
});

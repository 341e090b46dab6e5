//! `chinwag.v1` on one node: JSON messages beside the plain lines, history on
//! joining, and recovery after a reconnect (exact, trimmed, another epoch).

use chinwag_core::chat::v1::Resume;
use chinwag_core::chat::{ConnId, Delivery, Hub, Offset, Replica};
use chinwag_core::frame::FrameHeader;
use serde_json::{Value, json};
use std::collections::BTreeMap;

struct Chat {
    hub: Hub,
    chat: Replica,
    screens: BTreeMap<ConnId, Vec<String>>,
}

impl Chat {
    fn new() -> Self {
        let mut chat = Replica::alone();
        chat.set_epoch("e1");
        Self { hub: Hub::new(), chat, screens: BTreeMap::new() }
    }

    fn collect(&mut self) {
        while let Some(delivery) = self.hub.poll_delivery() {
            let Delivery::Frame { to, frame } = delivery else { continue };
            let bytes = frame.as_bytes();
            let (_, at) = FrameHeader::decode(bytes).unwrap().unwrap();
            let text = std::str::from_utf8(&bytes[at..]).unwrap().to_owned();
            for conn in to {
                self.screens.entry(conn).or_default().push(text.clone());
            }
        }
    }

    fn enter(&mut self, name: &str, v1: Option<Resume>) -> ConnId {
        let conn = self.hub.open();
        self.chat.admit(&mut self.hub, conn, name, None).unwrap();
        if let Some(resume) = v1 {
            self.chat.use_v1(conn, resume);
        }
        self.chat.open(&mut self.hub, conn);
        self.collect();
        conn
    }

    fn say(&mut self, conn: ConnId, text: &str) {
        self.chat.text(&mut self.hub, conn, text);
        self.collect();
    }

    fn leave(&mut self, conn: ConnId) {
        self.chat.close(&mut self.hub, conn);
        self.collect();
    }

    fn take(&mut self, conn: ConnId) -> Vec<String> {
        self.screens.remove(&conn).unwrap_or_default()
    }

    /// What a v1 client got, parsed.
    fn take_json(&mut self, conn: ConnId) -> Vec<Value> {
        self.take(conn).iter().map(|m| serde_json::from_str(m).unwrap()).collect()
    }
}

/// The `text` of each `line` object.
fn texts(messages: &[Value]) -> Vec<&str> {
    messages.iter().filter(|m| m["type"] == "line").map(|m| m["text"].as_str().unwrap()).collect()
}

#[test]
fn v1_clients_get_objects_and_plain_clients_get_the_same_lines() {
    let mut c = Chat::new();
    let plain = c.enter("plain", None);
    let ann = c.enter("ann", Some(Resume::default()));
    assert_eq!(
        c.take(plain),
        ["Hi plain! You have successfully connected to the chat", "plain connected to chat", "ann connected to chat"]
    );
    let got = c.take_json(ann);
    assert_eq!(
        got[0],
        json!({"type": "welcome", "name": "ann", "text": "Hi ann! You have successfully connected to the chat", "epoch": "e1"})
    );
    assert_eq!(
        got[1],
        json!({"type": "line", "room": "", "offset": "0-2", "epoch": "e1", "text": "ann connected to chat"})
    );
    assert_eq!(got[2], json!({"type": "presence", "room": "", "joined": "ann"}));
    assert_eq!(got[3], json!({"type": "members", "room": "", "members": ["ann", "plain"]}));
    assert_eq!(got.len(), 4);

    c.say(plain, "hi \"ann\"");
    assert_eq!(c.take(plain), ["plain: hi \"ann\""]);
    assert_eq!(
        c.take_json(ann),
        [json!({"type": "line", "room": "", "offset": "0-3", "epoch": "e1", "text": "plain: hi \"ann\""})]
    );

    c.say(ann, "/users");
    c.say(ann, "/nonsense");
    c.say(ann, "/msg plain psst");
    let got = c.take_json(ann);
    assert_eq!(got[0], json!({"type": "reply", "text": "online (2): ann, plain"}));
    assert_eq!(got[1]["type"], "error");
    assert_eq!(got[2], json!({"type": "direct", "text": "ann -> plain: psst"}));
    assert_eq!(c.take(plain), ["ann -> plain: psst"]);

    c.say(ann, "/join ops");
    let got = c.take_json(ann);
    assert_eq!(
        got[0],
        json!({"type": "line", "room": "ops", "offset": "0-1", "epoch": "e1", "text": "ann joined #ops"})
    );
    assert_eq!(got[1], json!({"type": "presence", "room": "ops", "joined": "ann"}));

    c.leave(plain);
    let got = c.take_json(ann);
    assert_eq!(texts(&got), ["plain left the chat"]);
    assert_eq!(got[1], json!({"type": "presence", "room": "", "left": "plain"}));
}

#[test]
fn history_on_joining() {
    let mut c = Chat::new();
    let bob = c.enter("bob", None);
    for n in 0..5 {
        c.say(bob, &format!("line {n}"));
    }
    let ann = c.enter("ann", Some(Resume { history: 3, since: None }));
    let got = c.take_json(ann);
    assert_eq!(texts(&got), ["bob: line 2", "bob: line 3", "bob: line 4", "ann connected to chat"]);
    // More than the history holds is capped at it.
    let mut c = Chat::new();
    c.chat.set_history_len(2);
    let bob = c.enter("bob", None);
    c.say(bob, "one");
    c.say(bob, "two");
    let ann = c.enter("ann", Some(Resume { history: 50, since: None }));
    assert_eq!(texts(&c.take_json(ann)), ["bob: one", "bob: two", "ann connected to chat"]);
}

/// The last offset of the main chat a v1 client saw.
fn last_offset(messages: &[Value]) -> Offset {
    let last = messages.iter().rev().find(|m| m["type"] == "line" && m["room"] == "").unwrap();
    last["offset"].as_str().unwrap().parse().unwrap()
}

#[test]
fn a_reconnecting_client_recovers_what_it_missed_exactly_once() {
    let mut c = Chat::new();
    let bob = c.enter("bob", None);
    let ann = c.enter("ann", Some(Resume::default()));
    c.say(bob, "before");
    let seen = c.take_json(ann);
    let since = last_offset(&seen);
    c.leave(ann);
    c.say(bob, "while away 1");
    c.say(bob, "while away 2");
    let ann = c.enter("ann", Some(Resume { history: 0, since: Some((since, "e1".into())) }));
    let got = c.take_json(ann);
    assert_eq!(got[0]["type"], "welcome");
    assert_eq!(
        texts(&got),
        ["ann left the chat", "bob: while away 1", "bob: while away 2", "ann connected to chat"],
        "the missed lines, in order, then its own join live"
    );
    let recovered = got.iter().find(|m| m["type"] == "recovered").unwrap();
    assert_eq!(recovered, &json!({"type": "recovered", "room": "", "recovered": true, "missed": 3}));
    // Offsets strictly increase across the recovered and the live lines.
    let offsets: Vec<Offset> =
        got.iter().filter(|m| m["type"] == "line").map(|m| m["offset"].as_str().unwrap().parse().unwrap()).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    c.say(bob, "live");
    assert_eq!(texts(&c.take_json(ann)), ["bob: live"]);
}

#[test]
fn a_recovery_from_lines_no_longer_held_says_how_many_were_lost() {
    let mut c = Chat::new();
    c.chat.set_history_len(3);
    let bob = c.enter("bob", None);
    let ann = c.enter("ann", Some(Resume::default()));
    let since = last_offset(&c.take_json(ann));
    c.leave(ann);
    for n in 0..5 {
        c.say(bob, &format!("line {n}"));
    }
    let ann = c.enter("ann", Some(Resume { history: 0, since: Some((since, "e1".into())) }));
    let got = c.take_json(ann);
    // Missed: ann's leave line and 5 lines; 3 are still held.
    let recovered = got.iter().find(|m| m["type"] == "recovered").unwrap();
    assert_eq!(recovered, &json!({"type": "recovered", "room": "", "recovered": false, "lost_at_least": 3}));
    // What is held comes after, for the client's bearings, then the live join.
    assert_eq!(texts(&got), ["bob: line 2", "bob: line 3", "bob: line 4", "ann connected to chat"]);

    // Another epoch (the server restarted): nothing can be recovered.
    let carol = c.enter("carol", Some(Resume { history: 0, since: Some((Offset(0, 1), "older".into())) }));
    let got = c.take_json(carol);
    let recovered = got.iter().find(|m| m["type"] == "recovered").unwrap();
    assert_eq!(recovered["recovered"], false);
    assert_eq!(recovered["lost_at_least"], 1);
}

#[test]
fn a_client_joining_a_room_again_recovers_its_lines() {
    let mut c = Chat::new();
    let bob = c.enter("bob", None);
    c.say(bob, "/join ops");
    let ann = c.enter("ann", Some(Resume::default()));
    c.say(ann, "/join ops");
    c.say(bob, "/say ops first");
    let seen = c.take_json(ann);
    let in_ops = seen.iter().rev().find(|m| m["type"] == "line" && m["room"] == "ops").unwrap();
    assert_eq!(in_ops["text"], "#ops bob: first");
    let ops_since: Offset = in_ops["offset"].as_str().unwrap().parse().unwrap();
    let since = last_offset(&seen);
    c.leave(ann);
    c.say(bob, "/say ops while away");
    c.take(bob);
    let ann = c.enter("ann", Some(Resume { history: 0, since: Some((since, "e1".into())) }));
    c.take_json(ann);
    c.say(ann, &format!("/join ops {ops_since} e1"));
    let got = c.take_json(ann);
    assert_eq!(texts(&got), ["#ops bob: while away", "ann joined #ops"], "the missed room line, then the join");
    assert_eq!(got[1], json!({"type": "recovered", "room": "ops", "recovered": true, "missed": 1}));
    // A plain client's extra words after the room are ignored, as before.
    let plain = c.enter("plain", None);
    c.take(plain);
    c.say(plain, "/join ops 0-1");
    assert_eq!(c.take(plain), ["plain joined #ops"]);
    // An offset older than the room's history: lines were lost, and it says so.
    c.chat.set_history_len(1);
    c.say(bob, "/say ops a");
    c.say(bob, "/say ops b");
    let dan = c.enter("dan", Some(Resume::default()));
    c.take_json(dan);
    c.say(dan, &format!("/join ops {ops_since}"));
    let got = c.take_json(dan);
    assert_eq!(got[0]["recovered"], false);
    assert!(got[0]["lost_at_least"].as_u64().unwrap() >= 1);
    // An offset of another epoch: nothing can be recovered.
    let eve = c.enter("eve", Some(Resume::default()));
    c.take_json(eve);
    c.say(eve, "/join ops 0-1 older");
    assert_eq!(c.take_json(eve)[0]["recovered"], false);
}

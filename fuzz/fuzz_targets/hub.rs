//! The chat on two nodes: two replicas over a shared log per room, driven by
//! arbitrary sequences of opens (arbitrary names and ages), lines (commands
//! included), disconnects and closes on either node, appends (some twice), log
//! entries applied on either node at any pace, time passing and arbitrary views
//! of which nodes are alive (so reaps, of dead and of live nodes), and a store
//! that loses its data (reasserted joins); some clients speak chinwag.v1, asking
//! for history or recovery from an arbitrary offset. Checks that nothing panics, that
//! every delivery goes to connections open when it was queued (checked after
//! each step), and that once everyone has left and every log is applied,
//! nothing is left behind: no connection, name, group or user, on either node.
#![no_main]

use chinwag_core::chat::v1::Resume;
use chinwag_core::chat::{ConnId, Delivery, Entry, Hub, Offset, Output, Record, Replica, room::CHAT};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Reads a length-prefixed string (lossy UTF-8) from the front of `data`.
fn take_str(data: &mut &[u8]) -> String {
    let Some((&len, rest)) = data.split_first() else { return String::new() };
    let len = usize::from(len % 48).min(rest.len());
    let (s, rest) = rest.split_at(len);
    *data = rest;
    String::from_utf8_lossy(s).into_owned()
}

fn take_byte(data: &mut &[u8]) -> u8 {
    let Some((&b, rest)) = data.split_first() else { return 0 };
    *data = rest;
    b
}

struct Node {
    hub: Hub,
    chat: Replica,
    open: Vec<ConnId>,
    /// Per room read, entries applied.
    cursor: HashMap<String, usize>,
    joining: BTreeSet<String>,
}

impl Node {
    fn new(name: &str) -> Self {
        Self {
            hub: Hub::new(),
            chat: {
                let mut chat = Replica::clustered(name);
                chat.set_epoch("e");
                chat.set_history_len(8);
                chat
            },
            open: Vec::new(),
            cursor: HashMap::from([(CHAT.to_owned(), 0)]),
            joining: BTreeSet::new(),
        }
    }

    fn check_deliveries(&mut self) {
        while let Some(delivery) = self.hub.poll_delivery() {
            if let Delivery::Frame { to, .. } = delivery {
                for conn in to {
                    assert!(self.hub.is_open(conn), "a frame for {conn:?}, which is not open");
                }
            }
        }
    }

    /// Appends what the replica output to `log` (the first entry twice if
    /// `twice`), as the Redis driver does; reaps are appended once per node.
    fn flush(&mut self, log: &mut BTreeMap<String, Vec<Entry>>, reaped: &mut BTreeSet<String>, twice: bool) {
        let mut first = true;
        while let Some(output) = self.chat.poll_output() {
            match output {
                Output::Append { room, entry } => {
                    let entries = log.entry(room.clone()).or_default();
                    let at = entries.len();
                    if twice && first {
                        entries.push(entry.clone());
                    }
                    first = false;
                    entries.push(entry);
                    if self.joining.remove(&room) {
                        self.cursor.entry(room).or_insert(at);
                    }
                }
                Output::Follow { room } => {
                    self.joining.insert(room);
                }
                Output::Unfollow { room } => {
                    self.joining.remove(&room);
                    self.cursor.remove(&room);
                }
                Output::Reap { node, members } => {
                    if reaped.insert(node) {
                        let entries = log.entry(CHAT.to_owned()).or_default();
                        for (member, name) in members {
                            entries.push(Entry { member, seq: 0, record: Record::Left { name } });
                        }
                    }
                }
            }
        }
    }

    /// Applies the next entry of `room` if this node reads it; whether it did.
    fn apply_next(&mut self, log: &BTreeMap<String, Vec<Entry>>, room: &str) -> bool {
        let Some(at) = self.cursor.get_mut(room) else { return false };
        let Some(entry) = log.get(room).and_then(|entries| entries.get(*at)).cloned() else { return false };
        *at += 1;
        let offset = Offset(1, *at as u64);
        self.chat.apply(&mut self.hub, room, offset, entry);
        self.check_deliveries();
        true
    }

    fn close(&mut self, conn: ConnId) {
        self.chat.close(&mut self.hub, conn);
        self.check_deliveries();
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let mut nodes = [Node::new("a"), Node::new("b")];
    let mut log: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    let mut reaped = BTreeSet::new();
    let start = Instant::now();
    let mut now = start;
    while let Some((&op, rest)) = data.split_first() {
        data = rest;
        let node = &mut nodes[usize::from(op / 8) % 2];
        let pick = |open: &[ConnId], data: &mut &[u8]| -> Option<usize> {
            let i = take_byte(data);
            (!open.is_empty()).then(|| usize::from(i) % open.len())
        };
        match op % 8 {
            0 => {
                let name = take_str(&mut data);
                let age = take_str(&mut data);
                let conn = node.hub.open();
                let age = (!age.is_empty()).then_some(age.as_str());
                if node.chat.admit(&mut node.hub, conn, &name, age).is_ok() {
                    // Some speak chinwag.v1, with history or a recovery offset.
                    let v1 = take_byte(&mut data);
                    if v1 % 2 == 1 {
                        let since = (v1 % 4 == 3).then(|| (Offset(1, u64::from(take_byte(&mut data))), "e".to_owned()));
                        node.chat.use_v1(conn, Resume { history: usize::from(v1 / 4), since });
                    }
                    node.chat.open(&mut node.hub, conn);
                    node.open.push(conn);
                } else {
                    node.chat.close(&mut node.hub, conn);
                }
            }
            1 | 2 => {
                let Some(i) = pick(&node.open, &mut data) else { continue };
                let text = take_str(&mut data);
                // Commands are likely: half the lines start with one.
                let text = if op % 8 == 2 {
                    let verbs = ["/msg ", "/join ", "/say ", "/leave ", "/users", "/rooms", "/help", "//", "/"];
                    format!("{}{text}", verbs[usize::from(take_byte(&mut data)) % verbs.len()])
                } else {
                    text
                };
                let conn = node.open[i];
                node.chat.text(&mut node.hub, conn, &text);
            }
            3 => {
                let Some(i) = pick(&node.open, &mut data) else { continue };
                let conn = node.open.swap_remove(i);
                node.close(conn);
            }
            4 => {
                let Some(i) = pick(&node.open, &mut data) else { continue };
                let conn = node.open.swap_remove(i);
                let _ = node.hub.disconnect(conn, chinwag_core::CloseCode::POLICY_VIOLATION, "fuzz");
                node.close(conn);
            }
            5 => {
                let how = take_byte(&mut data);
                node.chat.set_available(how % 7 != 0);
                if how % 11 == 0 {
                    node.chat.reassert();
                }
                node.flush(&mut log, &mut reaped, how % 2 == 1);
            }
            6 => {
                let rooms: Vec<String> = node.cursor.keys().cloned().collect();
                if rooms.is_empty() {
                    continue;
                }
                let room = rooms[usize::from(take_byte(&mut data)) % rooms.len()].clone();
                node.apply_next(&log, &room);
            }
            _ => {
                now += Duration::from_secs(u64::from(take_byte(&mut data) % 8));
                let seen = take_byte(&mut data);
                let alive: BTreeSet<String> = ["a", "b"]
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| seen & (1 << i) != 0)
                    .map(|(_, n)| n.to_string())
                    .collect();
                node.chat.nodes_alive(now, &alive);
            }
        }
        node.check_deliveries();
    }
    // Everyone leaves; every node appends and applies everything.
    for node in &mut nodes {
        node.chat.set_available(true);
        for conn in std::mem::take(&mut node.open) {
            node.close(conn);
        }
    }
    for _ in 0..3 {
        for node in &mut nodes {
            node.flush(&mut log, &mut reaped, false);
        }
        for node in &mut nodes {
            let rooms: Vec<String> = log.keys().cloned().collect();
            for room in rooms {
                while node.apply_next(&log, &room) {}
            }
        }
    }
    for node in &nodes {
        assert!(node.hub.is_empty(), "connections left behind");
        assert_eq!(node.hub.name_count(), 0, "names left behind");
        assert_eq!(node.hub.group_count(), 0, "groups left behind");
        assert_eq!(node.chat.local_count(), 0, "members left behind");
        assert!(node.chat.users().is_empty(), "users still listed: {:?}", node.chat.users());
    }
});

//! Model-based property test of the chat on several nodes: three replicas share
//! one log per room (what Redis streams are in production) and apply it each at
//! its own pace, while their members join, talk, use rooms and direct messages
//! and leave, in any interleaving; some entries are appended twice (a retried
//! write), and a node may die and be reaped.
//!
//! Checked, against an observer replica that applies every log with no member of
//! its own (the lines the log means):
//! - one order, exactly once: every client's lines of a room are a contiguous run
//!   of that room's lines, without repeats;
//! - nothing is missed: once every node has applied everything, a client still
//!   connected has every line of the main chat from its own join line on, and
//!   every line of each room it is in from its own join line on;
//! - one view: every replica then lists the same users, exactly the members of
//!   live nodes still connected;
//! - a direct message reaches its recipient and its sender and nobody else.

use chinwag_core::chat::{ConnId, Delivery, Entry, Hub, Offset, Output, Record, Replica, room::CHAT};
use chinwag_core::frame::FrameHeader;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

const NODES: usize = 3;
const ROOMS: [&str; 2] = ["r", "s"];

#[derive(Debug, Clone)]
enum Op {
    /// A newcomer connects to node n.
    Open(usize),
    /// Client k (by order of opening) says something, or runs a command.
    Say(usize),
    JoinRoom(usize, usize),
    SayRoom(usize, usize),
    LeaveRoom(usize, usize),
    Msg(usize, usize),
    Users(usize),
    Close(usize),
    /// The service closes client k (the hub forgets it at once).
    Disconnect(usize),
    /// Node n applies the next entry of the main log (false) or of a room.
    Apply(usize, Option<usize>),
    /// Node n appends what its replica output, with the first entry twice.
    Flush(usize, bool),
    /// Node n dies (its clients are gone; the others reap it).
    Kill(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let n = 0..NODES;
    let k = 0usize..10;
    let r = 0..ROOMS.len();
    prop_oneof![
        3 => n.clone().prop_map(Op::Open),
        3 => k.clone().prop_map(Op::Say),
        2 => (k.clone(), r.clone()).prop_map(|(k, r)| Op::JoinRoom(k, r)),
        2 => (k.clone(), r.clone()).prop_map(|(k, r)| Op::SayRoom(k, r)),
        1 => (k.clone(), r.clone()).prop_map(|(k, r)| Op::LeaveRoom(k, r)),
        1 => (k.clone(), k.clone()).prop_map(|(k, to)| Op::Msg(k, to)),
        1 => k.clone().prop_map(Op::Users),
        1 => k.clone().prop_map(Op::Close),
        1 => k.prop_map(Op::Disconnect),
        8 => (n.clone(), proptest::option::of(r)).prop_map(|(n, r)| Op::Apply(n, r)),
        4 => (n.clone(), any::<bool>()).prop_map(|(n, twice)| Op::Flush(n, twice)),
        1 => n.prop_map(Op::Kill),
    ]
}

struct Node {
    hub: Hub,
    chat: Replica,
    alive: bool,
    /// Per room it reads (as its replica asked: the main chat always), how many
    /// log entries it has applied.
    cursor: HashMap<String, usize>,
    /// Rooms to read from the next entry it appends to them.
    joining: BTreeSet<String>,
}

struct Client {
    node: usize,
    conn: ConnId,
    name: String,
    connected: bool,
    lines: Vec<String>,
}

#[derive(Default)]
struct Log(BTreeMap<String, Vec<Entry>>);

fn text_of(frame: &chinwag_core::SharedFrame) -> String {
    let bytes = frame.as_bytes();
    let (_, at) = FrameHeader::decode(bytes).unwrap().unwrap();
    String::from_utf8(bytes[at..].to_vec()).unwrap()
}

struct World {
    nodes: Vec<Node>,
    clients: Vec<Client>,
    log: Log,
    now: Instant,
    counter: usize,
}

impl World {
    fn new() -> Self {
        let nodes = (0..NODES)
            .map(|i| Node {
                hub: Hub::new(),
                chat: Replica::clustered(format!("n{i}")),
                alive: true,
                cursor: HashMap::from([(CHAT.to_owned(), 0)]),
                joining: BTreeSet::new(),
            })
            .collect();
        Self { nodes, clients: Vec::new(), log: Log::default(), now: Instant::now(), counter: 0 }
    }

    fn collect(&mut self, n: usize) {
        while let Some(delivery) = self.nodes[n].hub.poll_delivery() {
            let Delivery::Frame { to, frame } = delivery else { continue };
            let text = text_of(&frame);
            for conn in to {
                if let Some(c) = self.clients.iter_mut().find(|c| c.node == n && c.conn == conn) {
                    c.lines.push(text.clone());
                }
            }
        }
    }

    fn client(&self, k: usize) -> Option<usize> {
        let live: Vec<usize> = (0..self.clients.len())
            .filter(|&i| self.clients[i].connected && self.nodes[self.clients[i].node].alive)
            .collect();
        (!live.is_empty()).then(|| live[k % live.len()])
    }

    fn text(&mut self, k: usize, text: String) {
        let Some(i) = self.client(k) else { return };
        let (n, conn) = (self.clients[i].node, self.clients[i].conn);
        let node = &mut self.nodes[n];
        node.chat.text(&mut node.hub, conn, &text);
        self.collect(n);
    }

    fn step(&mut self, op: &Op) {
        self.now += Duration::from_secs(1);
        self.counter += 1;
        let c = self.counter;
        match *op {
            Op::Open(n) => {
                if !self.nodes[n].alive {
                    return;
                }
                let name = format!("u{c}");
                let node = &mut self.nodes[n];
                let conn = node.hub.open();
                node.chat.admit(&mut node.hub, conn, &name, None).unwrap();
                node.chat.open(&mut node.hub, conn);
                self.clients.push(Client { node: n, conn, name, connected: true, lines: Vec::new() });
                self.collect(n);
            }
            Op::Say(k) => self.text(k, format!("t{c}")),
            Op::JoinRoom(k, r) => self.text(k, format!("/join {}", ROOMS[r])),
            Op::SayRoom(k, r) => self.text(k, format!("/say {} t{c}", ROOMS[r])),
            Op::LeaveRoom(k, r) => self.text(k, format!("/leave {}", ROOMS[r])),
            Op::Users(k) => self.text(k, "/users".into()),
            Op::Msg(k, to) => {
                let Some(to) = self.client(to) else { return };
                let to = self.clients[to].name.clone();
                self.text(k, format!("/msg {to} d{c}"));
            }
            Op::Close(k) | Op::Disconnect(k) => {
                let Some(i) = self.client(k) else { return };
                self.clients[i].connected = false;
                let (n, conn) = (self.clients[i].node, self.clients[i].conn);
                let node = &mut self.nodes[n];
                if let Op::Disconnect(_) = op {
                    node.hub.disconnect(conn, chinwag_core::CloseCode::POLICY_VIOLATION, "bye").unwrap();
                }
                node.chat.close(&mut node.hub, conn);
                self.collect(n);
            }
            Op::Apply(n, room) => {
                let room = room.map_or(CHAT, |r| ROOMS[r]);
                self.apply_next(n, room);
            }
            Op::Flush(n, twice) => self.flush(n, twice),
            Op::Kill(n) => {
                // Never the last live node: someone must be left to reap it.
                if self.nodes.iter().filter(|n| n.alive).count() < 2 || !self.nodes[n].alive {
                    return;
                }
                self.nodes[n].alive = false;
                // What it had not appended dies with it.
                while self.nodes[n].chat.poll_output().is_some() {}
                for client in self.clients.iter_mut().filter(|c| c.node == n) {
                    client.connected = false;
                }
            }
        }
    }

    /// Node n appends what its replica output, and reads the rooms it asks to
    /// (from its own first entry in a room it joins), as the Redis driver does.
    fn flush(&mut self, n: usize, twice: bool) {
        if !self.nodes[n].alive {
            return;
        }
        let mut first = true;
        while let Some(output) = self.nodes[n].chat.poll_output() {
            match output {
                Output::Append { room, entry } => {
                    let log = self.log.0.entry(room.clone()).or_default();
                    let at = log.len();
                    if twice && first {
                        log.push(entry.clone());
                    }
                    first = false;
                    log.push(entry);
                    let node = &mut self.nodes[n];
                    if node.joining.remove(&room) {
                        node.cursor.entry(room).or_insert(at);
                    }
                }
                Output::Reap { node, members } => {
                    // The store reaps once (an atomic script): only if no one did.
                    let done =
                        self.log.0.get(CHAT).is_some_and(|log| log.iter().any(|e| e.member.node == node && e.seq == 0));
                    if !done {
                        let log = self.log.0.entry(CHAT.to_owned()).or_default();
                        for (member, name) in members {
                            log.push(Entry { member, seq: 0, record: Record::Left { name } });
                        }
                    }
                }
                Output::Follow { room } => {
                    self.nodes[n].joining.insert(room);
                }
                Output::Unfollow { room } => {
                    let node = &mut self.nodes[n];
                    node.joining.remove(&room);
                    node.cursor.remove(&room);
                }
            }
        }
    }

    fn apply_next(&mut self, n: usize, room: &str) -> bool {
        let node = &mut self.nodes[n];
        if !node.alive {
            return false;
        }
        let Some(at) = node.cursor.get_mut(room) else { return false };
        let Some(entry) = self.log.0.get(room).and_then(|log| log.get(*at)).cloned() else { return false };
        *at += 1;
        let offset = Offset(1, *at as u64);
        node.chat.apply(&mut node.hub, room, offset, entry);
        self.collect(n);
        true
    }

    /// Everything out and applied everywhere, dead nodes reaped.
    fn settle(&mut self) {
        for _ in 0..4 {
            self.now += Replica::DEAD_AFTER;
            let alive: BTreeSet<String> =
                (0..NODES).filter(|&n| self.nodes[n].alive).map(|n| format!("n{n}")).collect();
            for n in 0..NODES {
                if self.nodes[n].alive {
                    let now = self.now;
                    self.nodes[n].chat.nodes_alive(now, &alive);
                }
                self.flush(n, false);
            }
            for n in 0..NODES {
                let rooms: Vec<String> = self.log.0.keys().cloned().collect();
                for room in rooms {
                    while self.apply_next(n, &room) {}
                }
                self.flush(n, false);
            }
        }
    }
}

/// The lines each room's log means, as a replica with no members shows them
/// (direct messages left out: they are nobody else's).
fn meaning(log: &Log) -> BTreeMap<String, Vec<String>> {
    let mut observer = Replica::clustered("observer");
    let mut hub = Hub::new();
    let mut lines = BTreeMap::new();
    for (room, entries) in &log.0 {
        let mut shown = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let direct = matches!(entry.record, Record::Direct { .. });
            let out = observer.apply(&mut hub, room, Offset(1, i as u64 + 1), entry.clone());
            if !direct {
                shown.extend(out);
            }
        }
        lines.insert(room.clone(), shown);
    }
    lines
}

/// Whether `seen` appears in `all` in order (not necessarily contiguous).
fn is_subsequence(seen: &[String], all: &[String]) -> bool {
    let mut all = all.iter();
    seen.iter().all(|line| all.any(|l| l == line))
}

/// Whether `seen` is a contiguous run of `all`.
fn is_run(seen: &[String], all: &[String]) -> bool {
    seen.is_empty() || all.windows(seen.len()).any(|w| w == seen)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn any_interleaving_keeps_the_transcript_rules(ops in proptest::collection::vec(op(), 1..120)) {
        let mut world = World::new();
        for op in &ops {
            world.step(op);
        }
        world.settle();
        // The main log's meaning is what the observer saw; a room's meaning
        // depends on the main log only through names, which entries carry.
        let meaning = meaning(&world.log);
        // Every text is said once (each has its own number), however often its
        // entry was appended: the observer must show it once at most.
        for all in meaning.values() {
            for line in all.iter().filter(|l| l.contains(": t")) {
                prop_assert_eq!(all.iter().filter(|l| *l == line).count(), 1, "{} shown twice", line);
            }
        }
        let empty = Vec::new();
        for client in &world.clients {
            for (room, all) in &meaning {
                let mine: Vec<String> = client.lines.iter().filter(|l| all.contains(l)).cloned().collect();
                // The main chat: one run, from joining to leaving. A room: in log
                // order, with gaps where the client was out of it.
                let ordered = if room == CHAT { is_run(&mine, all) } else { is_subsequence(&mine, all) };
                prop_assert!(ordered, "{} in {room:?}: {mine:?} is out of order against {all:?}", client.name);
                // A line can repeat (joining a room twice); never more often than
                // the log says.
                for line in &mine {
                    let (seen, meant) = (mine.iter().filter(|l| *l == line).count(), all.iter().filter(|l| *l == line).count());
                    prop_assert!(seen <= meant, "{} saw {line:?} {seen} times", client.name);
                }
            }
            if client.connected {
                let main = meaning.get(CHAT).unwrap_or(&empty);
                let mine: Vec<&String> = client.lines.iter().filter(|l| main.contains(l)).collect();
                let from = main.iter().position(|l| l.starts_with(&format!("{} connected", client.name)));
                let from = from.expect("a connected client's join is in the log");
                prop_assert_eq!(mine, main[from..].iter().collect::<Vec<_>>(), "{} missed main lines", &client.name);
                let greeting = format!("Hi {}! You have successfully connected to the chat", client.name);
                prop_assert_eq!(client.lines.first(), Some(&greeting));
            }
            // A direct message: its two parties only.
            for line in client.lines.iter().filter(|l| l.contains(" -> ")) {
                let (from, rest) = line.split_once(" -> ").unwrap();
                let to = rest.split_once(':').unwrap().0;
                prop_assert!(client.name == from || client.name == to, "{} saw {line}", client.name);
            }
        }
        // A connected client saw every line of each room from each of its joins
        // to its leaving (its own departure line included).
        for client in world.clients.iter().filter(|c| c.connected && world.nodes[c.node].alive) {
            for room in ROOMS {
                let Some(all) = meaning.get(room) else { continue };
                let (joined, left) = (format!("{} joined #{room}", client.name), format!("{} left #{room}", client.name));
                let mut inside = false;
                let mut expected = Vec::new();
                for line in all {
                    inside |= *line == joined;
                    if inside {
                        expected.push(line);
                    }
                    inside &= *line != left;
                }
                let mine: Vec<&String> = client.lines.iter().filter(|l| all.contains(l)).collect();
                prop_assert_eq!(mine, expected, "{} in #{}", &client.name, room);
            }
        }
        // One view of who is online.
        let mut expected: Vec<&str> = world
            .clients
            .iter()
            .filter(|c| c.connected && world.nodes[c.node].alive)
            .map(|c| c.name.as_str())
            .collect();
        expected.sort_unstable();
        for n in (0..NODES).filter(|&n| world.nodes[n].alive) {
            prop_assert_eq!(world.nodes[n].chat.users(), expected.clone(), "node {} lists", n);
        }
    }
}

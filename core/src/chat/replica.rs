//! The chat as a log: every line that more than one member sees is an [`Entry`]
//! appended to the log of its room, and every node holds a [`Replica`] that
//! applies each room's log in order and delivers its lines to the members whose
//! connections it holds.
//!
//! Why a log: once the chat runs on several nodes, "everyone sees one order"
//! and "exactly once" can only come from one place that orders the lines, and a
//! node must not shortcut that order for its own clients. So no operation
//! delivers a shared line directly: the sender's node proposes an entry
//! ([`Output::Append`]); whatever orders entries (a Redis stream per room for a
//! cluster, or the replica itself when alone) gives it an [`Offset`]; every node
//! then applies it with [`Replica::apply`]. Application is deterministic: nodes
//! that apply the same entries in the same order show their members the same
//! lines. Answers meant for the sender alone (`/help`, `/users`, mistakes) are
//! pushed at once, as they are nobody else's business.
//!
//! A replica made with [`Replica::alone`] is its own log: what it would append
//! it applies within the same call, so one node behaves exactly as the chat did
//! before it had a log, with no store and no waiting.
//!
//! What a node decides alone (proposals) uses what it knows of its own members,
//! including entries it proposed that have not come back yet (so `/join r`
//! followed at once by `/say r hi` works); what every node must agree on
//! (presence, who gets which line) is decided when entries are applied.
//!
//! Duplicates: a driver may append an entry twice when a store's connection
//! breaks after the entry was written but before it was acknowledged. Each entry
//! carries its origin node's sequence number, and an entry at or below the last
//! one applied from that node in that room is skipped, on every node alike.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use unicode_normalization::UnicodeNormalization;

use super::history::{DEFAULT_HISTORY, History};
use super::room::{self, CHAT, Refusal};
use super::v1::{self, Resume};
use super::{ConnId, Hub};
use crate::Message;

/// A member of the chat anywhere in a cluster: the node that holds its
/// connection, and the connection's id on that node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId {
    /// The node's id (unique per process lifetime).
    pub node: String,
    /// The connection's id on that node.
    pub conn: u64,
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.node, self.conn)
    }
}

/// What happened, as one entry of a room's log. Every record carries the
/// member's name, so that a node applying it needs nothing from another log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The member joined the chat (main log). A `reassert`ed join repeats one
    /// that a store lost (a Redis restart): it adds the member where it is
    /// missing and shows no line.
    Joined {
        /// The member's name.
        name: String,
        /// The member's age, if given.
        age: Option<u8>,
        /// Whether this repeats an earlier join.
        reassert: bool,
    },
    /// The member left the chat (main log).
    Left {
        /// The member's name.
        name: String,
    },
    /// A line in the main chat or in a room.
    Said {
        /// The member's name.
        name: String,
        /// The text.
        text: String,
    },
    /// A direct message (main log), for `to` and the sender only.
    Direct {
        /// The sender's name.
        name: String,
        /// The recipient's name (NFC).
        to: String,
        /// The text.
        text: String,
    },
    /// The member joined the room whose log this is.
    RoomJoined {
        /// The member's name.
        name: String,
    },
    /// The member left the room whose log this is.
    RoomLeft {
        /// The member's name.
        name: String,
    },
}

/// One entry of a room's log: a record, who it is about, and its origin's
/// sequence number (which makes an entry appended twice count once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The member the record is about.
    pub member: MemberId,
    /// Increasing per origin node; 0 for entries that need no deduplication
    /// (those a store writes itself, such as the departures of a dead node).
    pub seq: u64,
    /// What happened.
    pub record: Record,
}

/// A malformed entry read from a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryError(pub String);

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed chat log entry: {}", self.0)
    }
}

impl std::error::Error for EntryError {}

impl Entry {
    /// The entry as field-value pairs (a Redis stream entry's shape): `k` (the
    /// kind), `node`, `conn`, `seq`, `name`, and `age`, `to`, `text`, `re` where
    /// they apply.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("node", self.member.node.clone()),
            ("conn", self.member.conn.to_string()),
            ("seq", self.seq.to_string()),
        ];
        let (kind, name) = match &self.record {
            Record::Joined { name, age, reassert } => {
                if let Some(age) = age {
                    fields.push(("age", age.to_string()));
                }
                if *reassert {
                    fields.push(("re", "1".into()));
                }
                ("joined", name)
            }
            Record::Left { name } => ("left", name),
            Record::Said { name, text } => {
                fields.push(("text", text.clone()));
                ("said", name)
            }
            Record::Direct { name, to, text } => {
                fields.push(("to", to.clone()));
                fields.push(("text", text.clone()));
                ("direct", name)
            }
            Record::RoomJoined { name } => ("room-joined", name),
            Record::RoomLeft { name } => ("room-left", name),
        };
        fields.push(("k", kind.into()));
        fields.push(("name", name.clone()));
        fields
    }

    /// Reads an entry from field-value pairs, as [`fields`](Self::fields) wrote
    /// them (in any order; unknown fields are ignored, so that a newer node's
    /// additions do not break an older one).
    pub fn from_fields<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Result<Self, EntryError> {
        let mut map: HashMap<&str, String> = HashMap::new();
        for (key, value) in pairs {
            let value = std::str::from_utf8(value).map_err(|_| EntryError(format!("{key} is not UTF-8")))?;
            map.insert(key, value.to_owned());
        }
        let mut take = |key: &str| map.remove(key).ok_or_else(|| EntryError(format!("no {key}")));
        let number = |key: &str, text: String| text.parse::<u64>().map_err(|_| EntryError(format!("bad {key}")));
        let node = take("node")?;
        let conn = number("conn", take("conn")?)?;
        let seq = number("seq", take("seq")?)?;
        let kind = take("k")?;
        let name = take("name")?;
        let record = match kind.as_str() {
            "joined" => {
                let age = match take("age") {
                    Ok(age) => Some(age.parse::<u8>().map_err(|_| EntryError("bad age".into()))?),
                    Err(_) => None,
                };
                Record::Joined { name, age, reassert: take("re").is_ok() }
            }
            "left" => Record::Left { name },
            "said" => Record::Said { name, text: take("text")? },
            "direct" => Record::Direct { name, to: take("to")?, text: take("text")? },
            "room-joined" => Record::RoomJoined { name },
            "room-left" => Record::RoomLeft { name },
            other => return Err(EntryError(format!("unknown kind {other:?}"))),
        };
        Ok(Self { member: MemberId { node, conn }, seq, record })
    }
}

/// A position in a room's log: increasing, in the order entries were appended
/// (a Redis stream id's two numbers; a lone replica counts `(0, n)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub u64, pub u64);

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

impl std::str::FromStr for Offset {
    type Err = EntryError;

    fn from_str(text: &str) -> Result<Self, EntryError> {
        let bad = || EntryError(format!("bad offset {text:?}"));
        let (a, b) = text.split_once('-').ok_or_else(bad)?;
        Ok(Self(a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?))
    }
}

/// What a replica asks its driver to do, besides the hub's deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Append `entry` to the log of `room` (the main chat is [`CHAT`]), then
    /// apply it where it lands, like every other entry. Entries must be appended
    /// in the order they are output.
    Append {
        /// The room.
        room: String,
        /// The entry.
        entry: Entry,
    },
    /// Start reading the log of `room`, from the next entry this node appends
    /// to it on: one of this node's members is joining it.
    Follow {
        /// The room.
        room: String,
    },
    /// Stop reading the log of `room`: none of this node's members is in it.
    Unfollow {
        /// The room.
        room: String,
    },
    /// The node `node` has been gone for [`Replica::DEAD_AFTER`]: append a
    /// departure for each of these members of it, unless another node already
    /// did (the driver makes that atomic; applying a departure twice shows
    /// nothing the second time anyway).
    Reap {
        /// The gone node.
        node: String,
        /// Its members as this replica knows them, with their names.
        members: Vec<(MemberId, String)>,
    },
}

/// A member as every node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Present {
    name: String,
    age: Option<u8>,
}

/// A member whose connection this node holds.
#[derive(Debug)]
struct Local {
    /// Its name (NFC) and age, kept here: the hub forgets them when the
    /// connection is disconnected, and its departure must still name it.
    name: String,
    age: Option<u8>,
    /// Whether its join was proposed (it is in the chat, or about to be).
    joined: bool,
    /// What it asked for, if it speaks `chinwag.v1`.
    v1: Option<Resume>,
    /// Rooms it is joining with the last offset it saw there (a v1 client
    /// joining its rooms again after a reconnect): their missed lines come first.
    rejoining: HashMap<String, Offset>,
    /// The rooms it is in, counting joins and leaves it proposed that have not
    /// been applied yet.
    rooms: BTreeSet<String>,
}

/// Whether the replica is its own log or one of a cluster's.
#[derive(Debug)]
enum Mode {
    Alone { next: HashMap<String, u64> },
    Cluster,
}

/// One node's copy of the chat: who is in it anywhere, this node's members and
/// their rooms; the log's entries in, the hub's deliveries and [`Output`]s out.
/// Lines follow the chat guide (see [`room`]).
#[derive(Debug)]
pub struct Replica {
    node: String,
    mode: Mode,
    available: bool,
    seq: u64,
    present: BTreeMap<MemberId, Present>,
    names: HashMap<String, MemberId>,
    local: HashMap<ConnId, Local>,
    /// Per room, how many of this node's members are in it (proposed view).
    following: HashMap<String, usize>,
    /// The rooms whose logs this node reads (asked with [`Output::Follow`]).
    reading: BTreeSet<String>,
    /// Per room, the sequence number of this node's last entry there that it
    /// has not applied yet: a room is read until this node has shown its
    /// members what they did in it.
    unapplied: HashMap<String, u64>,
    /// Per room, then per origin node, the last sequence number applied (two
    /// levels, so that applying an entry looks both up without allocating).
    applied: HashMap<String, HashMap<String, u64>>,
    /// Nodes with members here that were last seen missing from the store,
    /// and since when.
    missing: HashMap<String, Instant>,
    out: VecDeque<Output>,
    /// The name of the logs (see [`v1`]): offsets of another epoch mean nothing.
    epoch: String,
    /// The last lines of each room shown here.
    history: History,
}

/// The hub group of a room's members that speak `chinwag.v1` (the plain group
/// is the room's name): each class gets its line encoded once.
fn v1_group(room: &str) -> String {
    format!("\u{0}v1\u{0}{room}")
}

/// The line a member gets when its text cannot be ordered.
pub const UNAVAILABLE: &str = "error: the chat is unavailable right now (its store cannot be reached); your message was not sent, try again later";

impl Replica {
    /// How long a node must stay missing from the store (continuously, as seen
    /// by [`nodes_alive`](Self::nodes_alive)) before its members are reaped. It
    /// covers a store that restarted empty: live nodes register again within
    /// their heartbeat, well within this.
    pub const DEAD_AFTER: Duration = Duration::from_secs(5);

    /// A replica that is its own log: one node, nothing shared.
    pub fn alone() -> Self {
        Self::new(String::new(), Mode::Alone { next: HashMap::new() })
    }

    /// A replica of a cluster's chat on node `node`: entries go out as
    /// [`Output::Append`] and come back through [`apply`](Self::apply).
    pub fn clustered(node: impl Into<String>) -> Self {
        Self::new(node.into(), Mode::Cluster)
    }

    fn new(node: String, mode: Mode) -> Self {
        Self {
            node,
            mode,
            available: true,
            seq: 0,
            present: BTreeMap::new(),
            names: HashMap::new(),
            local: HashMap::new(),
            following: HashMap::new(),
            reading: BTreeSet::new(),
            unapplied: HashMap::new(),
            applied: HashMap::new(),
            missing: HashMap::new(),
            out: VecDeque::new(),
            epoch: String::new(),
            history: History::new(DEFAULT_HISTORY),
        }
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Names the logs' epoch (see [`v1`]): a lone node's is new at each start, a
    /// cluster's is kept in its store. Another epoch than before forgets the
    /// history: its offsets belong to logs that are gone.
    pub fn set_epoch(&mut self, epoch: impl Into<String>) {
        let epoch = epoch.into();
        if epoch != self.epoch {
            self.history.clear();
            self.epoch = epoch;
        }
    }

    /// The logs' epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// How many lines of each room are kept for history and recovery (default
    /// [`DEFAULT_HISTORY`]).
    pub fn set_history_len(&mut self, len: usize) {
        self.history.set_len(len);
    }

    /// Lines kept per room.
    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    /// Keeps in the history an entry applied before this node read the log (read
    /// from its store on joining the cluster, or on starting to read a room):
    /// its line, without showing it to anyone or changing who is in the chat.
    pub fn preload(&mut self, room: &str, offset: Offset, entry: &Entry) {
        let line = match &entry.record {
            Record::Joined { reassert: true, .. } | Record::Direct { .. } => return,
            Record::Joined { name, age: Some(age), .. } => format!("{name} with age {age} connected to chat"),
            Record::Joined { name, age: None, .. } => format!("{name} connected to chat"),
            Record::Left { name } => format!("{name} left the chat"),
            Record::Said { name, text } if room == CHAT => format!("{name}: {text}"),
            Record::Said { name, text } => format!("#{room} {name}: {text}"),
            Record::RoomJoined { name } => format!("{name} joined #{room}"),
            Record::RoomLeft { name } => format!("{name} left #{room}"),
        };
        self.history.record(room, offset, &line);
    }

    /// Says that the lines of `room` up to `offset` are not in the history (a
    /// node that preloaded only the end of a longer log).
    pub fn set_history_floor(&mut self, room: &str, offset: Offset) {
        self.history.set_floor(room, offset);
    }

    /// Makes `conn`, admitted, a `chinwag.v1` client: JSON messages, and the
    /// history or recovery it asked for when it joins (history capped at the
    /// history length).
    pub fn use_v1(&mut self, conn: ConnId, mut resume: Resume) {
        resume.history = resume.history.min(self.history.len());
        if let Some(local) = self.local.get_mut(&conn) {
            local.v1 = Some(resume);
        }
    }

    /// Sends `text`, an answer for `conn` alone, in its protocol.
    fn tell(&self, hub: &mut Hub, conn: ConnId, text: &str) {
        let message = match self.local.get(&conn).and_then(|l| l.v1.as_ref()) {
            Some(_) => v1::reply(text),
            None => text.to_owned(),
        };
        let _ = hub.push(conn, &Message::text(message));
    }

    fn speaks_v1(&self, conn: ConnId) -> bool {
        self.local.get(&conn).is_some_and(|l| l.v1.is_some())
    }

    /// The member id of this node's connection `conn`.
    pub fn member(&self, conn: ConnId) -> MemberId {
        MemberId { node: self.node.clone(), conn: conn.0 }
    }

    /// Says whether entries can be appended now. While they cannot, a member's
    /// line is refused with [`UNAVAILABLE`] (never delivered to some and not
    /// others); departures are still output, for the driver to append later.
    pub fn set_available(&mut self, available: bool) {
        self.available = available;
    }

    /// Whether entries can be appended now.
    pub fn is_available(&self) -> bool {
        self.available
    }

    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Everyone in the chat, on every node, by name.
    pub fn users(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.present.values().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        names
    }

    /// The member in the chat under `name` (NFC), on any node.
    pub fn named(&self, name: &str) -> Option<&MemberId> {
        self.names.get(name)
    }

    /// Members of the chat on other nodes, as a node that starts (or whose store
    /// lost its data) learns them from the store's snapshot: added without a
    /// line. This node's own members are not touched.
    pub fn load_presence(&mut self, members: impl IntoIterator<Item = (MemberId, String, Option<u8>)>) {
        for (member, name, age) in members {
            if member.node != self.node {
                self.names.insert(name.clone(), member.clone());
                self.present.insert(member, Present { name, age });
            }
        }
    }

    // ----- this node's members ----------------------------------------------------

    /// What [`admit`](Self::admit) would decide: the name as it would be stored and
    /// the age, or why not (see [`room::check`]). A name held on this node is
    /// taken (409). A cluster reserves names in its store before this, for every
    /// node: that is the last word, as this replica's view of other nodes may lag
    /// behind (a name freed there a moment ago is free).
    pub fn check(&self, hub: &Hub, name: &str, age: Option<&str>) -> Result<(String, Option<u8>), Refusal> {
        room::check(hub, name, age)
    }

    /// Checks a newcomer and reserves its name on this node for `conn`, already
    /// open in the hub (the rules of [`room::check`]). Returns the name as stored.
    pub fn admit(&mut self, hub: &mut Hub, conn: ConnId, name: &str, age: Option<&str>) -> Result<String, Refusal> {
        let (name, age) = self.check(hub, name, age)?;
        room::reserve(hub, conn, &name, age)?;
        self.local.insert(
            conn,
            Local {
                name: name.clone(),
                age,
                joined: false,
                v1: None,
                rejoining: HashMap::new(),
                rooms: BTreeSet::new(),
            },
        );
        Ok(name)
    }

    /// A newcomer's connection is open: greets it at once, and proposes its
    /// join. It joins the main chat (and sees its lines) when the join is applied,
    /// so its screen starts with the greeting and then its own join line. Returns
    /// the lines applied (for the log).
    pub fn open(&mut self, hub: &mut Hub, conn: ConnId) -> Vec<String> {
        if !hub.is_open(conn) {
            return vec![];
        }
        let Some(local) = self.local.get_mut(&conn) else { return vec![] };
        local.joined = true;
        let (name, age) = (local.name.clone(), local.age);
        let greeting = format!("Hi {name}! You have successfully connected to the chat");
        let greeting = if local.v1.is_some() { v1::welcome(&name, &greeting, &self.epoch) } else { greeting };
        let _ = hub.push(conn, &Message::text(greeting));
        let member = self.member(conn);
        // Appended even if the store went away since the admission: the driver
        // keeps it for later, as a member greeted must join.
        let seq = self.next_seq();
        self.append(hub, CHAT, Entry { member, seq, record: Record::Joined { name, age, reassert: false } })
    }

    /// A member's connection closed: it leaves the hub (and every room on this
    /// node) at once, and its departure is proposed. Returns the lines applied.
    pub fn close(&mut self, hub: &mut Hub, conn: ConnId) -> Vec<String> {
        hub.close(conn);
        let Some(local) = self.local.remove(&conn) else { return vec![] };
        for room in &local.rooms {
            self.leave_room(room);
            self.unfollow_if_done(room);
        }
        if !local.joined {
            return vec![];
        }
        let name = local.name;
        let member = self.member(conn);
        // Proposed even while the store is away: the driver keeps it for later,
        // as a departure must not be lost.
        let seq = self.next_seq();
        self.append(hub, CHAT, Entry { member, seq, record: Record::Left { name } })
    }

    /// Text from a member: a line for everyone, or a command. Returns the lines
    /// applied (for the log); answers meant for the sender alone are not
    /// returned.
    pub fn text(&mut self, hub: &mut Hub, conn: ConnId, text: &str) -> Vec<String> {
        let Some(name) = self.local.get(&conn).filter(|l| l.joined && hub.is_open(conn)).map(|l| l.name.clone()) else {
            return vec![];
        };
        let text = match text.strip_prefix('/') {
            Some(rest) if rest.starts_with('/') => rest,
            Some(command) => return self.command(hub, conn, &name, command),
            None => text,
        };
        let member = self.member(conn);
        self.propose(hub, CHAT, member, Record::Said { name, text: text.to_owned() })
    }

    fn command(&mut self, hub: &mut Hub, conn: ConnId, name: &str, command: &str) -> Vec<String> {
        let (verb, args) = command.split_once(char::is_whitespace).unwrap_or((command, ""));
        let args = args.trim_start();
        let v1 = self.speaks_v1(conn);
        let reply = |hub: &mut Hub, text: String| {
            let _ = hub.push(conn, &Message::text(if v1 { v1::reply(&text) } else { text }));
            vec![]
        };
        match verb {
            "help" => reply(hub, room::HELP.to_owned()),
            "users" => {
                let names = self.users();
                let list = format!("online ({}): {}", names.len(), names.join(", "));
                reply(hub, list)
            }
            "msg" => {
                let Some((to, text)) = room::split_name(args).filter(|(_, text)| !text.is_empty()) else {
                    return reply(hub, "error: usage: /msg NAME TEXT".to_owned());
                };
                // Names are stored in NFC (see `room::check`): a name typed with
                // combining accents must find the same member, and be shown as
                // stored.
                let to: String = to.nfc().collect();
                if !self.names.contains_key(&to) {
                    return reply(hub, room::no_one_named(&to));
                }
                let member = self.member(conn);
                self.propose(hub, CHAT, member, Record::Direct { name: name.to_owned(), to, text: text.to_owned() })
            }
            "join" | "leave" | "say" => {
                let (room, text) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
                let room = room.strip_prefix('#').unwrap_or(room);
                let text = text.trim_start();
                if room.is_empty() || (verb == "say" && text.is_empty()) {
                    let usage = if verb == "say" {
                        "error: usage: /say ROOM TEXT"
                    } else {
                        &format!("error: usage: /{verb} ROOM")
                    };
                    return reply(hub, usage.to_owned());
                }
                if room.chars().count() > room::MAX_ROOM_CHARS || room.chars().any(char::is_control) {
                    return reply(
                        hub,
                        format!("error: a room name is 1 to {} characters without spaces", room::MAX_ROOM_CHARS),
                    );
                }
                // Rooms, like names, are one room whatever normal form a client
                // types: kept in NFC.
                let room: String = room.nfc().collect();
                self.room_command(hub, conn, name, verb, room, text)
            }
            "rooms" => {
                let rooms: Vec<String> = self.local[&conn].rooms.iter().map(|r| format!("#{r}")).collect();
                let list = if rooms.is_empty() {
                    "you are in no rooms".to_owned()
                } else {
                    format!("your rooms: {}", rooms.join(", "))
                };
                reply(hub, list)
            }
            _ => reply(hub, format!("error: unknown command /{verb} (try /help)")),
        }
    }

    fn room_command(
        &mut self,
        hub: &mut Hub,
        conn: ConnId,
        name: &str,
        verb: &str,
        room: String,
        text: &str,
    ) -> Vec<String> {
        let member = self.local[&conn].rooms.contains(&room);
        let record = match (verb, member) {
            ("join", true) => {
                self.tell(hub, conn, &format!("you are already in #{room}"));
                return vec![];
            }
            ("join", false) => Record::RoomJoined { name: name.to_owned() },
            ("say", true) => Record::Said { name: name.to_owned(), text: text.to_owned() },
            ("leave", true) => Record::RoomLeft { name: name.to_owned() },
            _ => {
                self.tell(hub, conn, &format!("error: you are not in #{room} (try /join {room})"));
                return vec![];
            }
        };
        if !self.available {
            self.tell(hub, conn, UNAVAILABLE);
            return vec![];
        }
        let local = self.local.get_mut(&conn).expect("a local member");
        // `/join ROOM OFFSET` from a v1 client: the lines of ROOM after OFFSET
        // come before its join line (plain clients' extra words are ignored, as
        // they always were).
        if verb == "join" && local.v1.is_some() {
            let mut words = text.split_whitespace();
            if let Some(Ok(since)) = words.next().map(str::parse::<Offset>) {
                // An offset of another epoch (given after it) is from logs that
                // are gone: nothing after it can be recovered.
                let same_epoch = words.next().is_none_or(|epoch| epoch == self.epoch);
                local.rejoining.insert(room.clone(), if same_epoch { since } else { Offset(u64::MAX, u64::MAX) });
            }
        }
        let rooms = &mut local.rooms;
        match verb {
            "join" => {
                rooms.insert(room.clone());
                *self.following.entry(room.clone()).or_insert(0) += 1;
                if matches!(self.mode, Mode::Cluster) && self.reading.insert(room.clone()) {
                    self.out.push_back(Output::Follow { room: room.clone() });
                }
            }
            "leave" => {
                rooms.remove(&room);
            }
            _ => {}
        }
        if verb == "leave" {
            // The room is still read until this node has shown the member its
            // own departure (see `unfollow_if_done`).
            self.leave_room(&room);
        }
        let member = self.member(conn);
        let seq = self.next_seq();
        self.append(hub, &room, Entry { member, seq, record })
    }

    /// One fewer member of this node in `room` (proposed view).
    fn leave_room(&mut self, room: &str) {
        if let Some(count) = self.following.get_mut(room) {
            *count -= 1;
            if *count == 0 {
                self.following.remove(room);
            }
        }
    }

    /// Stops reading `room` once none of this node's members is in it or
    /// joining it, and every entry this node appended there has been applied
    /// (its members saw what they did).
    fn unfollow_if_done(&mut self, room: &str) {
        if !self.following.contains_key(room) && !self.unapplied.contains_key(room) && self.reading.remove(room) {
            // Lines are no longer read here: a history kept would have a gap.
            self.history.forget(room);
            self.out.push_back(Output::Unfollow { room: room.to_owned() });
        }
    }

    /// Proposes a line: refused with [`UNAVAILABLE`] while entries cannot be
    /// appended.
    fn propose(&mut self, hub: &mut Hub, room: &str, member: MemberId, record: Record) -> Vec<String> {
        if !self.available {
            self.tell(hub, ConnId(member.conn), UNAVAILABLE);
            return vec![];
        }
        let seq = self.next_seq();
        self.append(hub, room, Entry { member, seq, record })
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Appends: applied at once when alone, output for the driver in a cluster.
    fn append(&mut self, hub: &mut Hub, room: &str, entry: Entry) -> Vec<String> {
        match &mut self.mode {
            Mode::Alone { next } => {
                let n = match next.get_mut(room) {
                    Some(n) => {
                        *n += 1;
                        *n
                    }
                    None => {
                        next.insert(room.to_owned(), 1);
                        1
                    }
                };
                let offset = Offset(0, n);
                self.apply(hub, room, offset, entry)
            }
            Mode::Cluster => {
                if room != CHAT {
                    self.unapplied.insert(room.to_owned(), entry.seq);
                }
                self.out.push_back(Output::Append { room: room.to_owned(), entry });
                vec![]
            }
        }
    }

    /// After the store lost its data (a restart without persistence): proposes
    /// again the join of every member of this node, as a reasserted join that
    /// shows no line, so that nodes that start later learn of them.
    pub fn reassert(&mut self) {
        let mut joined: Vec<(ConnId, String, Option<u8>)> =
            self.local.iter().filter(|(_, l)| l.joined).map(|(c, l)| (*c, l.name.clone(), l.age)).collect();
        joined.sort_unstable();
        for (conn, name, age) in joined {
            let member = self.member(conn);
            let seq = self.next_seq();
            let record = Record::Joined { name, age, reassert: true };
            self.out.push_back(Output::Append { room: CHAT.to_owned(), entry: Entry { member, seq, record } });
        }
    }

    // ----- the log ----------------------------------------------------------------

    /// Applies the entry at `offset` in the log of `room`: presence changes, and
    /// each line goes to this node's members who should see it. Entries of one
    /// room must be applied in offset order. Returns the lines shown (for the
    /// log).
    pub fn apply(&mut self, hub: &mut Hub, room: &str, offset: Offset, entry: Entry) -> Vec<String> {
        let Entry { member, seq, record } = entry;
        if seq != 0 {
            // Keys are allocated only the first time a room or node is seen.
            if !self.applied.contains_key(room) {
                self.applied.insert(room.to_owned(), HashMap::new());
            }
            let by_node = self.applied.get_mut(room).expect("inserted above");
            match by_node.get_mut(member.node.as_str()) {
                Some(last) if seq <= *last => return vec![],
                Some(last) => *last = seq,
                None => {
                    by_node.insert(member.node.clone(), seq);
                }
            }
        }
        if member.node == self.node && self.unapplied.get(room) == Some(&seq) {
            self.unapplied.remove(room);
            let lines = self.apply_record(hub, room, offset, member, record);
            self.unfollow_if_done(room);
            return lines;
        }
        self.apply_record(hub, room, offset, member, record)
    }

    /// Shows a line of `room` at `offset` to this node's members in it (each
    /// protocol's encoding made once) and keeps it in the history.
    fn show(&mut self, hub: &mut Hub, room: &str, offset: Offset, line: &str) {
        // A room with no member here has no group: nobody here to show it to.
        let _ = hub.push_to_group(room, &Message::text(line));
        let group = v1_group(room);
        if hub.group_members(&group).next().is_some() {
            let _ = hub.push_to_group(&group, &Message::text(v1::line(room, offset, &self.epoch, line)));
        }
        self.history.record(room, offset, line);
    }

    /// Tells this node's v1 members of `room` that `name` joined or left it.
    fn presence(&self, hub: &mut Hub, room: &str, joined: bool, name: &str) {
        let group = v1_group(room);
        if hub.group_members(&group).next().is_some() {
            let _ = hub.push_to_group(&group, &Message::text(v1::presence(room, joined, name)));
        }
    }

    /// Adds this node's `conn` to `room`'s group for its protocol.
    fn enter(&self, hub: &mut Hub, conn: ConnId, room: &str) {
        let group = if self.speaks_v1(conn) { v1_group(room) } else { room.to_owned() };
        let _ = hub.add_to_group(conn, &group);
    }

    /// A v1 member joining `room` again with the last offset it saw there: the
    /// lines it missed, or how many at least were lost.
    fn catch_up_room(&mut self, hub: &mut Hub, conn: ConnId, room: &str) {
        let Some(since) = self.local.get_mut(&conn).and_then(|l| l.rejoining.remove(room)) else { return };
        let send = |hub: &mut Hub, text: String| {
            let _ = hub.push(conn, &Message::text(text));
        };
        let outcome = if since == Offset(u64::MAX, u64::MAX) { Err(1) } else { self.history.since(room, since) };
        match outcome {
            Ok(lines) => {
                for (offset, line) in &lines {
                    send(hub, v1::line(room, *offset, &self.epoch, line));
                }
                send(hub, v1::recovered(room, Ok(lines.len())));
            }
            Err(lost) => send(hub, v1::recovered(room, Err(lost))),
        }
    }

    /// A v1 member joining the main chat: the lines it missed since the offset
    /// it gave (and whether they could all be recovered), or the recent history
    /// it asked for; sent before its own join line, so it sees one sequence.
    fn catch_up(&self, hub: &mut Hub, conn: ConnId) {
        let Some(resume) = self.local.get(&conn).and_then(|l| l.v1.as_ref()) else { return };
        let send = |hub: &mut Hub, text: String| {
            let _ = hub.push(conn, &Message::text(text));
        };
        let mut history = resume.history;
        if let Some((since, epoch)) = &resume.since {
            let outcome = if *epoch == self.epoch { self.history.since(CHAT, *since) } else { Err(1) };
            match outcome {
                Ok(lines) => {
                    for (offset, line) in &lines {
                        send(hub, v1::line(CHAT, *offset, &self.epoch, line));
                    }
                    send(hub, v1::recovered(CHAT, Ok(lines.len())));
                    return;
                }
                Err(lost) => {
                    send(hub, v1::recovered(CHAT, Err(lost)));
                    // What is still held gives the client its bearings again.
                    history = history.max(self.history.len());
                }
            }
        }
        for (offset, line) in self.history.last(CHAT, history) {
            send(hub, v1::line(CHAT, *offset, &self.epoch, line));
        }
    }

    fn apply_record(
        &mut self,
        hub: &mut Hub,
        room: &str,
        offset: Offset,
        member: MemberId,
        record: Record,
    ) -> Vec<String> {
        let local = (member.node == self.node).then_some(ConnId(member.conn)).filter(|c| hub.is_open(*c));
        let line = match record {
            Record::Joined { name, age, reassert } => {
                if self.present.contains_key(&member) {
                    return vec![];
                }
                self.names.insert(name.clone(), member.clone());
                self.present.insert(member, Present { name: name.clone(), age });
                if let Some(conn) = local {
                    self.catch_up(hub, conn);
                    self.enter(hub, conn, CHAT);
                }
                if reassert {
                    return vec![];
                }
                let line = match age {
                    Some(age) => format!("{name} with age {age} connected to chat"),
                    None => format!("{name} connected to chat"),
                };
                self.show(hub, room, offset, &line);
                self.presence(hub, CHAT, true, &name);
                if let Some(conn) = local.filter(|c| self.speaks_v1(*c)) {
                    let members = v1::members(CHAT, self.users().into_iter());
                    let _ = hub.push(conn, &Message::text(members));
                }
                return vec![line];
            }
            Record::Left { name } => {
                if self.present.remove(&member).is_none() {
                    return vec![];
                }
                if self.names.get(&name) == Some(&member) {
                    self.names.remove(&name);
                }
                let line = format!("{name} left the chat");
                self.show(hub, room, offset, &line);
                self.presence(hub, CHAT, false, &name);
                return vec![line];
            }
            Record::Said { name, text } if room == CHAT => {
                if !self.present.contains_key(&member) {
                    return vec![];
                }
                format!("{name}: {text}")
            }
            Record::Said { name, text } => format!("#{room} {name}: {text}"),
            Record::Direct { name, to, text } => return self.apply_direct(hub, local, &name, &to, &text),
            Record::RoomJoined { name } => {
                if let Some(conn) = local {
                    self.catch_up_room(hub, conn, room);
                    self.enter(hub, conn, room);
                }
                let line = format!("{name} joined #{room}");
                self.show(hub, room, offset, &line);
                self.presence(hub, room, true, &name);
                return vec![line];
            }
            Record::RoomLeft { name } => {
                let line = format!("{name} left #{room}");
                self.show(hub, room, offset, &line);
                self.presence(hub, room, false, &name);
                if let Some(conn) = local {
                    let _ = hub.remove_from_group(conn, room);
                    let _ = hub.remove_from_group(conn, &v1_group(room));
                }
                return vec![line];
            }
        };
        self.show(hub, room, offset, &line);
        vec![line]
    }

    fn apply_direct(&mut self, hub: &mut Hub, sender: Option<ConnId>, name: &str, to: &str, text: &str) -> Vec<String> {
        let Some(recipient) = self.names.get(to) else {
            // Gone between the proposal and its turn in the log.
            if let Some(conn) = sender {
                self.tell(hub, conn, &room::no_one_named(to));
            }
            return vec![];
        };
        let line = format!("{name} -> {to}: {text}");
        let recipient = (recipient.node == self.node).then_some(ConnId(recipient.conn)).filter(|c| hub.is_open(*c));
        let sender = sender.filter(|s| Some(*s) != recipient);
        for conn in recipient.into_iter().chain(sender) {
            let message = if self.speaks_v1(conn) { v1::direct(&line) } else { line.clone() };
            let _ = hub.push(conn, &Message::text(message));
        }
        vec![line]
    }

    // ----- other nodes --------------------------------------------------------------

    /// The nodes registered in the store at `now` (alive). A node with members
    /// here that stays missing for [`DEAD_AFTER`](Self::DEAD_AFTER) is output as
    /// [`Output::Reap`], again at each call until its departures are applied.
    pub fn nodes_alive(&mut self, now: Instant, alive: &BTreeSet<String>) {
        let mut with_members: BTreeMap<&str, Vec<(MemberId, String)>> = BTreeMap::new();
        for (member, present) in &self.present {
            if member.node != self.node && !alive.contains(&member.node) {
                with_members.entry(&member.node).or_default().push((member.clone(), present.name.clone()));
            }
        }
        self.missing.retain(|node, _| with_members.contains_key(node.as_str()));
        for (node, members) in with_members {
            let since = *self.missing.entry(node.to_owned()).or_insert(now);
            if now.saturating_duration_since(since) >= Self::DEAD_AFTER {
                self.out.push_back(Output::Reap { node: node.to_owned(), members });
            }
        }
    }

    /// Rooms (besides the main chat) with at least one member of this node in
    /// them, or joining.
    pub fn local_rooms(&self) -> usize {
        self.following.len()
    }

    /// Members of this node: how many are in the chat.
    pub fn local_count(&self) -> usize {
        self.local.values().filter(|l| l.joined).count()
    }

    /// This node's connections that hold a member, for a driver that must close
    /// them all (its node was declared dead by the others).
    pub fn local_members(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.local.keys().copied()
    }
}

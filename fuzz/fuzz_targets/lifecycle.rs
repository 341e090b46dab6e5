//! A client and a server joined in memory, driven through time and the whole
//! application API: an op list decoded from the input advances virtual time (from
//! nothing to far past every timeout) and fires deadlines, sends every kind of
//! message and control frame from either side, closes with any code and reason,
//! hands a peer only part of a side's output, stops and resumes reading, ends and
//! loses transports, and injects garbage and hand-made frames.
//!
//! After every op (see `common/checked.rs` and `common/wire.rs`): no panic; one
//! last event per side (`Closed` or `HandshakeFailed`) and nothing after it; the
//! frames each side writes are well formed, carry only sendable close codes, and
//! nothing follows a side's close frame (no pong either); the close frame reported
//! as sent is the one written; a clean `Closed` reports the code and reason the peer
//! wrote; a side that started closing is finished once its clock is twice the close
//! timeout (the wait, then the linger) past that; a call that returns a
//! `LocalError` changes nothing. At the end both sides are closed and time runs
//! until both must be finished.
//!
//! The input is a script (see `Script`): a flags byte (1: made open, 2: answer
//! requests at once, 4: the client offers subprotocols), five bytes of timers for
//! the client and five for the server (see `Timers::read`), then ops: a byte
//! whose low five bits pick the op, bit 7 the side (0 client, 1 server) and bit 6 a
//! flag, followed by the op's arguments (see `Op::read`).
#![no_main]

use chinwag_core::http::StatusCode;
use chinwag_core::{
    Accept, ClientRequest, CloseCode, CloseFrame, Config, Connection, Event, HttpResponse, Message, Oversized,
    Rejection, Role, SharedFrame, State,
};
use chinwag_fuzz::checked::Checked;
use chinwag_fuzz::wire::WireCheck;
use chinwag_fuzz::{RawFrame, Script, close_code};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Timer settings of one side: small, so that a few ops reach every deadline.
#[derive(Debug)]
struct Timers {
    handshake: Option<Duration>,
    keepalive: Option<Duration>,
    keepalive_timeout: Duration,
    close: Duration,
    skip_oversized: bool,
}

/// 1 ms to about 3 s.
fn ms(n: u8) -> Duration {
    Duration::from_millis(1 + u64::from(n) * 12)
}

impl Timers {
    /// A flags byte (1: a handshake timeout, 2: keepalive, 4: skip oversized
    /// messages), then the handshake timeout, the keepalive interval, the keepalive
    /// timeout and the close timeout, a byte each (see [`ms`]).
    fn read(script: &mut Script<'_>) -> Self {
        let flags = script.u8();
        let (handshake, keepalive, keepalive_timeout, close) = (script.u8(), script.u8(), script.u8(), script.u8());
        Self {
            handshake: (flags & 1 != 0).then(|| ms(handshake)),
            keepalive: (flags & 2 != 0).then(|| ms(keepalive)),
            keepalive_timeout: ms(keepalive_timeout),
            close: ms(close),
            skip_oversized: flags & 4 != 0,
        }
    }

    fn config(&self) -> Config {
        Config {
            max_frame_size: 1024,
            max_message_size: 2048,
            oversized: if self.skip_oversized { Oversized::Skip } else { Oversized::Close },
            max_skipped_size: 8192,
            max_head_size: 1024,
            max_headers: 16,
            handshake_timeout: self.handshake,
            keepalive_interval: self.keepalive,
            keepalive_timeout: self.keepalive_timeout,
            close_timeout: self.close,
            backlog_high_water: 512,
            max_backlog: 1024,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Who {
    Client,
    Server,
}

impl Who {
    fn index(self) -> usize {
        self as usize
    }
}

/// How the server answers a request.
#[derive(Debug)]
enum Answer {
    /// Accept, choosing a subprotocol by index: 0 "chat" and 1 "v2" are offered
    /// when the client offers, 2 never is.
    Accept(Option<u8>),
    Reject(u16, String),
    Respond(u16, Vec<u8>),
}

#[derive(Debug)]
enum Op {
    /// Moves the clock (milliseconds), firing nothing by itself.
    Advance(u16),
    /// Moves the clock by whole seconds: far past every timeout.
    AdvanceFar(u8),
    Timeout(Who),
    Text(Who, String),
    Binary(Who, Vec<u8>),
    /// `send` of a generated message of about this many bytes (a server queues
    /// 4 KiB and more by reference).
    Big(Who, u16, bool),
    Shared(Who, bool, Vec<u8>),
    Ping(Who, Vec<u8>),
    Pong(Who, Vec<u8>),
    /// `close` with a code (`true`: one near the sendable ranges) and a reason.
    Close(Who, u16, bool, String),
    Answer(Answer),
    /// Writes up to this many bytes of a side's output to the wire.
    Transmit(Who, u16),
    TransmitAll(Who),
    /// Feeds up to this many bytes in flight to a side; `true`: even when it does
    /// not want input (only its driver's politeness is skipped).
    Deliver(Who, u16, bool),
    Event(Who),
    Events(Who),
    /// The side's peer shuts its writing half now, abruptly: bytes in flight are
    /// lost, the side reads EOF, and what the peer writes later goes nowhere.
    Eof(Who),
    Lost(Who),
    Reading(Who, bool),
    Garbage(Who, Vec<u8>),
    Frame(Who, RawFrame),
    /// Runs both sides as drivers would until nothing moves.
    Pump,
}

impl Op {
    /// Reads the next op, or `None` at the end of the script.
    fn read(script: &mut Script<'_>) -> Option<Op> {
        if script.is_empty() {
            return None;
        }
        let code = script.u8();
        let who = if code & 0x80 == 0 { Who::Client } else { Who::Server };
        let flag = code & 0x40 != 0;
        Some(match code & 0x1F {
            0 => Op::Advance(script.u16()),
            1 => Op::AdvanceFar(script.u8()),
            2 => Op::Timeout(who),
            3 => Op::Text(who, script.string()),
            4 => Op::Binary(who, script.bytes().to_vec()),
            5 => Op::Big(who, script.u16(), flag),
            6 => Op::Shared(who, flag, script.bytes().to_vec()),
            7 => Op::Ping(who, script.bytes().to_vec()),
            8 => Op::Pong(who, script.bytes().to_vec()),
            9 => Op::Close(who, script.u16(), flag, script.string()),
            10 => Op::Answer(match script.u8() % 3 {
                0 => Answer::accept(script.u8()),
                1 => Answer::Reject(script.u16(), script.string()),
                _ => Answer::Respond(script.u16(), script.bytes().to_vec()),
            }),
            11 => Op::Transmit(who, script.u16()),
            12 => Op::TransmitAll(who),
            13 => Op::Deliver(who, script.u16(), flag),
            14 => Op::Event(who),
            15 => Op::Events(who),
            16 => Op::Eof(who),
            17 => Op::Lost(who),
            18 => Op::Reading(who, flag),
            19 => Op::Garbage(who, script.bytes().to_vec()),
            20 => Op::Frame(who, RawFrame::read(script)),
            _ => Op::Pump,
        })
    }
}

impl Answer {
    /// An accept: 0 chooses no subprotocol, 1 to 3 one by index.
    fn accept(pick: u8) -> Self {
        Answer::Accept((pick % 4).checked_sub(1))
    }
}

/// What the script says before its ops.
struct Input {
    /// Made with `Connection::open` instead of through the handshake.
    open: bool,
    /// Answer requests as soon as they are taken.
    auto_accept: bool,
    /// The client offers subprotocols "chat" and "v2".
    offer: bool,
    client: Timers,
    server: Timers,
}

impl Input {
    fn read(script: &mut Script<'_>) -> Self {
        let flags = script.u8();
        Self {
            open: flags & 1 != 0,
            auto_accept: flags & 2 != 0,
            offer: flags & 4 != 0,
            client: Timers::read(script),
            server: Timers::read(script),
        }
    }
}

/// How many bytes one direction of the wire holds.
const WINDOW: usize = 1500;

/// One direction of the wire: bytes in flight toward a side.
#[derive(Default)]
struct Link {
    bytes: VecDeque<u8>,
    /// The sender closed its transport: EOF after the bytes in flight.
    eof: bool,
    /// Bytes no side wrote were put on it.
    tainted: bool,
}

struct World {
    now: Instant,
    /// Indexed by `Who`: the client, then the server.
    sides: [Checked; 2],
    /// Toward each side.
    links: [Link; 2],
    /// Each side's transport is closed: it neither reads nor writes.
    gone: [bool; 2],
    /// Each side's writing half is shut: what it writes goes nowhere.
    mute: [bool; 2],
    reading: [bool; 2],
    /// The server took a request and has not answered.
    pending: bool,
    auto_accept: bool,
}

impl World {
    fn new(input: &Input) -> Self {
        let now = chinwag_fuzz::t0();
        let mut n = 0x1234_5678u32;
        let masks = Box::new(move || {
            n = n.wrapping_mul(1_103_515_245).wrapping_add(12345);
            n.to_be_bytes()
        });
        let (client, server) = if input.open {
            let client = Connection::open(Role::Client, Some(masks), input.client.config(), now);
            let server = Connection::open(Role::Server, None, input.server.config(), now);
            (
                Checked::new(client, "client", now, true, WireCheck::frames(Role::Client)),
                Checked::new(server, "server", now, true, WireCheck::frames(Role::Server)),
            )
        } else {
            let mut request = ClientRequest::new("ws://fuzz.example/chat?x=1").expect("a valid URL");
            if input.offer {
                request = request.with_subprotocol("chat").and_then(|r| r.with_subprotocol("v2")).expect("tokens");
            }
            let client = Connection::client(&request, [7; 16], masks, input.client.config(), now);
            let server = Connection::server(input.server.config(), now);
            (
                Checked::new(client, "client", now, false, WireCheck::with_head(Role::Client)),
                Checked::new(server, "server", now, false, WireCheck::with_head(Role::Server)),
            )
        };
        Self {
            now,
            sides: [client, server],
            links: Default::default(),
            gone: [false; 2],
            mute: [false; 2],
            reading: [true; 2],
            pending: false,
            auto_accept: input.auto_accept,
        }
    }

    fn side(&mut self, who: Who) -> &mut Checked {
        &mut self.sides[who.index()]
    }

    fn api(
        &mut self,
        who: Who,
        what: &str,
        call: impl FnOnce(&mut Connection, Instant) -> Result<(), chinwag_core::LocalError>,
    ) {
        let now = self.now;
        let _ = self.side(who).api(now, what, call);
    }

    fn answer(&mut self, answer: &Answer) {
        let now = self.now;
        let server = &mut self.sides[1];
        let result = match answer {
            Answer::Accept(pick) => {
                let mut accept = Accept::new();
                if let Some(i) = pick {
                    accept = accept.with_subprotocol(["chat", "v2", "other"][usize::from(*i % 3)]);
                }
                server.api(now, "accept", |c, now| c.accept(now, accept))
            }
            Answer::Reject(status, reason) => {
                let status = StatusCode::from_u16(100 + status % 900).expect("100..=999");
                let rejection = Rejection::new(status, reason.clone());
                server.api(now, "reject", |c, now| c.reject(now, rejection))
            }
            Answer::Respond(status, body) => {
                let status = StatusCode::from_u16(100 + status % 900).expect("100..=999");
                let response = HttpResponse::new(status, "text/plain", body.clone());
                server.api(now, "respond", |c, now| c.respond(now, response))
            }
        };
        if result.is_ok() {
            self.pending = false;
        }
    }

    /// Takes one event from a side, answering a request if told to.
    fn event(&mut self, who: Who) -> bool {
        let now = self.now;
        let Some(event) = self.side(who).poll_event(now) else { return false };
        match event {
            Event::UpgradeRequest(_) => {
                self.pending = true;
                if self.auto_accept {
                    self.answer(&Answer::Accept(None));
                }
            }
            Event::HttpRequest(_) => {
                self.pending = true;
                if self.auto_accept {
                    self.answer(&Answer::Respond(104, b"fuzz".to_vec()));
                }
            }
            _ => {}
        }
        true
    }

    fn transmit(&mut self, who: Who, max: usize) -> bool {
        let i = who.index();
        if self.gone[i] || self.mute[i] {
            return false;
        }
        // The wire holds a bounded number of bytes, as TCP's buffers do: a peer
        // that stops reading makes the writer's backlog grow.
        let room = if self.gone[1 - i] { usize::MAX } else { WINDOW.saturating_sub(self.links[1 - i].bytes.len()) };
        let bytes = self.sides[i].transmit(max.min(room));
        if !self.gone[1 - i] {
            self.links[1 - i].bytes.extend(&bytes);
        }
        !bytes.is_empty()
    }

    fn deliver(&mut self, who: Who, max: usize, force: bool) -> bool {
        let i = who.index();
        let now = self.now;
        if self.gone[i] || !self.reading[i] || !(force || self.sides[i].conn.wants_input()) {
            return false;
        }
        let link = &mut self.links[i];
        if link.bytes.is_empty() {
            if link.eof {
                link.eof = false;
                self.sides[i].receive_eof(now);
                return true;
            }
            return false;
        }
        let n = max.clamp(1, link.bytes.len());
        let bytes: Vec<u8> = link.bytes.drain(..n).collect();
        self.sides[i].receive(now, &bytes);
        true
    }

    /// A driver closes the transport of a finished connection, and shuts the
    /// writing half of a server lingering for its peer's EOF; the peer then reads
    /// EOF after what is in flight.
    fn shut_finished(&mut self) -> bool {
        let mut moved = false;
        for i in 0..2 {
            // A lingering server shuts its writing half: its peer reads EOF after
            // what is in flight, and nothing it writes from now on arrives.
            if !self.gone[i] && !self.mute[i] && self.sides[i].conn.wants_write_shutdown() {
                if !self.gone[1 - i] {
                    self.links[1 - i].eof = true;
                }
                self.mute[i] = true;
                moved = true;
            }
            if !self.gone[i] && self.sides[i].conn.is_finished() {
                self.close_transport(i);
                moved = true;
            }
        }
        moved
    }

    fn close_transport(&mut self, i: usize) {
        let muted = self.mute[i];
        self.gone[i] = true;
        self.links[i] = Link { tainted: self.links[i].tainted, ..Link::default() };
        // A shut writing half already told the peer nothing more comes, and the
        // peer already read that EOF.
        if !self.gone[1 - i] && !muted {
            self.links[1 - i].eof = true;
        }
    }

    /// Both sides run as drivers would: write everything, read what they want,
    /// take every event, close finished transports; until nothing moves.
    fn pump(&mut self) {
        for _ in 0..64 {
            let mut moved = false;
            for who in [Who::Client, Who::Server] {
                moved |= self.transmit(who, usize::MAX);
            }
            for who in [Who::Client, Who::Server] {
                while self.deliver(who, usize::MAX, false) {
                    moved = true;
                    while self.event(who) {}
                }
                while self.event(who) {
                    moved = true;
                }
            }
            moved |= self.shut_finished();
            self.check();
            if !moved {
                return;
            }
        }
    }

    fn step(&mut self, op: &Op) {
        let now = self.now;
        match op {
            Op::Advance(n) => self.now += Duration::from_millis(u64::from(*n)),
            Op::AdvanceFar(s) => self.now += Duration::from_secs(u64::from(*s)),
            Op::Timeout(who) => self.side(*who).tick(now),
            Op::Text(who, text) => self.api(*who, "send_text", |c, now| c.send_text(now, text)),
            Op::Binary(who, data) => self.api(*who, "send_binary", |c, now| c.send_binary(now, data)),
            Op::Big(who, len, text) => {
                let len = usize::from(*len) % 9000;
                let message = if *text { Message::text("é".repeat(len / 2)) } else { Message::binary(vec![7u8; len]) };
                self.api(*who, "send", |c, now| c.send(now, &message));
            }
            Op::Shared(who, text, data) => {
                let frame =
                    if *text { SharedFrame::text(&String::from_utf8_lossy(data)) } else { SharedFrame::binary(data) };
                self.api(*who, "send_shared", |c, now| c.send_shared(now, &frame));
            }
            Op::Ping(who, data) => self.api(*who, "ping", |c, now| c.ping(now, data)),
            Op::Pong(who, data) => self.api(*who, "pong", |c, now| c.pong(now, data)),
            Op::Close(who, code, near, reason) => {
                let code = close_code(*code, *near);
                self.api(*who, "close", |c, now| c.close(now, code, reason));
            }
            Op::Answer(answer) => self.answer(answer),
            Op::Transmit(who, n) => {
                self.transmit(*who, usize::from(*n));
            }
            Op::TransmitAll(who) => {
                self.transmit(*who, usize::MAX);
            }
            Op::Deliver(who, n, force) => {
                self.deliver(*who, usize::from(*n), *force);
            }
            Op::Event(who) => {
                self.event(*who);
            }
            Op::Events(who) => while self.event(*who) {},
            Op::Eof(who) => {
                let i = who.index();
                if !self.gone[i] {
                    // The peer shut its writing half: what was in flight is lost,
                    // and nothing it writes from now on arrives.
                    self.links[i] = Link { tainted: self.links[i].tainted, ..Link::default() };
                    self.mute[1 - i] = true;
                    self.sides[i].receive_eof(now);
                }
            }
            Op::Lost(who) => {
                let i = who.index();
                if !self.gone[i] {
                    self.sides[i].transport_lost(now);
                    self.close_transport(i);
                }
            }
            Op::Reading(who, on) => self.reading[who.index()] = *on,
            Op::Garbage(who, bytes) => self.inject(*who, bytes),
            Op::Frame(who, frame) => self.inject(*who, &frame.encode()),
            Op::Pump => self.pump(),
        }
        self.shut_finished();
        self.check();
    }

    fn inject(&mut self, who: Who, bytes: &[u8]) {
        let link = &mut self.links[who.index()];
        if !self.gone[who.index()] && !bytes.is_empty() {
            link.bytes.extend(bytes);
            link.tainted = true;
        }
    }

    fn check(&mut self) {
        for i in 0..2 {
            self.sides[i].check();
            // A clean close reports what the peer wrote, unless bytes the peer did
            // not write reached this side.
            if let Some(closed) = self.sides[i].closed()
                && closed.error.is_none()
                && !self.links[i].tainted
            {
                let received = CloseFrame { code: closed.code, reason: closed.reason.clone() };
                let peer = &self.sides[1 - i];
                assert_eq!(
                    peer.wire().close_written(),
                    Some(&received),
                    "{} reported a close frame its peer did not write",
                    self.sides[i].name
                );
            }
        }
    }

    /// The end: both sides read again, an open side closes, requests are
    /// answered, and time runs far enough that every side must be finished.
    fn settle(&mut self) {
        self.reading = [true; 2];
        self.auto_accept = true;
        if self.pending {
            self.answer(&Answer::Accept(None));
        }
        let mut longest = Duration::ZERO;
        for i in 0..2 {
            let config = self.sides[i].conn.config();
            longest = longest.max(config.close_timeout * 2 + config.handshake_timeout.unwrap_or_default());
            if self.sides[i].conn.state() == State::Open {
                let now = self.now;
                let _ = self.sides[i].api(now, "close", |c, now| c.close(now, CloseCode::GOING_AWAY, "settle"));
            }
        }
        let end = self.now + longest * 2 + Duration::from_millis(100);
        while self.now < end {
            self.pump();
            // A side opened while settling closes too.
            for i in 0..2 {
                if self.sides[i].conn.state() == State::Open {
                    let now = self.now;
                    let _ = self.sides[i].api(now, "close", |c, now| c.close(now, CloseCode::NORMAL, ""));
                }
            }
            self.now += Duration::from_millis(100);
            let now = self.now;
            for side in &mut self.sides {
                side.tick(now);
            }
            self.pump();
        }
        for side in &self.sides {
            // Without a handshake timeout a handshake may wait forever (its peer
            // stalled too): that is the configuration's choice.
            let bounded = side.opened() || side.conn.config().handshake_timeout.is_some();
            if bounded {
                assert!(side.conn.is_finished(), "{} not finished after settling: {:?}", side.name, side.conn);
            }
            if side.opened() && side.conn.is_finished() {
                assert!(side.ended(), "{} opened and finished without reporting Closed", side.name);
            }
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut script = Script::new(data);
    let input = Input::read(&mut script);
    let mut world = World::new(&input);
    while let Some(op) = Op::read(&mut script) {
        if chinwag_fuzz::tracing() {
            eprintln!("{:?} {op:?}", world.now - chinwag_fuzz::t0());
        }
        world.step(&op);
    }
    if chinwag_fuzz::tracing() {
        eprintln!("{:?} settle", world.now - chinwag_fuzz::t0());
    }
    world.settle();
    if chinwag_fuzz::tracing() {
        eprintln!("{:?} end: {:?}, {:?}", world.now - chinwag_fuzz::t0(), world.sides[0].conn, world.sides[1].conn);
    }
});

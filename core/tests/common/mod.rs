//! A deterministic two-peer harness: a client core and a server core joined by an
//! in-memory network with a one-way latency, bytes in flight per direction, and
//! virtual time that jumps straight to the next arrival or deadline (as quinn's
//! test `Pair::drive` does).

#![allow(dead_code, unreachable_pub)]

use bytes::Buf;
use chinwag_core::{Accept, ClientRequest, Config, Connection, Event};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Deterministic masking keys.
pub fn counter_masks() -> Box<dyn chinwag_core::MaskSource> {
    let mut n = 0x1234_5678u32;
    Box::new(move || {
        n = n.wrapping_mul(1_103_515_245).wrapping_add(12345);
        n.to_be_bytes()
    })
}

/// Takes everything a connection has queued, as a transport would.
pub fn drain_transmit(conn: &mut Connection) -> Vec<u8> {
    let mut all = Vec::new();
    while let Some(out) = conn.poll_transmit() {
        let chunk = out.chunk().to_vec();
        out.advance(chunk.len());
        all.extend_from_slice(&chunk);
    }
    all
}

/// A masked client frame (all-zero mask, so the payload reads as is).
pub fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= 125);
    [&[b0, 0x80 | payload.len() as u8, 0, 0, 0, 0][..], payload].concat()
}

/// Takes every event the connection has at `now`.
pub fn drain_events(conn: &mut Connection, now: Instant) -> Vec<Event> {
    std::iter::from_fn(|| conn.poll_event(now)).collect()
}

/// What travels on one direction of the wire.
#[derive(Debug)]
enum Packet {
    Data(Vec<u8>),
    /// The sender closed its transport.
    Eof,
}

/// One direction of the wire: packets in flight with their arrival times.
#[derive(Debug, Default)]
pub struct Wire {
    in_flight: VecDeque<(Instant, Packet)>,
}

impl Wire {
    /// Bytes sent and not yet taken by the receiver.
    pub fn bytes_in_flight(&self) -> usize {
        self.in_flight.iter().map(|(_, p)| if let Packet::Data(d) = p { d.len() } else { 0 }).sum()
    }

    fn next_arrival(&self) -> Option<Instant> {
        self.in_flight.front().map(|(at, _)| *at)
    }
}

pub struct Pair {
    pub client: Connection,
    pub server: Connection,
    pub now: Instant,
    /// The one-way delay of the wire, both directions.
    pub latency: Duration,
    pub client_events: Vec<Event>,
    pub server_events: Vec<Event>,
    /// When each event was taken (same indexes as the event lists).
    pub client_times: Vec<Instant>,
    pub server_times: Vec<Instant>,
    /// When false, bytes from that side are lost (a pulled cable).
    pub client_to_server: bool,
    pub server_to_client: bool,
    /// When false, that side's driver stops reading: what is sent to it stays in
    /// flight (TCP buffers filling up).
    pub client_reading: bool,
    pub server_reading: bool,
    /// Whether each side has closed its transport.
    pub client_transport_closed: bool,
    pub server_transport_closed: bool,
    pub to_server: Wire,
    pub to_client: Wire,
    /// Every byte each side has written, delivered or lost: what it put on the wire.
    pub client_wrote: Vec<u8>,
    pub server_wrote: Vec<u8>,
}

impl Pair {
    /// A client and server that have completed the opening handshake.
    pub fn open(client_config: Config, server_config: Config) -> Self {
        Self::open_with_latency(client_config, server_config, Duration::ZERO)
    }

    pub fn default_open() -> Self {
        Self::open(Config::default(), Config::default())
    }

    /// A client and server whose transports are not connected yet; the client's
    /// request is queued.
    pub fn new(client_config: Config, server_config: Config, latency: Duration) -> Self {
        let now = Instant::now();
        let request = ClientRequest::new("ws://localhost/test").unwrap();
        let client = Connection::client(&request, [7; 16], counter_masks(), client_config, now);
        let server = Connection::server(server_config, now);
        Pair {
            client,
            server,
            now,
            latency,
            client_events: vec![],
            server_events: vec![],
            client_times: vec![],
            server_times: vec![],
            client_to_server: true,
            server_to_client: true,
            client_reading: true,
            server_reading: true,
            client_transport_closed: false,
            server_transport_closed: false,
            to_server: Wire::default(),
            to_client: Wire::default(),
            client_wrote: Vec::new(),
            server_wrote: Vec::new(),
        }
    }

    /// A client and server that have completed the opening handshake over a wire
    /// with `latency` each way.
    pub fn open_with_latency(client_config: Config, server_config: Config, latency: Duration) -> Self {
        let mut pair = Self::new(client_config, server_config, latency);
        while pair.server_events.is_empty() {
            assert!(pair.step(), "the request never arrived");
        }
        assert!(matches!(pair.server_events.remove(0), Event::UpgradeRequest(_)));
        pair.server_times.remove(0);
        pair.server.accept(pair.now, Accept::new()).unwrap();
        while pair.client_events.is_empty() {
            assert!(pair.step(), "the response never arrived");
        }
        assert!(matches!(pair.server_events.remove(0), Event::Open(_)));
        assert!(matches!(pair.client_events.remove(0), Event::Open(_)));
        pair.server_times.remove(0);
        pair.client_times.remove(0);
        pair
    }

    /// Moves what is due at `now`: queued output onto the wire, arrived bytes into
    /// the receivers, events into the logs; a finished side closes its transport
    /// (the other side sees EOF after the latency). Repeats until nothing moves;
    /// returns whether anything did.
    pub fn run(&mut self) -> bool {
        let now = self.now;
        let mut any = false;
        loop {
            let mut moved = false;
            moved |= send(
                &mut self.client,
                self.client_transport_closed,
                self.client_to_server && !self.server_transport_closed,
                &mut self.to_server,
                now + self.latency,
                &mut self.client_wrote,
            );
            moved |= send(
                &mut self.server,
                self.server_transport_closed,
                self.server_to_client && !self.client_transport_closed,
                &mut self.to_client,
                now + self.latency,
                &mut self.server_wrote,
            );
            moved |= deliver(
                &mut self.server,
                self.server_reading && !self.server_transport_closed,
                &mut self.to_server,
                now,
            );
            moved |= deliver(
                &mut self.client,
                self.client_reading && !self.client_transport_closed,
                &mut self.to_client,
                now,
            );
            // A lingering server shuts its writing side down: the client sees EOF.
            if self.server.wants_write_shutdown() && self.server_to_client && !self.server_transport_closed {
                self.shut_down_writing(false);
                moved = true;
            }
            if self.client.wants_write_shutdown() && self.client_to_server && !self.client_transport_closed {
                self.shut_down_writing(true);
                moved = true;
            }
            if self.server.is_finished() && !self.server_transport_closed {
                self.server_transport_closed = true;
                self.to_server.in_flight.clear();
                if self.server_to_client && !self.client_transport_closed {
                    self.to_client.in_flight.push_back((now + self.latency, Packet::Eof));
                }
                moved = true;
            }
            if self.client.is_finished() && !self.client_transport_closed {
                self.client_transport_closed = true;
                self.to_client.in_flight.clear();
                if self.client_to_server && !self.server_transport_closed {
                    self.to_server.in_flight.push_back((now + self.latency, Packet::Eof));
                }
                moved = true;
            }
            let ce = drain_events(&mut self.client, now);
            let se = drain_events(&mut self.server, now);
            moved |= !ce.is_empty() || !se.is_empty();
            self.client_times.extend(std::iter::repeat_n(now, ce.len()));
            self.server_times.extend(std::iter::repeat_n(now, se.len()));
            self.client_events.extend(ce);
            self.server_events.extend(se);
            if !moved {
                return any;
            }
            any = true;
        }
    }

    /// The next instant at which something happens: an arrival a side will read,
    /// or a deadline of either side.
    pub fn next_time(&self) -> Option<Instant> {
        let reads = |reading: bool, closed: bool, conn: &Connection| reading && !closed && conn.wants_input();
        let arrivals = [
            reads(self.server_reading, self.server_transport_closed, &self.server)
                .then(|| self.to_server.next_arrival())
                .flatten(),
            reads(self.client_reading, self.client_transport_closed, &self.client)
                .then(|| self.to_client.next_arrival())
                .flatten(),
        ];
        let deadlines = [self.client.poll_timeout(), self.server.poll_timeout()];
        arrivals.into_iter().chain(deadlines).flatten().min()
    }

    /// Moves what is due now; if nothing was, jumps virtual time to the next
    /// arrival or deadline, fires what is due and runs. Returns false if nothing is
    /// pending.
    pub fn step(&mut self) -> bool {
        if self.run() {
            return true;
        }
        let Some(next) = self.next_time() else { return false };
        self.now = self.now.max(next);
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
        self.run();
        true
    }

    /// Jumps to the next arrival or deadline if it is within `limit` from now.
    /// Returns false if nothing was due that soon.
    pub fn advance(&mut self, limit: Duration) -> bool {
        if self.run() {
            return true;
        }
        match self.next_time() {
            Some(t) if t <= self.now + limit => self.step(),
            _ => false,
        }
    }

    /// Advances until both sides are quiet for `limit` of virtual time.
    pub fn settle(&mut self, limit: Duration) {
        while self.advance(limit) {}
    }

    /// Steps until `deadline`, then moves the clock to it.
    pub fn drive_until(&mut self, deadline: Instant) {
        while self.next_time().is_some_and(|t| t <= deadline) {
            self.step();
        }
        self.now = self.now.max(deadline);
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
        self.run();
    }

    /// The side that is the client (or the server) closes its transport's writing
    /// half behind the connection's back: the other side sees EOF after the
    /// latency, and what this side writes later is lost.
    pub fn shut_down_writing(&mut self, client: bool) {
        let (wire, up) = if client {
            (&mut self.to_server, &mut self.client_to_server)
        } else {
            (&mut self.to_client, &mut self.server_to_client)
        };
        if *up {
            wire.in_flight.push_back((self.now + self.latency, Packet::Eof));
        }
        *up = false;
    }

    /// Moves the clock `by` with nothing happening in between: no deadline fires
    /// and nothing arrives until the next call (an application that slept).
    pub fn sleep(&mut self, by: Duration) {
        self.now += by;
    }
}

/// Puts what `conn` queued on the wire (or loses it), and logs it. Returns whether
/// bytes moved.
fn send(
    conn: &mut Connection,
    closed: bool,
    link_up: bool,
    wire: &mut Wire,
    arrival: Instant,
    log: &mut Vec<u8>,
) -> bool {
    if closed {
        return false;
    }
    let bytes = drain_transmit(conn);
    if bytes.is_empty() {
        return false;
    }
    log.extend_from_slice(&bytes);
    if link_up {
        wire.in_flight.push_back((arrival, Packet::Data(bytes)));
    }
    true
}

/// Feeds what has arrived by `now` to `conn`, while it wants input (as a driver
/// reads only then). Returns whether anything was fed.
fn deliver(conn: &mut Connection, reading: bool, wire: &mut Wire, now: Instant) -> bool {
    let mut moved = false;
    while reading && conn.wants_input() && wire.next_arrival().is_some_and(|at| at <= now) {
        let (_, packet) = wire.in_flight.pop_front().expect("an arrival");
        match packet {
            Packet::Data(data) => conn.receive(now, &data),
            Packet::Eof => conn.receive_eof(now),
        }
        moved = true;
    }
    moved
}

/// One fixed instant for tests where time does not matter: connections made at
/// `t0()` and driven at `t0()` never see a deadline fire.
pub fn t0() -> Instant {
    static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *T0.get_or_init(Instant::now)
}

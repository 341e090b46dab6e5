//! A deterministic two-peer harness: a client core and a server core joined by an
//! in-memory "wire", with virtual time that jumps straight to the next deadline.

#![allow(dead_code, unreachable_pub)]

use bytes::Buf;
use chinwag_core::{Accept, ClientRequest, Config, Connection, Event};
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

pub fn drain_events(conn: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

pub struct Pair {
    pub client: Connection,
    pub server: Connection,
    pub now: Instant,
    pub client_events: Vec<Event>,
    pub server_events: Vec<Event>,
    /// When false, bytes from that side are lost (a pulled cable).
    pub client_to_server: bool,
    pub server_to_client: bool,
    /// Whether each side has closed its transport.
    pub client_transport_closed: bool,
    pub server_transport_closed: bool,
}

impl Pair {
    /// A client and server that have completed the opening handshake.
    pub fn open(client_config: Config, server_config: Config) -> Self {
        let now = Instant::now();
        let request = ClientRequest::new("ws://localhost/test").unwrap();
        let client = Connection::client(&request, [7; 16], counter_masks(), client_config, now);
        let server = Connection::server(server_config, now);
        let mut pair = Pair {
            client,
            server,
            now,
            client_events: vec![],
            server_events: vec![],
            client_to_server: true,
            server_to_client: true,
            client_transport_closed: false,
            server_transport_closed: false,
        };
        pair.run();
        assert!(matches!(pair.server_events.remove(0), Event::UpgradeRequest(_)));
        pair.server.accept(Accept::new()).unwrap();
        pair.run();
        assert!(matches!(pair.server_events.remove(0), Event::Open(_)));
        assert!(matches!(pair.client_events.remove(0), Event::Open(_)));
        pair
    }

    pub fn default_open() -> Self {
        Self::open(Config::default(), Config::default())
    }

    /// Moves bytes both ways and collects events until nothing moves. A side whose
    /// connection is finished closes its transport, which the other side sees as EOF.
    pub fn run(&mut self) {
        loop {
            let mut moved = false;
            let c2s = drain_transmit(&mut self.client);
            if !c2s.is_empty() && self.client_to_server && !self.server_transport_closed {
                self.server.receive(&c2s);
                moved = true;
            }
            let s2c = drain_transmit(&mut self.server);
            if !s2c.is_empty() && self.server_to_client && !self.client_transport_closed {
                self.client.receive(&s2c);
                moved = true;
            }
            if self.server.is_finished() && !self.server_transport_closed {
                self.server_transport_closed = true;
                if self.server_to_client && !self.client_transport_closed {
                    self.client.receive_eof();
                }
                moved = true;
            }
            if self.client.is_finished() && !self.client_transport_closed {
                self.client_transport_closed = true;
                if self.client_to_server && !self.server_transport_closed {
                    self.server.receive_eof();
                }
                moved = true;
            }
            let ce = drain_events(&mut self.client);
            let se = drain_events(&mut self.server);
            moved |= !ce.is_empty() || !se.is_empty();
            self.client_events.extend(ce);
            self.server_events.extend(se);
            if !moved {
                return;
            }
        }
    }

    /// Jumps virtual time to the earliest deadline of either side (if within
    /// `limit` from now), fires it, and runs. Returns false if nothing was due.
    pub fn advance(&mut self, limit: Duration) -> bool {
        let next = [self.client.poll_timeout(), self.server.poll_timeout()].into_iter().flatten().min();
        match next {
            Some(t) if t <= self.now + limit => {
                self.now = self.now.max(t);
                self.client.handle_timeout(self.now);
                self.server.handle_timeout(self.now);
                self.run();
                true
            }
            _ => false,
        }
    }

    /// Advances until both sides are quiet for `limit` of virtual time.
    pub fn settle(&mut self, limit: Duration) {
        while self.advance(limit) {}
    }
}

//! A connection under observation: every input goes through here, so that the
//! invariants of the life cycle can be checked after each one. Shared by the
//! `lifecycle` target (two of them, joined) and the `open` target (one, fed by the
//! fuzzer).

use bytes::Buf;
use chinwag_core::{Closed, Connection, ConnectionError, Event, LocalError, State};
use std::time::{Duration, Instant};

use crate::wire::WireCheck;

/// What is observable of a connection without changing it: a call that returns a
/// [`LocalError`] must leave all of it as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    state: State,
    buffered: usize,
    has_events: bool,
    timeout: Option<Instant>,
    error: Option<ConnectionError>,
    finished: bool,
    wants_input: bool,
    backlogged: bool,
    subprotocol: Option<String>,
}

impl Snapshot {
    fn of(conn: &Connection) -> Self {
        Self {
            state: conn.state(),
            buffered: conn.buffered_amount(),
            has_events: conn.has_events(),
            timeout: conn.poll_timeout(),
            error: conn.error(),
            finished: conn.is_finished(),
            wants_input: conn.wants_input(),
            backlogged: conn.is_backlogged(),
            subprotocol: conn.subprotocol().map(str::to_owned),
        }
    }
}

/// A connection and what was seen of it so far.
pub struct Checked {
    /// The connection. Drive it through the methods of [`Checked`], or the checks
    /// lose track of it.
    pub conn: Connection,
    /// For messages: "client" or "server".
    pub name: &'static str,
    wire: WireCheck,
    /// The latest `now` this connection was given (every input fires the deadlines
    /// due by then, so its state reflects this instant).
    last_now: Instant,
    /// Whether the WebSocket connection opened (`Event::Open`, or made open).
    opened: bool,
    /// The last event was reported (`Closed` or `HandshakeFailed`).
    ended: bool,
    closed: Option<Closed>,
    /// When the connection was first seen closing or closed.
    closing_since: Option<Instant>,
    close_timeout: Duration,
    /// How many events were taken.
    pub events: u64,
}

impl Checked {
    /// Starts observing `conn`, made at `now`. `opened`: made with
    /// `Connection::open` (no `Event::Open` will come). `wire`: how its output
    /// starts.
    pub fn new(conn: Connection, name: &'static str, now: Instant, opened: bool, wire: WireCheck) -> Self {
        let close_timeout = conn.config().close_timeout;
        Self {
            conn,
            name,
            wire,
            last_now: now,
            opened,
            ended: false,
            closed: None,
            closing_since: None,
            close_timeout,
            events: 0,
        }
    }

    /// The `Closed` event, once reported.
    pub fn closed(&self) -> Option<&Closed> {
        self.closed.as_ref()
    }

    /// Whether the last event (`Closed`, `HandshakeFailed`) was reported.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Whether the connection opened.
    pub fn opened(&self) -> bool {
        self.opened
    }

    /// What was written, as read back.
    pub fn wire(&self) -> &WireCheck {
        &self.wire
    }

    fn at(&mut self, now: Instant) -> Instant {
        self.last_now = self.last_now.max(now);
        now
    }

    /// `handle_timeout`.
    pub fn tick(&mut self, now: Instant) {
        let now = self.at(now);
        self.conn.handle_timeout(now);
    }

    /// `receive`.
    pub fn receive(&mut self, now: Instant, bytes: &[u8]) {
        let now = self.at(now);
        self.conn.receive(now, bytes);
    }

    /// `receive_eof`.
    pub fn receive_eof(&mut self, now: Instant) {
        let now = self.at(now);
        self.conn.receive_eof(now);
    }

    /// `transport_lost`.
    pub fn transport_lost(&mut self, now: Instant) {
        let now = self.at(now);
        self.conn.transport_lost(now);
        assert!(self.conn.is_finished(), "{}: a lost transport finishes the connection at once", self.name);
    }

    /// An application call. Deadlines due at `now` are fired first, as the call
    /// itself would; then a [`LocalError`] must have changed nothing, except the
    /// documented one: a data send over `max_backlog` fails the connection (1008,
    /// `SlowConsumer`) and returns `Closed`.
    pub fn api(
        &mut self,
        now: Instant,
        what: &str,
        call: impl FnOnce(&mut Connection, Instant) -> Result<(), LocalError>,
    ) -> Result<(), LocalError> {
        self.tick(now);
        let before = Snapshot::of(&self.conn);
        let result = call(&mut self.conn, now);
        if crate::tracing() {
            eprintln!("  {} {what}: {result:?}", self.name);
        }
        if let Err(e) = &result {
            let after = Snapshot::of(&self.conn);
            let slow_consumer = *e == LocalError::Closed
                && before.state == State::Open
                && before.buffered > self.conn.config().max_backlog;
            if slow_consumer {
                assert_eq!(after.state, State::Closed, "{}: {what}: a slow consumer is closed", self.name);
                assert_eq!(after.error, Some(ConnectionError::SlowConsumer), "{}: {what}", self.name);
            } else {
                assert_eq!(before, after, "{}: {what} returned {e:?} but changed the connection", self.name);
            }
        }
        result
    }

    /// The next event, checked against what came before: nothing after the last
    /// event, messages only while open, `Open` once.
    pub fn poll_event(&mut self, now: Instant) -> Option<Event> {
        let now = self.at(now);
        let event = self.conn.poll_event(now)?;
        self.events += 1;
        if crate::tracing() {
            eprintln!("  {} event: {event:?}", self.name);
        }
        let name = self.name;
        assert!(!self.ended, "{name}: {event:?} after the last event ({:?})", self.closed);
        match &event {
            Event::UpgradeRequest(_) | Event::HttpRequest(_) => {
                assert!(!self.opened, "{name}: a request after the connection opened");
            }
            Event::Open(_) => {
                assert!(!self.opened, "{name}: Open twice (or on a connection made open)");
                self.opened = true;
            }
            Event::HandshakeFailed(_) => {
                assert!(!self.opened, "{name}: HandshakeFailed after Open");
                self.ended = true;
            }
            Event::Text(_) | Event::Binary(_) | Event::Skipped(_) | Event::Ping(_) | Event::Pong(_) => {
                assert!(self.opened, "{name}: {event:?} before Open");
            }
            Event::Closed(closed) => {
                assert!(self.opened, "{name}: Closed before Open");
                self.ended = true;
                check_closed(name, closed);
                self.closed = Some((**closed).clone());
            }
        }
        Some(event)
    }

    /// Takes up to `max` bytes of output, as a transport that accepted that many
    /// would, and reads them back.
    pub fn transmit(&mut self, max: usize) -> Vec<u8> {
        let mut taken = Vec::new();
        while taken.len() < max {
            let Some(out) = self.conn.poll_transmit() else { break };
            let chunk = out.chunk();
            assert!(!chunk.is_empty(), "{}: poll_transmit returned an empty buffer", self.name);
            let n = chunk.len().min(max - taken.len());
            taken.extend_from_slice(&chunk[..n]);
            out.advance(n);
        }
        self.wire.push(&taken);
        if crate::tracing() && !taken.is_empty() {
            eprintln!("  {} wrote {} bytes", self.name, taken.len());
        }
        taken
    }

    /// The invariants that hold between any two inputs. Call after every step.
    pub fn check(&mut self) {
        let name = self.name;
        if matches!(self.conn.state(), State::Closing | State::Closed) && self.closing_since.is_none() {
            self.closing_since = Some(self.last_now);
        }
        // Closing is bounded in time: the close timeout for the peer's answer,
        // then at most one more (the linger) for our last output and a client's
        // wait for EOF. Whatever the peer does.
        if let Some(since) = self.closing_since
            && let Some(bound) = since.checked_add(self.close_timeout * 2)
            && self.last_now >= bound
        {
            assert!(
                self.conn.is_finished(),
                "{name}: closing since {:?} before the latest input, over twice the close timeout {:?}, and not \
                 finished: {:?}",
                self.last_now - since,
                self.close_timeout,
                self.conn
            );
        }
        if self.conn.is_finished() {
            assert!(self.conn.poll_transmit().is_none(), "{name}: finished with output queued");
            assert!(!self.conn.wants_input(), "{name}: finished but wants input");
            assert_eq!(self.conn.state(), State::Closed, "{name}: finished but not closed");
        }
        // The close frame written is the one reported as sent.
        if let Some(closed) = &self.closed {
            match (&closed.sent, self.wire.close_written()) {
                (Some(sent), Some(written)) => assert_eq!(sent, written, "{name}: reported sent vs written"),
                (None, Some(written)) => panic!("{name}: wrote {written:?} but reported sending no close frame"),
                (_, None) => {}
            }
        }
    }
}

/// What every `Closed` event must say about itself.
fn check_closed(name: &str, closed: &Closed) {
    use chinwag_core::CloseCode;
    if closed.error.is_some() {
        assert_eq!(closed.code, CloseCode::ABNORMAL, "{name}: no close frame received means 1006: {closed:?}");
        assert!(closed.reason.is_empty(), "{name}: a reason without a close frame: {closed:?}");
    } else {
        assert_ne!(closed.code, CloseCode::ABNORMAL, "{name}: a clean close with 1006: {closed:?}");
        assert!(closed.code == CloseCode::NO_STATUS || closed.code.is_sendable(), "{name}: {closed:?}");
        assert!(closed.sent.is_some(), "{name}: a clean close without our close frame: {closed:?}");
    }
    if let Some(sent) = &closed.sent {
        assert!(sent.code == CloseCode::NO_STATUS || sent.code.is_sendable(), "{name}: sent {sent:?}");
        assert!(sent.reason.len() <= 123, "{name}: a close reason over 123 bytes");
    }
}

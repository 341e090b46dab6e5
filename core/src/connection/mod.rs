//! The connection state machine: one WebSocket connection from the first byte of the
//! opening handshake to the end of the close handshake, for either role.
//!
//! ## The life cycle
//!
//! ```text
//!  server: ServerReadingRequest ─► ServerDeciding ─accept─┐
//!                  │                     │                 │
//!                  │               reject/respond          │
//!  client: ClientAwaitingResponse ───────┼──── 101 ───────►├─► Open ─close()─► CloseSent
//!                  │                     │                 │    │                 │
//!                  └── handshake failed ─┴─────────────────┼────┼─────────────────┤
//!                                                          ▼    ▼                 ▼
//!                                   Closed { await_eof: false }  ◄─EOF/linger─  Closed { await_eof: true }
//!                                   (finished once its output is written)       (client: waits for the
//!                                                                                server to close first;
//!                                                                                server: lingers after
//!                                                                                failing or refusing)
//! ```
//!
//! Every input takes the current time, `now`, and first fires whatever deadline is
//! due at `now` (see [`Connection::handle_timeout`]); then it acts as the table
//! says. "Closed(..)" is the [`Event::Closed`] reported: the code received (1006
//! when no close frame arrived, RFC 6455 §7.1.5), which end started the closing,
//! and the error. Calls not listed for a phase return a [`LocalError`] and change
//! nothing: `NotOpen` before `Open`, `Closing` in `CloseSent`, `Closed` after.
//! `core/tests/lifecycle.rs` tests each row.
//!
//! | phase | input | next phase | writes | reports |
//! |---|---|---|---|---|
//! | `ServerReadingRequest` | bytes, head incomplete | same | | |
//! | `ServerReadingRequest` | bytes, head complete and valid | `ServerDeciding` | | `UpgradeRequest` or `HttpRequest` |
//! | `ServerReadingRequest` | bytes, head invalid or over `max_head_size` | `Closed { await_eof: true }` | 400, 426 or 431 with a reason | `HandshakeFailed(Refused)` |
//! | `ServerReadingRequest` | EOF, transport lost | `Closed { await_eof: false }` | | `HandshakeFailed(TransportClosed)` |
//! | `ServerReadingRequest` | handshake timer | `Closed { await_eof: false }` | | `HandshakeFailed(Timeout)` |
//! | `ServerDeciding` | bytes, within `max_head_size` | same (kept, parsed after `accept`) | | |
//! | `ServerDeciding` | bytes, beyond `max_head_size` | `Closed { await_eof: true }` | 400 | `HandshakeFailed(Refused)` |
//! | `ServerDeciding` | `accept` | `Open` | 101 | `Open`, then whatever the kept bytes hold |
//! | `ServerDeciding` | `reject`, `respond` | `Closed { await_eof: true }` | the response | |
//! | `ServerDeciding` | EOF, transport lost | `Closed { await_eof: false }` | | `HandshakeFailed(TransportClosed)` |
//! | `ServerDeciding` | handshake timer | `Closed { await_eof: false }` | | `HandshakeFailed(Timeout)` |
//! | `ClientAwaitingResponse` | bytes, head incomplete | same | | |
//! | `ClientAwaitingResponse` | bytes, a valid 101 | `Open` | | `Open`, then whatever follows the head |
//! | `ClientAwaitingResponse` | bytes, any other response | `Closed { await_eof: false }` | | `HandshakeFailed` |
//! | `ClientAwaitingResponse` | EOF, transport lost | `Closed { await_eof: false }` | | `HandshakeFailed(TransportClosed)` |
//! | `ClientAwaitingResponse` | handshake timer | `Closed { await_eof: false }` | | `HandshakeFailed(Timeout)` |
//! | `Open` | a data frame, ping or pong | same; keepalive restarts | a pong for a ping | `Text`, `Binary`, `Skipped`, `Ping`, `Pong` |
//! | `Open` | a close frame | `Closed { await_eof: client }` | the echo of its code | `Closed(code received, Peer)`, clean |
//! | `Open` | a protocol violation | `Closed { await_eof: server }` | close 1002, 1007 or 1009 | `Closed(1006, Local, Protocol)` |
//! | `Open` | EOF | `Closed { await_eof: false }` | | `Closed(1006, Peer, TransportClosed)` |
//! | `Open` | transport lost | `Closed { await_eof: false }` | queued output dropped | `Closed(1006, Peer, TransportClosed)` |
//! | `Open` | `close()` | `CloseSent`; close timer armed | the close frame | |
//! | `Open` | a data send while the backlog is over `max_backlog` | `Closed { await_eof: server }` | close 1008 | `Closed(1006, Local, SlowConsumer)`; the call returns `Closed` |
//! | `Open` | keepalive timer, peer quiet for the interval | same | a ping | |
//! | `Open` | keepalive timer, no answer within the timeout | `Closed { await_eof: false }` | queued output dropped | `Closed(1006, Local, KeepaliveTimeout)` |
//! | `CloseSent` | a data frame, ping or pong | same | nothing (no pong after our close) | `Text`, `Binary`, `Skipped`, `Ping`, `Pong` |
//! | `CloseSent` | a close frame | `Closed { await_eof: client }` | | `Closed(code received, Local)`, clean |
//! | `CloseSent` | a protocol violation | `Closed { await_eof: server }` | | `Closed(1006, Local, Protocol)` |
//! | `CloseSent` | EOF | `Closed { await_eof: false }` | | `Closed(1006, Local, TransportClosed)` |
//! | `CloseSent` | transport lost | `Closed { await_eof: false }` | queued output dropped | `Closed(1006, Local, TransportClosed)` |
//! | `CloseSent` | close timer | `Closed { await_eof: false }` | queued output dropped | `Closed(1006, Local, CloseTimeout)` |
//! | `Closed { await_eof: true }` | bytes | same (ignored) | | |
//! | `Closed { await_eof: true }` | EOF | `Closed { await_eof: false }` | | |
//! | `Closed { await_eof: true }` | transport lost | `Closed { await_eof: false }` | queued output dropped | |
//! | `Closed { await_eof: true }` | close timer (linger) | `Closed { await_eof: false }` | queued output dropped | |
//! | `Closed { await_eof: false }` | bytes, EOF | same (ignored) | | |
//! | `Closed { await_eof: false }` | transport lost | same | queued output dropped | |
//! | `Closed { await_eof: false }` | close timer (linger) | same | queued output dropped | |
//!
//! `Closed { await_eof: false }` with no output left is
//! [finished](Connection::is_finished): the driver closes the transport. A server
//! in `Closed { await_eof: true }` with no output left
//! [wants its writing side shut down](Connection::wants_write_shutdown) and reads
//! (discarding) until the client's EOF: the client learns the end from the FIN,
//! and a socket closed with unread input would reset the connection, which can
//! destroy the close frame or response before the client reads it. The linger
//! (the close timeout, armed when the connection closes with output queued or
//! waiting for EOF) bounds how long a peer that stops reading, or never closes,
//! can keep a closed connection alive. The keepalive timer is armed only in `Open`, the close
//! timer from `CloseSent` on, the handshake timer until `Open`.
//!
//! The call-order contract is in the crate documentation.

mod compression;
mod config;
mod event;
mod extras;
mod outgoing;
mod pending;
mod reader;
mod timers;

pub use config::{Config, Oversized};
pub use event::{
    CloseFrame, Closed, ConnectionError, Event, Initiator, LocalError, Opened, ProtocolError, Role, SkippedMessage,
};
pub use outgoing::Outgoing;

use compression::Compression;
pub(crate) use compression::{DeflateClass, compress_for_class};
use extras::Extras;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::StatusCode;
use std::sync::Arc;
use std::time::Instant;

use crate::deflate::{DeflateConfig, DeflateParams};
use crate::frame::{
    MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode, RSV1, apply_mask, encode_frame, encode_header, encode_header_into,
};
use crate::handshake::{
    Accept, ClientRequest, HandshakeError, HeadReader, HttpResponse, Rejection, Request, RequestKind, ResponseCheck,
    accept_key,
};
use crate::{CloseCode, Message, SharedFrame};
use pending::PendingEvents;
use reader::Reader;
use timers::Timers;

/// A source of masking keys for a client (RFC 6455 §5.3 asks for unpredictable keys:
/// feed it from a cryptographically strong generator).
///
/// Any `FnMut() -> [u8; 4]` is a mask source.
pub trait MaskSource: Send {
    /// The key for the next frame.
    fn next_mask(&mut self) -> [u8; 4];
}

impl<F: FnMut() -> [u8; 4] + Send> MaskSource for F {
    fn next_mask(&mut self) -> [u8; 4] {
        self()
    }
}

/// Payloads at least this large are queued by reference rather than copied, when
/// they need no masking. Below it a copy is cheaper than an extra buffer in the
/// vectored write (measured: 1 KiB pipelined echoes needed two writes per burst).
const ZERO_COPY_MIN: usize = 4096;

/// The coarse state of a connection, for display and decisions in a driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The opening handshake is under way.
    Handshake,
    /// Messages may flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's.
    Closing,
    /// The WebSocket connection is over (the transport may still be flushing).
    Closed,
}

/// The life cycle (see the table in the module documentation). Handshake state is
/// boxed: it is short-lived, and an open connection should not carry its size.
#[derive(Debug)]
enum Phase {
    /// (Server) Reading the client's opening request.
    ServerReadingRequest(Box<HeadReader>),
    /// (Server) A request was read; the application must answer it.
    ServerDeciding(Box<Deciding>),
    /// (Client) The request is queued; reading the server's response.
    ClientAwaitingResponse(Box<(HeadReader, ResponseCheck)>),
    /// Messages flow both ways.
    Open,
    /// We sent our close frame and wait for the peer's, up to the close timeout.
    CloseSent,
    /// The WebSocket connection is over; `await_eof`: it reads, discarding, until the
    /// peer's EOF, up to the close timeout. A client waits so for the server to
    /// close the transport first (§7.1.1). A server that failed the connection or
    /// refused the request lingers so, its writing side shut down (see
    /// [`Connection::wants_write_shutdown`]): closing a socket with unread input
    /// resets the connection, which can destroy the close frame or the response
    /// before the peer reads it.
    Closed { await_eof: bool },
}

/// A request waiting for the application's answer.
#[derive(Debug)]
struct Deciding {
    kind: RequestKind,
    /// `Sec-WebSocket-Accept` for an upgrade request.
    accept: String,
    offered: Vec<String>,
    /// The lines of `Sec-WebSocket-Extensions`, for `accept` to negotiate.
    extensions: Vec<http::HeaderValue>,
    head_request: bool,
    /// Bytes that followed the request head.
    early: BytesMut,
}

/// One WebSocket connection, client or server, as a pure state machine.
///
/// See the [crate documentation](crate) for the call-order contract and an example,
/// and the module's transition table for the life cycle.
pub struct Connection {
    role: Role,
    /// Shared by every connection made with the same `Arc`: a server's thousands
    /// of connections keep one copy instead of 128 bytes each.
    config: Arc<Config>,
    phase: Phase,
    reader: Reader,
    out: Outgoing,
    events: PendingEvents,
    timers: Timers,
    /// The subprotocol and extensions agreed, a client's mask source, the close
    /// frame we sent, how the connection ended: absent on a plain server
    /// connection until it closes.
    extras: Option<Box<Extras>>,
    /// Why the connection ended, if not with a clean close handshake.
    error: Option<ConnectionError>,
    /// Received bytes not parsed yet. Parsing stops after each event (and the
    /// whole data messages read ahead with it) and resumes when the events are
    /// drained, so the application answers message N before the connection acts
    /// on anything after it (a protocol error in frame N+1 must not swallow the
    /// reply to N).
    input: BytesMut,
    /// How many of the newest waiting events were read ahead. They stand for
    /// bytes that would otherwise still be in `input`, and are dropped with it
    /// if the connection ends before they are taken: the events must not depend
    /// on how the input was split. At most [`reader::PARSE_AHEAD`].
    read_ahead: u8,
}

/// The reason sent with the 1008 that closes a peer reading too slowly.
pub const SLOW_CONSUMER_REASON: &str = "too slow: outgoing backlog over the limit";

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("phase", &self.phase)
            .field("buffered", &self.out.remaining())
            .field("events", &self.events.len())
            .finish()
    }
}

impl Connection {
    fn new(role: Role, config: Arc<Config>, phase: Phase, masks: Option<Box<dyn MaskSource>>, now: Instant) -> Self {
        let timers = Timers::new(now, config.handshake_timeout);
        Self {
            role,
            config,
            phase,
            reader: Reader::default(),
            out: Outgoing::default(),
            events: PendingEvents::default(),
            timers,
            extras: masks.map(|masks| Box::new(Extras { masks: Some(masks), ..Extras::default() })),
            error: None,
            input: BytesMut::new(),
            read_ahead: 0,
        }
    }

    /// A server connection that will read the client's opening request from the
    /// first bytes it receives. The handshake timeout runs from `now`.
    ///
    /// `config` is a [`Config`] or an `Arc<Config>`; a server that passes clones of
    /// one `Arc` keeps a single copy of its settings for all its connections.
    pub fn server(config: impl Into<Arc<Config>>, now: Instant) -> Self {
        let config = config.into();
        let head = HeadReader::new(config.max_head_size);
        Self::new(Role::Server, config, Phase::ServerReadingRequest(Box::new(head)), None, now)
    }

    /// A client connection whose opening request is queued at once.
    ///
    /// `key` is 16 random bytes for `Sec-WebSocket-Key`; `masks` supplies a masking
    /// key for every frame. The handshake timeout runs from `now`.
    pub fn client(
        request: &ClientRequest,
        key: [u8; 16],
        masks: Box<dyn MaskSource>,
        config: impl Into<Arc<Config>>,
        now: Instant,
    ) -> Self {
        let config = config.into();
        let (bytes, check) = request.encode(key);
        let head = HeadReader::new(config.max_head_size);
        let phase = Phase::ClientAwaitingResponse(Box::new((head, check)));
        let mut conn = Self::new(Role::Client, config, phase, Some(masks), now);
        conn.out.tail().put_slice(&bytes);
        conn
    }

    /// A connection whose handshake was done elsewhere (for example by an HTTP
    /// server that handed over the upgraded transport): frames flow at once. A client
    /// needs `masks`.
    pub fn open(role: Role, masks: Option<Box<dyn MaskSource>>, config: impl Into<Arc<Config>>, now: Instant) -> Self {
        let config = config.into();
        assert!(role == Role::Server || masks.is_some(), "a client connection needs a mask source");
        let mut conn = Self::new(role, config, Phase::Open, masks, now);
        conn.timers.opened(conn.config.keepalive_interval);
        conn
    }

    /// Which end this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The coarse state.
    pub fn state(&self) -> State {
        match self.phase {
            Phase::ServerReadingRequest(_) | Phase::ServerDeciding(_) | Phase::ClientAwaitingResponse(_) => {
                State::Handshake
            }
            Phase::Open => State::Open,
            Phase::CloseSent => State::Closing,
            Phase::Closed { .. } => State::Closed,
        }
    }

    /// Why the connection ended, once it ended without a clean close handshake: the
    /// `error` of the [`Event::Closed`] already queued. Lets a caller whose send
    /// returned [`LocalError::Closed`] tell whether that send found a slow consumer
    /// ([`ConnectionError::SlowConsumer`]) without waiting for the event.
    pub fn error(&self) -> Option<ConnectionError> {
        self.error
    }

    /// The latest time the connection was given (by any call that takes `now`;
    /// an earlier `now` than a previous one counts as the previous one). A driver
    /// can pass it back for calls that need no fresh reading, instead of keeping
    /// a copy in every connection.
    pub fn now(&self) -> Instant {
        self.timers.now()
    }

    /// How the connection ended, once it has: what [`Event::Closed`] reported,
    /// kept after that event is taken, for a driver or application that asks
    /// later (a driver need not keep its own copy in every connection).
    pub fn closed(&self) -> Option<&Closed> {
        self.extras.as_ref()?.closed.as_ref()
    }

    /// The agreed subprotocol, once open.
    pub fn subprotocol(&self) -> Option<&str> {
        self.extras.as_ref()?.subprotocol.as_deref()
    }

    /// The permessage-deflate parameters agreed, once open (see [`deflate`](crate::deflate)).
    pub fn deflate(&self) -> Option<&DeflateParams> {
        Some(&self.extras.as_ref()?.deflate.as_ref()?.params)
    }

    /// Records what the handshake agreed on.
    fn set_extras(&mut self, subprotocol: Option<String>, deflate: Option<(DeflateParams, &DeflateConfig)>) {
        let deflate = deflate.map(|(params, config)| Box::new(Compression::new(self.role, params, config)));
        if subprotocol.is_some() || deflate.is_some() {
            let extras = self.extras.get_or_insert_default();
            extras.subprotocol = subprotocol;
            extras.deflate = deflate;
        }
    }

    /// The compression agreed, if any.
    fn compression(&mut self) -> Option<&mut Compression> {
        self.extras.as_mut()?.deflate.as_deref_mut()
    }

    // ----- time in ----------------------------------------------------------------

    /// The next instant at which [`handle_timeout`](Self::handle_timeout) has work to
    /// do, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline(self.config.keepalive_interval)
    }

    /// Tells the connection the time and fires every deadline due by `now`: the
    /// handshake timeout, a keepalive ping or the keepalive timeout, the close
    /// timeout, the linger. Call it when [`poll_timeout`](Self::poll_timeout) is
    /// reached. Every other input also takes `now` and does this first, so a call
    /// with a fresh `now` never acts on a stale clock. Time never goes backwards: an
    /// earlier `now` than a previous one counts as the previous one.
    #[inline]
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.timers.advance(now) {
            self.fire_due();
        }
    }

    /// Fires the deadlines that are due (rare: most calls find none).
    #[cold]
    #[inline(never)]
    fn fire_due(&mut self) {
        if self.timers.handshake_expired() {
            if matches!(self.state(), State::Handshake) {
                self.handshake_failed(HandshakeError::Timeout);
            }
            self.timers.clear_handshake();
        }
        if self.timers.close_expired() {
            self.timers.clear_close();
            match self.phase {
                Phase::CloseSent => self.end_abnormally(ConnectionError::CloseTimeout),
                Phase::Closed { .. } => {
                    // The linger is over: output the peer has not taken by now is
                    // abandoned, so a peer that stopped reading cannot keep the
                    // connection (and its backlog) alive.
                    self.phase = Phase::Closed { await_eof: false };
                    self.out = Outgoing::default();
                }
                _ => {}
            }
        }
        if matches!(self.phase, Phase::Open) {
            match self.timers.keepalive_due(self.config.keepalive_interval) {
                timers::Keepalive::Idle => {}
                timers::Keepalive::SendPing => {
                    // Quiet for a whole interval: the buffers a burst left (kept
                    // while busy, so that each message needs no allocation) are
                    // given back once the ping is written, and idle connections,
                    // thousands of them, hold none.
                    self.out.release_when_drained();
                    if self.input.is_empty() {
                        self.input = BytesMut::new();
                    }
                    self.queue_control(OpCode::Ping, b"");
                    self.timers.ping_sent(self.config.keepalive_timeout);
                }
                timers::Keepalive::Dead => self.end_abnormally(ConnectionError::KeepaliveTimeout),
            }
        }
        self.timers.refresh_due(self.config.keepalive_interval);
    }

    // ----- bytes in -------------------------------------------------------------

    /// Feeds bytes received from the transport at `now`. Any split of the stream
    /// into calls gives the same events. Protocol errors of the peer are handled
    /// here (a close frame is queued and [`Event::Closed`] reported), never
    /// returned.
    pub fn receive(&mut self, now: Instant, data: &[u8]) {
        self.handle_timeout(now);
        if data.is_empty() {
            return;
        }
        match &mut self.phase {
            Phase::ServerReadingRequest(head) => match head.push(data) {
                Ok(None) => {}
                Ok(Some(end)) => {
                    let mut buf = head.take();
                    let early = buf.split_off(end);
                    self.request_read(&buf, early);
                }
                Err(_) => self.refuse_request(431, "request head too large"),
            },
            Phase::ServerDeciding(deciding) => {
                let early = &mut deciding.early;
                // A client must wait for the 101 before sending frames (§4.1); keep
                // what it sent anyway, within the head bound.
                if early.len() + data.len() > self.config.max_head_size {
                    self.refuse_request(400, "data sent before the handshake completed");
                } else {
                    early.extend_from_slice(data);
                }
            }
            Phase::ClientAwaitingResponse(awaiting) => match awaiting.0.push(data) {
                Ok(None) => {}
                Ok(Some(end)) => {
                    let mut buf = awaiting.0.take();
                    let after = buf.split_off(end);
                    match awaiting.1.check(&buf, self.config.max_headers) {
                        Ok(valid) => {
                            let config = awaiting.1.deflate_config();
                            self.set_extras(valid.subprotocol.clone(), valid.deflate.zip(config.as_ref()));
                            self.set_open(Opened {
                                subprotocol: valid.subprotocol,
                                response_headers: valid.headers,
                                deflate: valid.deflate,
                            });
                            self.feed_frames(&after);
                        }
                        Err(e) => self.handshake_failed(e),
                    }
                }
                Err(_) => self.handshake_failed(HandshakeError::InvalidResponse("response head too large")),
            },
            Phase::Open | Phase::CloseSent => {
                self.timers.activity();
                self.feed_frames(data);
            }
            Phase::Closed { .. } => {}
        }
    }

    /// Parses frames from `data` up to the next event (and the whole data messages
    /// right after it), keeping the rest for later.
    /// While an event waits to be taken nothing is parsed: a violation in these
    /// bytes must not queue its close ahead of the application's answer to the
    /// waiting event (a driver may read again before draining events).
    fn feed_frames(&mut self, data: &[u8]) {
        if !self.input.is_empty() || !self.events.is_empty() {
            self.input.extend_from_slice(data);
            return;
        }
        let used = self.read_frames(data);
        if used < data.len() && matches!(self.phase, Phase::Open | Phase::CloseSent) {
            self.input.extend_from_slice(&data[used..]);
        }
    }

    /// Parses kept input up to the next event (and the whole data messages right
    /// after it).
    // Out of line: `poll_event` runs twice per message, and this, inlined, made
    // it save and restore a frame of registers for the rare case.
    #[inline(never)]
    fn parse_kept_input(&mut self) {
        let mut input = std::mem::take(&mut self.input);
        let used = self.read_frames(&input);
        input.advance(used);
        if input.is_empty() || !matches!(self.phase, Phase::Open | Phase::CloseSent) {
            input.clear();
            if input.capacity() > 4096 {
                input = BytesMut::new();
            }
        }
        self.input = input;
    }

    /// Reports that the peer will send no more bytes (a clean end of stream). What
    /// is queued may still be written.
    pub fn receive_eof(&mut self, now: Instant) {
        self.handle_timeout(now);
        match self.phase {
            Phase::ServerReadingRequest(_) | Phase::ServerDeciding(_) | Phase::ClientAwaitingResponse(_) => {
                self.handshake_failed(HandshakeError::TransportClosed);
            }
            Phase::Open | Phase::CloseSent => self.end_abnormally(ConnectionError::TransportClosed),
            Phase::Closed { .. } => {
                self.phase = Phase::Closed { await_eof: false };
                if !self.out.has_remaining() {
                    // Otherwise the linger still bounds the wait for the output.
                    self.timers.clear_close();
                }
            }
        }
    }

    /// Reports that the transport failed (a read or write error, a reset): nothing
    /// more can be received or sent. Queued output is discarded and the connection
    /// is finished at once.
    pub fn transport_lost(&mut self, now: Instant) {
        self.handle_timeout(now);
        match self.phase {
            Phase::ServerReadingRequest(_) | Phase::ServerDeciding(_) | Phase::ClientAwaitingResponse(_) => {
                self.handshake_failed(HandshakeError::TransportClosed);
            }
            Phase::Open | Phase::CloseSent => self.end_abnormally(ConnectionError::TransportClosed),
            Phase::Closed { .. } => {}
        }
        self.phase = Phase::Closed { await_eof: false };
        self.timers.clear_close();
        self.out = Outgoing::default();
        self.input = BytesMut::new();
    }

    /// Whether the driver should read from the transport now. It should not while
    /// events are waiting to be taken, nor while the outgoing backlog is over
    /// [`Config::backlog_high_water`]: a peer that sends without reading what it is
    /// sent (a ping flood, say) is then slowed by TCP flow control instead of
    /// growing this connection's memory. A finished connection wants nothing more.
    pub fn wants_input(&self) -> bool {
        match self.phase {
            Phase::ServerDeciding(_) => false,
            Phase::Closed { await_eof } => await_eof,
            _ => self.events.is_empty() && self.input.is_empty() && !self.is_backlogged(),
        }
    }

    // ----- events and bytes out ---------------------------------------------------

    /// The next event, if any, at `now`. Drain until `None` after every call that
    /// changes state.
    ///
    /// Received bytes are parsed as events are taken, so that whatever the
    /// application sends in answer to an event is queued before the connection
    /// reacts to later input. (Whole data messages that follow an event, which
    /// cause nothing but their own events, are parsed with it, a few dozen at
    /// most: a pipelined burst is not copied aside.) That parsing can end the connection
    /// (a close frame, a violation) and arm the linger, hence `now`; like every
    /// input, the call first fires the deadlines due by `now`.
    pub fn poll_event(&mut self, now: Instant) -> Option<Event> {
        self.handle_timeout(now);
        if self.events.is_empty() && !self.input.is_empty() {
            self.parse_kept_input();
        }
        if self.read_ahead != 0 && self.events.len() == usize::from(self.read_ahead) {
            // Every waiting event was read ahead: this one is taken.
            self.read_ahead -= 1;
        }
        self.events.pop()
    }

    /// Whether events are waiting, or received bytes that may hold more.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty() || !self.input.is_empty()
    }

    /// The queued output, if any: write as much of it as the transport takes (one
    /// vectored write carries all queued frames) and `advance` it by that much.
    pub fn poll_transmit(&mut self) -> Option<&mut Outgoing> {
        if self.out.has_remaining() { Some(&mut self.out) } else { None }
    }

    /// How many bytes are queued for the transport.
    pub fn buffered_amount(&self) -> usize {
        self.out.remaining()
    }

    /// Whether the queued output exceeds [`Config::backlog_high_water`]: a driver
    /// should let the transport drain before queueing more.
    pub fn is_backlogged(&self) -> bool {
        self.out.remaining() > self.config.backlog_high_water
    }

    /// Whether the transport should now be closed: the connection is over and all
    /// its output has been taken. (A client first waits for the server to close, up
    /// to the close timeout.) Output still queued one close timeout after the end,
    /// or when the end was a timeout (the peer stopped answering), is abandoned.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Closed { await_eof: false }) && !self.out.has_remaining()
    }

    /// Whether the driver should now shut the transport's writing side down (a TCP
    /// FIN) and go on reading while [`wants_input`](Self::wants_input) says so,
    /// until [`is_finished`](Self::is_finished). A server that failed the
    /// connection or refused a request does this once its close frame or response
    /// is written: the FIN tells the client the end, and reading until the
    /// client's EOF (the bytes are discarded, for at most the close timeout) keeps
    /// a socket closed with unread input from resetting the connection, which can
    /// destroy what was written before the client reads it.
    pub fn wants_write_shutdown(&self) -> bool {
        matches!(self.phase, Phase::Closed { await_eof: true })
            && self.role == Role::Server
            && !self.out.has_remaining()
    }

    // ----- answering a request (server) -------------------------------------------

    /// Accepts the pending upgrade request: queues the 101 response and opens the
    /// connection (an [`Event::Open`] follows). Keepalive runs from `now`.
    pub fn accept(&mut self, now: Instant, accept: Accept) -> Result<(), LocalError> {
        self.handle_timeout(now);
        let Phase::ServerDeciding(deciding) = &self.phase else {
            return Err(self.not_deciding());
        };
        if deciding.kind != RequestKind::Upgrade {
            return Err(LocalError::NotAnUpgrade);
        }
        if let Some(p) = &accept.subprotocol
            && !deciding.offered.contains(p)
        {
            return Err(LocalError::SubprotocolNotOffered(p.clone()));
        }
        let deflate = accept.deflate.as_ref().and_then(|config| {
            let params = crate::deflate::negotiate(deciding.extensions.iter().map(|v| v.as_bytes()), config)?;
            Some((params, config))
        });
        let response = crate::handshake::response::switching_protocols(
            &deciding.accept,
            accept.subprotocol.as_deref(),
            deflate.map(|(params, _)| params.response()).as_deref(),
            &accept.headers,
        );
        let Phase::ServerDeciding(deciding) = std::mem::replace(&mut self.phase, Phase::Open) else {
            unreachable!("checked above")
        };
        let early = deciding.early;
        self.out.tail().put_slice(&response);
        // The response is the largest thing most connections ever queue: the
        // buffer it grew is released once it is written, so that an idle
        // connection keeps none.
        self.out.release_when_drained();
        self.set_extras(accept.subprotocol.clone(), deflate);
        let deflate = deflate.map(|(params, _)| params);
        self.set_open(Opened { subprotocol: accept.subprotocol, response_headers: Default::default(), deflate });
        self.feed_frames(&early);
        Ok(())
    }

    /// Refuses the pending request with a 4xx or 5xx status and a plain-text
    /// reason. The connection is finished once the response is written (at most a
    /// close timeout from `now`).
    pub fn reject(&mut self, now: Instant, rejection: Rejection) -> Result<(), LocalError> {
        self.handle_timeout(now);
        let Phase::ServerDeciding(deciding) = &self.phase else {
            return Err(self.not_deciding());
        };
        let head_request = deciding.head_request;
        if !(rejection.status.is_client_error() || rejection.status.is_server_error()) {
            return Err(LocalError::InvalidRejectStatus(rejection.status.as_u16()));
        }
        // A HEAD request is answered without the body (RFC 9110 §9.3.2), its
        // Content-Length still saying how long the body would be.
        let response =
            crate::handshake::response::refusal(rejection.status, &rejection.reason, &rejection.headers, head_request);
        self.out.tail().put_slice(&response);
        self.finish_handshake_phase();
        Ok(())
    }

    /// Answers the pending request with a plain HTTP response. The connection is
    /// finished once the response is written (at most a close timeout from `now`).
    pub fn respond(&mut self, now: Instant, response: HttpResponse) -> Result<(), LocalError> {
        self.handle_timeout(now);
        let Phase::ServerDeciding(deciding) = &self.phase else {
            return Err(self.not_deciding());
        };
        let head_request = deciding.head_request;
        if response.status.is_informational() {
            return Err(LocalError::InvalidResponseStatus(response.status.as_u16()));
        }
        let bytes = crate::handshake::response::closing_response(
            response.status,
            &response.headers,
            &response.body,
            head_request,
        );
        self.out.tail().put_slice(&bytes);
        self.finish_handshake_phase();
        Ok(())
    }

    /// The error for an answer to a request when none is pending.
    fn not_deciding(&self) -> LocalError {
        match self.phase {
            Phase::Closed { .. } => LocalError::Closed,
            _ => LocalError::NoPendingRequest,
        }
    }

    // ----- sending ----------------------------------------------------------------

    /// Queues a text message as one frame.
    pub fn send_text(&mut self, now: Instant, text: &str) -> Result<(), LocalError> {
        self.send_data(now, OpCode::Text, text.as_bytes(), None)
    }

    /// Queues a binary message as one frame.
    pub fn send_binary(&mut self, now: Instant, data: &[u8]) -> Result<(), LocalError> {
        self.send_data(now, OpCode::Binary, data, None)
    }

    /// Queues a message as one frame. On a server, a large payload is queued by
    /// reference, without a copy.
    ///
    /// A data send (this, `send_text`, `send_binary`, `send_shared`) made while the
    /// outgoing backlog is over [`Config::max_backlog`] is not queued: the peer reads
    /// too slowly, so the connection is failed with a 1008 close frame, reported as
    /// [`Event::Closed`] with [`ConnectionError::SlowConsumer`], and the call returns
    /// [`LocalError::Closed`].
    pub fn send(&mut self, now: Instant, message: &Message) -> Result<(), LocalError> {
        let shared = match message {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
        };
        self.send_data(now, message.opcode(), shared, Some(shared))
    }

    /// Queues a frame encoded once for many connections (server only), by reference.
    pub fn send_shared(&mut self, now: Instant, frame: &SharedFrame) -> Result<(), LocalError> {
        self.handle_timeout(now);
        if self.role == Role::Client {
            return Err(LocalError::SharedFrameFromClient);
        }
        self.check_can_queue()?;
        if let Some(compression) = self.compression() {
            let class = compression.shared_class();
            return self.send_shared_compressed(frame, class);
        }
        self.out.push_chunk(frame.as_bytes().clone());
        Ok(())
    }

    /// Queues a ping (payload up to 125 bytes).
    pub fn ping(&mut self, now: Instant, payload: &[u8]) -> Result<(), LocalError> {
        self.send_control(now, OpCode::Ping, payload)
    }

    /// Queues an unsolicited pong (payload up to 125 bytes), a one-way heartbeat.
    pub fn pong(&mut self, now: Instant, payload: &[u8]) -> Result<(), LocalError> {
        self.send_control(now, OpCode::Pong, payload)
    }

    /// Starts the close handshake at `now`: queues a close frame with `code` and
    /// `reason` (up to 123 bytes) and arms the close timeout. [`Event::Closed`]
    /// follows when the peer answers, or when the close timeout passes.
    pub fn close(&mut self, now: Instant, code: CloseCode, reason: &str) -> Result<(), LocalError> {
        self.handle_timeout(now);
        if !code.is_sendable() {
            return Err(LocalError::InvalidCloseCode(code.0));
        }
        if reason.len() > MAX_CONTROL_PAYLOAD - 2 {
            return Err(LocalError::CloseReasonTooLong);
        }
        self.check_can_send()?;
        self.queue_close(code, reason);
        self.phase = Phase::CloseSent;
        self.timers.arm_close(self.config.close_timeout);
        Ok(())
    }

    fn check_can_send(&self) -> Result<(), LocalError> {
        match self.phase {
            Phase::Open => Ok(()),
            Phase::CloseSent => Err(LocalError::Closing),
            Phase::Closed { .. } => Err(LocalError::Closed),
            _ => Err(LocalError::NotOpen),
        }
    }

    /// Like `check_can_send`, for data: enforces the hard backlog bound, failing
    /// the connection of a peer that reads too slowly.
    fn check_can_queue(&mut self) -> Result<(), LocalError> {
        self.check_can_send()?;
        if self.out.remaining() > self.config.max_backlog {
            self.queue_close(CloseCode::POLICY_VIOLATION, SLOW_CONSUMER_REASON);
            self.end_abnormally(ConnectionError::SlowConsumer);
            return Err(LocalError::Closed);
        }
        Ok(())
    }

    fn send_data(
        &mut self,
        now: Instant,
        opcode: OpCode,
        payload: &[u8],
        shared: Option<&Bytes>,
    ) -> Result<(), LocalError> {
        self.handle_timeout(now);
        self.check_can_queue()?;
        if let Some(compression) = self.compression()
            && let Some(compressed) = compression.compress(payload)
        {
            self.queue_compressed(opcode, compressed);
            return Ok(());
        }
        match (self.role, shared) {
            (Role::Server, Some(bytes)) if bytes.len() >= ZERO_COPY_MIN => {
                encode_header_into(self.out.tail(), true, opcode, bytes.len(), None);
                self.out.push_chunk(bytes.clone());
            }
            _ => {
                let mask = self.next_mask();
                encode_frame(self.out.tail_for(MAX_HEADER_LEN + payload.len()), true, opcode, payload, mask);
            }
        }
        Ok(())
    }

    /// Queues a shared frame on a connection that agreed on compression: the
    /// frame compressed once for its class, or (with context takeover) by this
    /// connection's own compressor.
    #[cold]
    fn send_shared_compressed(&mut self, frame: &SharedFrame, class: Option<DeflateClass>) -> Result<(), LocalError> {
        let compression = self.compression().expect("compression was agreed");
        if frame.payload().len() >= compression.min_size {
            match class {
                Some(class) => {
                    if let Some(compressed) = frame.compressed(class) {
                        self.out.push_chunk(compressed);
                        return Ok(());
                    }
                }
                None => {
                    if let Some(compressed) = compression.compress(frame.payload()) {
                        self.queue_compressed(frame.opcode(), compressed);
                        return Ok(());
                    }
                }
            }
        }
        self.out.push_chunk(frame.as_bytes().clone());
        Ok(())
    }

    /// Queues a compressed message as one frame with RSV1 set.
    fn queue_compressed(&mut self, opcode: OpCode, mut payload: Vec<u8>) {
        let mask = self.next_mask();
        if let Some(mask) = mask {
            apply_mask(&mut payload, mask, 0);
        }
        let tail = self.out.tail();
        encode_header(tail, true, RSV1, opcode, payload.len(), mask);
        if payload.len() >= ZERO_COPY_MIN {
            // Queued as it is, without a copy; a buffer much larger than its
            // content (a message that compressed well) is not kept whole.
            if payload.capacity() > payload.len() * 2 {
                payload.shrink_to_fit();
            }
            self.out.push_chunk(Bytes::from(payload));
        } else {
            tail.put_slice(&payload);
        }
    }

    fn send_control(&mut self, now: Instant, opcode: OpCode, payload: &[u8]) -> Result<(), LocalError> {
        self.handle_timeout(now);
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(LocalError::ControlPayloadTooLong);
        }
        self.check_can_send()?;
        self.queue_control(opcode, payload);
        Ok(())
    }

    fn next_mask(&mut self) -> Option<[u8; 4]> {
        Some(self.extras.as_mut()?.masks.as_mut()?.next_mask())
    }

    fn queue_control(&mut self, opcode: OpCode, payload: &[u8]) {
        let mask = self.next_mask();
        encode_frame(self.out.tail(), true, opcode, payload, mask);
    }

    /// Queues our close frame (the last frame we send) and records it.
    fn queue_close(&mut self, code: CloseCode, reason: &str) {
        let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
        let reason = truncate_utf8(reason, MAX_CONTROL_PAYLOAD - 2);
        let len = if code == CloseCode::NO_STATUS {
            0
        } else {
            payload[..2].copy_from_slice(&code.0.to_be_bytes());
            payload[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
            2 + reason.len()
        };
        self.queue_control(OpCode::Close, &payload[..len]);
        let reason = if code == CloseCode::NO_STATUS { String::new() } else { reason.to_owned() };
        self.extras.get_or_insert_default().sent_close = Some(CloseFrame { code, reason });
    }

    // ----- transitions ------------------------------------------------------------

    fn request_read(&mut self, head: &[u8], early: BytesMut) {
        let early_len = early.len();
        match Request::parse(head, self.config.max_headers) {
            Ok(request) => {
                let key = request.header("sec-websocket-key").map(|k| accept_key(k.as_bytes())).unwrap_or_default();
                self.phase = Phase::ServerDeciding(Box::new(Deciding {
                    kind: request.kind().clone(),
                    accept: key,
                    offered: request.subprotocols().to_vec(),
                    extensions: request
                        .headers()
                        .get_all(http::header::SEC_WEBSOCKET_EXTENSIONS)
                        .iter()
                        .cloned()
                        .collect(),
                    head_request: request.method() == http::Method::HEAD,
                    early,
                }));
                self.events.push(match request.kind() {
                    RequestKind::Upgrade => Event::UpgradeRequest(Box::new(request)),
                    RequestKind::Http => Event::HttpRequest(Box::new(request)),
                });
                // What came after the head in the same read is kept within the same
                // bound as what comes in later reads (and refused the same way, so
                // that any split of the stream gives the same events).
                if early_len > self.config.max_head_size {
                    self.refuse_request(400, "data sent before the handshake completed");
                }
            }
            Err(HandshakeError::Refused { status, reason }) => {
                // A HEAD request gets its refusal without the body, also when the
                // core refuses it (an upgrade must use GET).
                let head_request = head.starts_with(b"HEAD ");
                self.refuse_request_as(status, &reason, head_request);
            }
            Err(other) => self.handshake_failed(other),
        }
    }

    /// Refuses a request the core itself found invalid.
    fn refuse_request(&mut self, status: u16, reason: &str) {
        // A HEAD request gets no body; one refused before its head was read whole
        // is not known to be HEAD, and gets the body.
        let head_request = matches!(&self.phase, Phase::ServerDeciding(deciding) if deciding.head_request);
        self.refuse_request_as(status, reason, head_request);
    }

    /// [`refuse_request`](Self::refuse_request), saying whether the request is
    /// HEAD (its answer then has no body).
    fn refuse_request_as(&mut self, status: u16, reason: &str, head_request: bool) {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        let response = crate::handshake::response::refusal(code, reason, &http::HeaderMap::new(), head_request);
        self.out.tail().put_slice(&response);
        self.handshake_failed(HandshakeError::Refused { status, reason: reason.to_owned() });
    }

    fn handshake_failed(&mut self, error: HandshakeError) {
        self.events.push(Event::HandshakeFailed(error));
        self.finish_handshake_phase();
    }

    fn finish_handshake_phase(&mut self) {
        // A server answering (a refusal, a rejection, a plain response) lingers
        // for the client's EOF: the client may still be sending its request.
        let answered = self.out.has_remaining();
        self.phase = Phase::Closed { await_eof: answered && self.role == Role::Server };
        self.timers.clear_handshake();
        self.timers.closed(answered.then_some(self.config.close_timeout));
    }

    fn set_open(&mut self, opened: Opened) {
        self.phase = Phase::Open;
        self.timers.opened(self.config.keepalive_interval);
        self.events.push(Event::Open(Box::new(opened)));
    }

    /// Fails the connection because of a protocol error (§7.1.7): the close frame
    /// saying why is queued (unless we already sent one) and the transport is to be
    /// closed without waiting for the peer's (a server first lingers for the
    /// peer's EOF: see `Phase::Closed`).
    fn fail(&mut self, error: ProtocolError) {
        if matches!(self.phase, Phase::Open) {
            self.queue_close(error.close_code(), &error.to_string());
        }
        self.end_abnormally(ConnectionError::Protocol(error));
    }

    /// Ends the connection without receiving a close frame: the code is 1006.
    fn end_abnormally(&mut self, error: ConnectionError) {
        // The peer started it only by dropping an open connection; we started a
        // close handshake we sent, and every timeout and failure.
        let initiator = match (error, &self.phase) {
            (ConnectionError::TransportClosed, Phase::Open) => Initiator::Peer,
            _ => Initiator::Local,
        };
        if matches!(error, ConnectionError::CloseTimeout | ConnectionError::KeepaliveTimeout) {
            // The peer stopped answering: what it has not read, it will not read.
            self.out = Outgoing::default();
        }
        let closed = Closed {
            code: CloseCode::ABNORMAL,
            reason: String::new(),
            initiator,
            sent: self.extras.as_mut().and_then(|e| e.sent_close.take()),
            error: Some(error),
        };
        // A server that fails a peer still sending (a protocol error, a peer that
        // does not read) lingers for its EOF; a peer that went away or stopped
        // answering is not waited for.
        let linger =
            self.role == Role::Server && matches!(error, ConnectionError::Protocol(_) | ConnectionError::SlowConsumer);
        self.end(closed, linger);
    }

    /// A valid close frame arrived from the peer.
    fn close_received(&mut self, code: CloseCode, reason: &str) {
        let initiator = match self.phase {
            Phase::Open => {
                // Echo the code, as peers expect (§5.5.1); no code gets no code.
                self.queue_close(code, "");
                Initiator::Peer
            }
            Phase::CloseSent => Initiator::Local,
            _ => return,
        };
        let closed = Closed {
            code,
            reason: reason.to_owned(),
            initiator,
            sent: self.extras.as_mut().and_then(|e| e.sent_close.take()),
            error: None,
        };
        self.end(closed, self.role == Role::Client);
    }

    fn end(&mut self, closed: Closed, await_eof: bool) {
        self.error = closed.error;
        self.phase = Phase::Closed { await_eof };
        self.reader = Reader::default();
        self.input = BytesMut::new();
        if let Some(compression) = self.compression() {
            compression.release();
        }
        // Lingers for the output (a close frame, say) or the peer's EOF (see
        // `Phase::Closed`); at most the close timeout.
        let linger = await_eof || self.out.has_remaining();
        self.timers.closed(linger.then_some(self.config.close_timeout));
        self.extras.get_or_insert_default().closed = Some(closed.clone());
        // Messages read ahead stand for bytes not parsed yet, dropped above.
        self.events.drop_newest(usize::from(std::mem::take(&mut self.read_ahead)));
        self.events.push(Event::Closed(Box::new(closed)));
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character
/// boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

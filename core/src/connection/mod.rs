//! The connection state machine: one WebSocket connection from the first byte of the
//! opening handshake to the end of the close handshake, for either role.
//!
//! ```text
//!  server: ReadingRequest ─► Deciding ─accept─┐          ┌─► CloseSent ─► Closed
//!                                  └─reject/respond─► Closed        │ (close frame
//!  client: AwaitingResponse ──────────────────┴─► Open ──┤   received)
//!                                                         └─► Closed (peer closed,
//!                                                             protocol error, EOF,
//!                                                             timeout)
//! ```
//!
//! The call-order contract is in the crate documentation.

mod config;
mod event;
mod outgoing;
mod reader;
mod timers;

pub use config::{Config, Oversized};
pub use event::{Closed, ConnectionError, Event, Initiator, LocalError, Opened, ProtocolError, Role, SkippedMessage};
pub use outgoing::Outgoing;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::StatusCode;
use std::{collections::VecDeque, time::Instant};

use crate::frame::{MAX_CONTROL_PAYLOAD, OpCode, encode_frame, encode_header_into};
use crate::handshake::{
    Accept, ClientRequest, HandshakeError, HeadReader, HttpResponse, Rejection, Request, RequestKind, ResponseCheck,
    accept_key,
};
use crate::{CloseCode, Message, SharedFrame};
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

/// The life cycle. Handshake state is boxed: it is short-lived, and an open
/// connection should not carry its size.
#[derive(Debug)]
enum Phase {
    ServerReadingRequest(Box<HeadReader>),
    /// A request was read; the application must answer it.
    ServerDeciding(Box<Deciding>),
    ClientAwaitingResponse(Box<(HeadReader, ResponseCheck)>),
    Open,
    CloseSent,
    /// The WebSocket connection is over; `await_eof`: a client waits for the server to
    /// close the transport first (§7.1.1), up to the close timeout.
    Closed {
        await_eof: bool,
    },
}

/// A request waiting for the application's answer.
#[derive(Debug)]
struct Deciding {
    kind: RequestKind,
    /// `Sec-WebSocket-Accept` for an upgrade request.
    accept: String,
    offered: Vec<String>,
    head_request: bool,
    /// Bytes that followed the request head.
    early: BytesMut,
}

/// One WebSocket connection, client or server, as a pure state machine.
///
/// See the [crate documentation](crate) for the call-order contract and an example.
pub struct Connection {
    role: Role,
    config: Config,
    phase: Phase,
    reader: Reader,
    out: Outgoing,
    events: VecDeque<Event>,
    masks: Option<Box<dyn MaskSource>>,
    timers: Timers,
    subprotocol: Option<String>,
    /// The code and reason of the close frame we sent, reported when it is answered.
    pending_close: Option<(CloseCode, String)>,
    /// Received bytes not parsed yet. Parsing stops after each event and resumes
    /// when the events are drained, so the application answers message N before
    /// the connection acts on anything after it (a protocol error in frame N+1 must
    /// not swallow the reply to N).
    input: BytesMut,
    /// We closed because the peer read too slowly; reported in [`Closed::error`].
    evicted: bool,
}

/// The reason sent with the 1008 that closes a peer reading too slowly.
pub const SLOW_CONSUMER_REASON: &str = "too slow: outgoing backlog over the limit";

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("state", &self.state())
            .field("buffered", &self.out.remaining())
            .field("events", &self.events.len())
            .finish()
    }
}

impl Connection {
    fn new(role: Role, config: Config, phase: Phase, masks: Option<Box<dyn MaskSource>>, now: Instant) -> Self {
        let timers = Timers::new(now, config.handshake_timeout);
        Self {
            role,
            config,
            phase,
            reader: Reader::default(),
            out: Outgoing::default(),
            events: VecDeque::new(),
            masks,
            timers,
            subprotocol: None,
            pending_close: None,
            input: BytesMut::new(),
            evicted: false,
        }
    }

    /// A server connection that will read the client's opening request from the
    /// first bytes it receives.
    pub fn server(config: Config, now: Instant) -> Self {
        let head = HeadReader::new(config.max_head_size);
        Self::new(Role::Server, config, Phase::ServerReadingRequest(Box::new(head)), None, now)
    }

    /// A client connection whose opening request is queued at once.
    ///
    /// `key` is 16 random bytes for `Sec-WebSocket-Key`; `masks` supplies a masking
    /// key for every frame.
    pub fn client(
        request: &ClientRequest,
        key: [u8; 16],
        masks: Box<dyn MaskSource>,
        config: Config,
        now: Instant,
    ) -> Self {
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
    pub fn open(role: Role, masks: Option<Box<dyn MaskSource>>, config: Config, now: Instant) -> Self {
        assert!(role == Role::Server || masks.is_some(), "a client connection needs a mask source");
        let mut conn = Self::new(role, config, Phase::Open, masks, now);
        conn.timers.opened(now, conn.config.keepalive_interval);
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

    /// The agreed subprotocol, once open.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    // ----- bytes in -------------------------------------------------------------

    /// Feeds bytes received from the transport. Any split of the stream into calls
    /// gives the same events. Protocol errors of the peer are handled here (a close
    /// frame is queued and [`Event::Closed`] reported), never returned.
    pub fn receive(&mut self, data: &[u8]) {
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
                            self.subprotocol.clone_from(&valid.subprotocol);
                            self.set_open(Opened { subprotocol: valid.subprotocol, response_headers: valid.headers });
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

    /// Parses frames from `data` up to the next event, keeping the rest for later.
    fn feed_frames(&mut self, data: &[u8]) {
        if !self.input.is_empty() {
            self.input.extend_from_slice(data);
            return;
        }
        let used = self.read_frames(data);
        if used < data.len() && matches!(self.phase, Phase::Open | Phase::CloseSent) {
            self.input.extend_from_slice(&data[used..]);
        }
    }

    /// Parses kept input up to the next event.
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
    pub fn receive_eof(&mut self) {
        match self.phase {
            Phase::ServerReadingRequest(_) | Phase::ServerDeciding(_) | Phase::ClientAwaitingResponse(_) => {
                self.handshake_failed(HandshakeError::TransportClosed);
            }
            Phase::Open | Phase::CloseSent => {
                self.close_abnormally(ConnectionError::TransportClosed, "");
            }
            Phase::Closed { .. } => {
                self.phase = Phase::Closed { await_eof: false };
                self.timers.clear_close();
            }
        }
    }

    /// Reports that the transport failed (a read or write error, a reset): nothing
    /// more can be received or sent. Queued output is discarded and the connection
    /// is finished at once.
    pub fn transport_lost(&mut self) {
        if !matches!(self.phase, Phase::Closed { .. }) {
            self.receive_eof();
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

    /// The next event, if any. Drain until `None` after every call that changes state.
    ///
    /// Received bytes are parsed as events are taken: one event's worth at a time, so
    /// that whatever the application sends in answer to an event is queued before
    /// the connection reacts to later input.
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.events.is_empty() && !self.input.is_empty() {
            self.parse_kept_input();
        }
        self.events.pop_front()
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

    // ----- time in ----------------------------------------------------------------

    /// The next instant at which [`handle_timeout`](Self::handle_timeout) has work to
    /// do, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Tells the connection the time. Call it whenever the driver wakes up (before
    /// feeding bytes or making calls) and when [`poll_timeout`](Self::poll_timeout)
    /// is reached; a call with nothing due only records the time. Time never goes
    /// backwards: an earlier `now` than a previous one is ignored.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.timers.set_now(now);
        if self.timers.handshake_expired() {
            if matches!(self.state(), State::Handshake) {
                self.handshake_failed(HandshakeError::Timeout);
            }
            self.timers.clear_handshake();
        }
        if self.timers.close_expired() {
            self.timers.clear_close();
            match self.phase {
                Phase::CloseSent => self.close_abnormally(ConnectionError::CloseTimeout, ""),
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
            match self.timers.keepalive_due() {
                timers::Keepalive::Idle => {}
                timers::Keepalive::SendPing => {
                    self.queue_control(OpCode::Ping, b"");
                    self.timers.ping_sent(self.config.keepalive_timeout);
                }
                timers::Keepalive::Dead => {
                    self.close_abnormally(ConnectionError::KeepaliveTimeout, "keepalive timeout")
                }
            }
        }
    }

    // ----- answering a request (server) -------------------------------------------

    /// Accepts the pending upgrade request: queues the 101 response and opens the
    /// connection (an [`Event::Open`] follows).
    pub fn accept(&mut self, accept: Accept) -> Result<(), LocalError> {
        let Phase::ServerDeciding(deciding) = &self.phase else {
            return Err(LocalError::NoPendingRequest);
        };
        if deciding.kind != RequestKind::Upgrade {
            return Err(LocalError::NotAnUpgrade);
        }
        if let Some(p) = &accept.subprotocol
            && !deciding.offered.contains(p)
        {
            return Err(LocalError::SubprotocolNotOffered(p.clone()));
        }
        let response = crate::handshake::response::switching_protocols(
            &deciding.accept,
            accept.subprotocol.as_deref(),
            &accept.headers,
        );
        let Phase::ServerDeciding(deciding) = std::mem::replace(&mut self.phase, Phase::Open) else {
            unreachable!("checked above")
        };
        let early = deciding.early;
        self.out.tail().put_slice(&response);
        self.subprotocol.clone_from(&accept.subprotocol);
        self.set_open(Opened { subprotocol: accept.subprotocol, response_headers: Default::default() });
        self.feed_frames(&early);
        Ok(())
    }

    /// Refuses the pending request with a 4xx or 5xx status and a plain-text
    /// reason. The connection is finished once the response is written.
    pub fn reject(&mut self, rejection: Rejection) -> Result<(), LocalError> {
        if !matches!(self.phase, Phase::ServerDeciding(_)) {
            return Err(LocalError::NoPendingRequest);
        }
        if !(rejection.status.is_client_error() || rejection.status.is_server_error()) {
            return Err(LocalError::InvalidRejectStatus(rejection.status.as_u16()));
        }
        let response = crate::handshake::response::refusal(rejection.status, &rejection.reason, &rejection.headers);
        self.out.tail().put_slice(&response);
        self.finish_handshake_phase();
        Ok(())
    }

    /// Answers the pending request with a plain HTTP response. The connection is
    /// finished once the response is written.
    pub fn respond(&mut self, response: HttpResponse) -> Result<(), LocalError> {
        let Phase::ServerDeciding(deciding) = &self.phase else {
            return Err(LocalError::NoPendingRequest);
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

    // ----- sending ----------------------------------------------------------------

    /// Queues a text message as one frame.
    pub fn send_text(&mut self, text: &str) -> Result<(), LocalError> {
        self.send_data(OpCode::Text, text.as_bytes(), None)
    }

    /// Queues a binary message as one frame.
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), LocalError> {
        self.send_data(OpCode::Binary, data, None)
    }

    /// Queues a message as one frame. On a server, a large payload is queued by
    /// reference, without a copy.
    pub fn send(&mut self, message: &Message) -> Result<(), LocalError> {
        let shared = match message {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
        };
        self.send_data(message.opcode(), shared, Some(shared))
    }

    /// Queues a frame encoded once for many connections (server only), by reference.
    pub fn send_shared(&mut self, frame: &SharedFrame) -> Result<(), LocalError> {
        if self.role == Role::Client {
            return Err(LocalError::SharedFrameFromClient);
        }
        self.check_can_queue()?;
        self.out.push_chunk(frame.as_bytes().clone());
        Ok(())
    }

    /// Queues a ping (payload up to 125 bytes).
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), LocalError> {
        self.send_control(OpCode::Ping, payload)
    }

    /// Queues an unsolicited pong (payload up to 125 bytes), a one-way heartbeat.
    pub fn pong(&mut self, payload: &[u8]) -> Result<(), LocalError> {
        self.send_control(OpCode::Pong, payload)
    }

    /// Starts the close handshake: queues a close frame with `code` and `reason` (up
    /// to 123 bytes). [`Event::Closed`] follows when the peer answers, or when the
    /// close timeout passes.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), LocalError> {
        if !code.is_sendable() {
            return Err(LocalError::InvalidCloseCode(code.0));
        }
        if reason.len() > MAX_CONTROL_PAYLOAD - 2 {
            return Err(LocalError::CloseReasonTooLong);
        }
        self.check_can_send()?;
        self.start_close(code, reason);
        Ok(())
    }

    /// Sends our close frame and waits for the peer's, up to the close timeout.
    fn start_close(&mut self, code: CloseCode, reason: &str) {
        self.queue_close(code, reason);
        self.phase = Phase::CloseSent;
        self.timers.arm_close(self.config.close_timeout);
        self.pending_close = Some((code, reason.to_owned()));
    }

    fn check_can_send(&self) -> Result<(), LocalError> {
        match self.phase {
            Phase::Open => Ok(()),
            Phase::CloseSent => Err(LocalError::Closing),
            Phase::Closed { .. } => Err(LocalError::Closed),
            _ => Err(LocalError::NotOpen),
        }
    }

    /// Like `check_can_send`, for data: enforces the hard backlog bound, closing a
    /// peer that reads too slowly.
    fn check_can_queue(&mut self) -> Result<(), LocalError> {
        self.check_can_send()?;
        if self.out.remaining() > self.config.max_backlog {
            self.evicted = true;
            self.start_close(CloseCode::POLICY_VIOLATION, SLOW_CONSUMER_REASON);
            return Err(LocalError::Backlogged);
        }
        Ok(())
    }

    fn send_data(&mut self, opcode: OpCode, payload: &[u8], shared: Option<&Bytes>) -> Result<(), LocalError> {
        self.check_can_queue()?;
        match (self.role, shared) {
            (Role::Server, Some(bytes)) if bytes.len() >= ZERO_COPY_MIN => {
                encode_header_into(self.out.tail(), true, opcode, bytes.len(), None);
                self.out.push_chunk(bytes.clone());
            }
            _ => {
                let mask = self.next_mask();
                encode_frame(self.out.tail(), true, opcode, payload, mask);
            }
        }
        Ok(())
    }

    fn send_control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), LocalError> {
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(LocalError::ControlPayloadTooLong);
        }
        self.check_can_send()?;
        self.queue_control(opcode, payload);
        Ok(())
    }

    fn next_mask(&mut self) -> Option<[u8; 4]> {
        self.masks.as_mut().map(|m| m.next_mask())
    }

    fn queue_control(&mut self, opcode: OpCode, payload: &[u8]) {
        let mask = self.next_mask();
        encode_frame(self.out.tail(), true, opcode, payload, mask);
    }

    fn queue_close(&mut self, code: CloseCode, reason: &str) {
        let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
        let len = if code == CloseCode::NO_STATUS {
            0
        } else {
            payload[..2].copy_from_slice(&code.0.to_be_bytes());
            let reason = truncate_utf8(reason, MAX_CONTROL_PAYLOAD - 2);
            payload[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
            2 + reason.len()
        };
        self.queue_control(OpCode::Close, &payload[..len]);
    }

    // ----- transitions ------------------------------------------------------------

    fn request_read(&mut self, head: &[u8], early: BytesMut) {
        match Request::parse(head, self.config.max_headers) {
            Ok(request) => {
                let key = request.header("sec-websocket-key").map(|k| accept_key(k.as_bytes())).unwrap_or_default();
                self.phase = Phase::ServerDeciding(Box::new(Deciding {
                    kind: request.kind().clone(),
                    accept: key,
                    offered: request.subprotocols().to_vec(),
                    head_request: request.method() == http::Method::HEAD,
                    early,
                }));
                self.events.push_back(match request.kind() {
                    RequestKind::Upgrade => Event::UpgradeRequest(Box::new(request)),
                    RequestKind::Http => Event::HttpRequest(Box::new(request)),
                });
            }
            Err(HandshakeError::Refused { status, reason }) => self.refuse_request(status, &reason),
            Err(other) => self.handshake_failed(other),
        }
    }

    /// Refuses a request the core itself found invalid.
    fn refuse_request(&mut self, status: u16, reason: &str) {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        let response = crate::handshake::response::refusal(code, reason, &http::HeaderMap::new());
        self.out.tail().put_slice(&response);
        self.handshake_failed(HandshakeError::Refused { status, reason: reason.to_owned() });
    }

    fn handshake_failed(&mut self, error: HandshakeError) {
        self.events.push_back(Event::HandshakeFailed(error));
        self.finish_handshake_phase();
    }

    fn finish_handshake_phase(&mut self) {
        self.phase = Phase::Closed { await_eof: false };
        self.timers.clear_handshake();
        if self.out.has_remaining() {
            self.timers.closed(Some(self.config.close_timeout));
        }
    }

    fn set_open(&mut self, opened: Opened) {
        self.phase = Phase::Open;
        self.timers.opened(self.timers.now(), self.config.keepalive_interval);
        self.events.push_back(Event::Open(Box::new(opened)));
    }

    /// Ends the connection because of a protocol error: the close frame saying why
    /// is queued (unless we already sent one) and the transport is to be closed
    /// without waiting for the peer (§7.1.7).
    fn fail(&mut self, error: ProtocolError) {
        let code = error.close_code();
        let reason = error.to_string();
        if matches!(self.phase, Phase::Open) {
            self.queue_close(code, &reason);
        }
        self.end(
            Closed { code, reason, initiator: Initiator::Local, error: Some(ConnectionError::Protocol(error)) },
            false,
        );
    }

    /// Ends the connection without a close handshake (timeouts, lost transport).
    fn close_abnormally(&mut self, error: ConnectionError, reason: &str) {
        let initiator = match error {
            ConnectionError::TransportClosed => Initiator::Peer,
            _ => Initiator::Local,
        };
        let (code, reason) = match (error, self.pending_close.take()) {
            (ConnectionError::CloseTimeout, Some((code, reason))) => (code, reason),
            _ => (CloseCode::ABNORMAL, reason.to_owned()),
        };
        self.end(Closed { code, reason, initiator, error: Some(error) }, false);
    }

    /// A close frame arrived from the peer.
    fn close_received(&mut self, code: CloseCode, reason: &str) {
        let await_eof = self.role == Role::Client;
        match self.phase {
            Phase::Open => {
                // Echo the code, as peers expect (§5.5.1); no code gets no code.
                self.queue_close(code, "");
                let closed = Closed { code, reason: reason.to_owned(), initiator: Initiator::Peer, error: None };
                self.end(closed, await_eof);
            }
            Phase::CloseSent => {
                let (code, reason) = self.pending_close.take().unwrap_or((code, reason.to_owned()));
                self.end(Closed { code, reason, initiator: Initiator::Local, error: None }, await_eof);
            }
            _ => {}
        }
    }

    fn end(&mut self, mut closed: Closed, await_eof: bool) {
        if matches!(closed.error, Some(ConnectionError::CloseTimeout | ConnectionError::KeepaliveTimeout)) {
            // The peer stopped answering: what it has not read, it will not read.
            self.out = Outgoing::default();
        }
        if self.evicted {
            closed.error = Some(ConnectionError::SlowConsumer);
        }
        self.phase = Phase::Closed { await_eof };
        self.reader = Reader::default();
        self.input = BytesMut::new();
        // Lingers for the output (a close frame, say) or, on a client, the server's
        // EOF; at most the close timeout.
        let linger = await_eof || self.out.has_remaining();
        self.timers.closed(linger.then_some(self.config.close_timeout));
        self.events.push_back(Event::Closed(closed));
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

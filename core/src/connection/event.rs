//! What a connection reports to its driver, and the errors of its API.

use bytes::Bytes;
use http::HeaderMap;
use std::fmt;

use crate::{CloseCode, HandshakeError, Request, Utf8Bytes};

/// Which end of the connection this core plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The end that opened the connection; masks every frame it sends.
    Client,
    /// The end that accepted it; sends unmasked frames.
    Server,
}

/// Something that happened on a connection, taken with
/// [`Connection::poll_event`](crate::Connection::poll_event).
#[derive(Debug, Clone)]
pub enum Event {
    /// (Server) A valid upgrade request arrived. Answer with
    /// [`accept`](crate::Connection::accept), [`reject`](crate::Connection::reject)
    /// or [`respond`](crate::Connection::respond). (Boxed, like the other rare
    /// variants, so that the events of every message stay small.)
    UpgradeRequest(Box<Request>),
    /// (Server) A request arrived that does not try to upgrade. Answer with
    /// [`respond`](crate::Connection::respond) (or
    /// [`reject`](crate::Connection::reject)).
    HttpRequest(Box<Request>),
    /// The opening handshake completed; messages may flow.
    Open(Box<Opened>),
    /// The opening handshake failed. After the pending bytes are written (a server's
    /// error response), the transport is to be closed.
    HandshakeFailed(HandshakeError),
    /// A complete text message.
    Text(Utf8Bytes),
    /// A complete binary message.
    Binary(Bytes),
    /// A message over the size limits went by unread (only with
    /// [`Oversized::Skip`](crate::Oversized::Skip); by default such a message
    /// closes the connection with 1009).
    Skipped(SkippedMessage),
    /// A ping arrived. While the connection is open, the pong answering it was
    /// already queued; after our close frame nothing more is sent, so a ping
    /// arriving then goes unanswered (our close frame tells the peer why).
    Ping(Bytes),
    /// A pong arrived.
    Pong(Bytes),
    /// The WebSocket connection is closed; this is the last event. Write what
    /// [`poll_transmit`](crate::Connection::poll_transmit) still holds, then close
    /// the transport once [`is_finished`](crate::Connection::is_finished).
    /// (Boxed: it comes once per connection, and inline it would make every
    /// event, a message's included, 24 bytes larger.)
    Closed(Box<Closed>),
}

/// A message skipped for its size: what kind it was and how big.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SkippedMessage {
    /// Whether it was a text message (else binary).
    pub text: bool,
    /// Its size in bytes, all frames together. For a compressed message
    /// (permessage-deflate) skipped because it inflated past the limit, it is not
    /// inflated further: at least the limit plus one, as its frames may be
    /// smaller than the limit.
    pub len: u64,
}

/// The result of a completed opening handshake.
#[derive(Debug, Clone, Default)]
pub struct Opened {
    /// The subprotocol agreed on, if any.
    pub subprotocol: Option<String>,
    /// (Client) The headers of the server's 101 response.
    pub response_headers: HeaderMap,
    /// The permessage-deflate parameters agreed, if compression was negotiated.
    pub deflate: Option<crate::deflate::DeflateParams>,
}

/// Which end started the closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Initiator {
    /// This end: the application, a timeout, or a protocol error this end detected.
    Local,
    /// The peer: it sent a close frame first, or the transport was lost.
    Peer,
}

/// How a WebSocket connection ended.
///
/// `code` and `reason` follow RFC 6455 §7.1.5 and §7.1.6: they are what the peer
/// said. What this end said, if it sent a close frame, is in `sent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// _The WebSocket Connection Close Code_: the code of the close frame received
    /// from the peer; 1005 ([`CloseCode::NO_STATUS`]) if that frame carried no code;
    /// 1006 ([`CloseCode::ABNORMAL`]) if no close frame arrived (a protocol error,
    /// a timeout, a lost transport, a slow consumer).
    pub code: CloseCode,
    /// _The WebSocket Connection Close Reason_: the reason in the close frame
    /// received; empty if none arrived.
    pub reason: String,
    /// Which end started the closing.
    pub initiator: Initiator,
    /// The close frame this end sent, if it sent one: its own close, the echo of
    /// the peer's, or the frame that failed the connection (1002, 1007, 1008, 1009).
    pub sent: Option<CloseFrame>,
    /// What went wrong, if the closing was not a clean close handshake.
    pub error: Option<ConnectionError>,
}

impl Closed {
    /// Whether both ends exchanged close frames.
    pub fn is_clean(&self) -> bool {
        self.error.is_none()
    }

    /// The code that best describes the closing from this end's point of view: the
    /// peer's code if it sent a close frame, else the code of the close frame this
    /// end sent, else 1006. For logs and metrics; `code` is the RFC's value.
    pub fn effective_code(&self) -> CloseCode {
        match (&self.sent, self.code) {
            (Some(sent), CloseCode::ABNORMAL) => sent.code,
            _ => self.code,
        }
    }
}

/// The code and reason of a close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code; [`CloseCode::NO_STATUS`] for a close frame without one.
    pub code: CloseCode,
    /// The reason (empty if none).
    pub reason: String,
}

/// Why a connection closed without a clean close handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionError {
    /// The peer broke the protocol; we sent the close code that says how.
    Protocol(ProtocolError),
    /// The peer sent nothing within the keepalive timeout after a ping.
    KeepaliveTimeout,
    /// The peer did not answer our close frame in time.
    CloseTimeout,
    /// The transport ended (EOF, reset) without a close handshake.
    TransportClosed,
    /// The peer read too slowly: its outgoing backlog was over
    /// [`Config::max_backlog`](crate::Config::max_backlog) when a message was to be
    /// queued, so the connection was failed with a 1008 close frame (reason
    /// [`SLOW_CONSUMER_REASON`](crate::SLOW_CONSUMER_REASON)).
    SlowConsumer,
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::KeepaliveTimeout => f.write_str("the peer stopped answering keepalive pings"),
            Self::CloseTimeout => f.write_str("the peer did not complete the close handshake in time"),
            Self::TransportClosed => f.write_str("the connection was lost without a close handshake"),
            Self::SlowConsumer => f.write_str("the peer read too slowly (outgoing backlog over the limit)"),
        }
    }
}

impl std::error::Error for ConnectionError {}

/// A protocol violation by the peer, and the close code it earns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// RSV bits set without an extension that defines them.
    ReservedBits,
    /// An opcode RFC 6455 reserves.
    ReservedOpcode(u8),
    /// A client sent an unmasked frame.
    UnmaskedFrame,
    /// A server sent a masked frame.
    MaskedFrame,
    /// A control frame with FIN clear.
    FragmentedControl,
    /// A control frame payload over 125 bytes.
    ControlTooLong,
    /// A continuation frame with no message to continue.
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message was unfinished.
    ExpectedContinuation,
    /// A 64-bit length with the top bit set.
    InvalidLength,
    /// A close frame with a one-byte payload.
    TruncatedClose,
    /// A close frame with a code that may not be sent.
    InvalidCloseCode(u16),
    /// Text (or a close reason) that is not UTF-8.
    InvalidUtf8,
    /// A frame larger than the configured limit.
    FrameTooLarge,
    /// A message larger than the configured limit (for a compressed message: once
    /// inflated).
    MessageTooLarge,
    /// A compressed message (permessage-deflate) whose data is not a valid
    /// DEFLATE stream.
    InvalidCompressedData,
}

impl ProtocolError {
    /// The close code sent for this violation.
    pub fn close_code(self) -> CloseCode {
        match self {
            Self::InvalidUtf8 | Self::InvalidCompressedData => CloseCode::INVALID_PAYLOAD,
            Self::FrameTooLarge | Self::MessageTooLarge => CloseCode::MESSAGE_TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReservedBits => f.write_str("reserved bits set"),
            Self::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            Self::UnmaskedFrame => f.write_str("unmasked client frame"),
            Self::MaskedFrame => f.write_str("masked server frame"),
            Self::FragmentedControl => f.write_str("fragmented control frame"),
            Self::ControlTooLong => f.write_str("control frame over 125 bytes"),
            Self::UnexpectedContinuation => f.write_str("continuation without a message"),
            Self::ExpectedContinuation => f.write_str("new message inside a fragmented one"),
            Self::InvalidLength => f.write_str("invalid payload length"),
            Self::TruncatedClose => f.write_str("one-byte close payload"),
            Self::InvalidCloseCode(c) => write!(f, "invalid close code {c}"),
            Self::InvalidUtf8 => f.write_str("invalid UTF-8"),
            Self::FrameTooLarge => f.write_str("frame too large"),
            Self::MessageTooLarge => f.write_str("message too large"),
            Self::InvalidCompressedData => f.write_str("invalid compressed data"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// A call the application made that the connection cannot carry out in its state:
/// a misuse of the API, or a call that raced with the end of the connection (drain
/// [`Event`]s to learn how it ended). Nothing was queued and the state did not
/// change. Conditions the peer causes are never reported here: they end the
/// connection and are reported in [`Event::Closed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalError {
    /// The opening handshake has not completed.
    NotOpen,
    /// A close frame was already sent: no more frames may follow it.
    Closing,
    /// The connection is closed; [`Event::Closed`] says why (for example a peer
    /// reading too slowly, [`ConnectionError::SlowConsumer`]).
    Closed,
    /// There is no request waiting for an answer.
    NoPendingRequest,
    /// `accept` was called for a request that is not an upgrade.
    NotAnUpgrade,
    /// The subprotocol was not among those the client offered.
    SubprotocolNotOffered(String),
    /// A refusal must use a 4xx or 5xx status.
    InvalidRejectStatus(u16),
    /// A plain HTTP response cannot have a 1xx status (it ends the connection).
    InvalidResponseStatus(u16),
    /// This close code may not be sent.
    InvalidCloseCode(u16),
    /// A close reason must fit in 123 bytes.
    CloseReasonTooLong,
    /// A ping or pong payload must fit in 125 bytes.
    ControlPayloadTooLong,
    /// Shared frames are unmasked; only server connections may send them.
    SharedFrameFromClient,
}

impl fmt::Display for LocalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotOpen => f.write_str("the opening handshake has not completed"),
            Self::Closing => f.write_str("the connection is closing"),
            Self::Closed => f.write_str("the connection is closed"),
            Self::NoPendingRequest => f.write_str("no request is waiting for an answer"),
            Self::NotAnUpgrade => f.write_str("the request is not a WebSocket upgrade"),
            Self::SubprotocolNotOffered(p) => write!(f, "subprotocol {p:?} was not offered"),
            Self::InvalidRejectStatus(s) => write!(f, "status {s} is not a 4xx or 5xx"),
            Self::InvalidResponseStatus(s) => write!(f, "status {s} cannot answer a plain HTTP request"),
            Self::InvalidCloseCode(c) => write!(f, "close code {c} may not be sent"),
            Self::CloseReasonTooLong => f.write_str("close reason longer than 123 bytes"),
            Self::ControlPayloadTooLong => f.write_str("control payload longer than 125 bytes"),
            Self::SharedFrameFromClient => f.write_str("a client cannot send shared (unmasked) frames"),
        }
    }
}

impl std::error::Error for LocalError {}

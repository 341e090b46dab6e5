//! The error type of the async API.

use chinwag_core::{HandshakeError, LocalError};
use std::{fmt, io};

/// Why an operation on a WebSocket failed.
#[derive(Debug)]
pub enum Error {
    /// The opening handshake failed.
    Handshake(HandshakeError),
    /// The call is not allowed in the connection's state (for example sending after
    /// close).
    Local(LocalError),
    /// The transport failed.
    Io(io::Error),
    /// This call found the peer's outgoing backlog over
    /// [`Config::max_backlog`](chinwag_core::Config::max_backlog): the peer reads too
    /// slowly, so the message was not queued and the connection was failed with a
    /// 1008 close frame. Returned once, to the call that found it; later calls get
    /// [`LocalError::Closed`], and the close is reported as
    /// [`ConnectionError::SlowConsumer`](chinwag_core::ConnectionError::SlowConsumer).
    SlowConsumer,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Handshake(e) => fmt::Display::fmt(e, f),
            Self::Local(e) => fmt::Display::fmt(e, f),
            Self::Io(e) => write!(f, "transport error: {e}"),
            Self::SlowConsumer => f.write_str("the peer reads too slowly (outgoing backlog over the limit): closed"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Handshake(e) => Some(e),
            Self::Local(e) => Some(e),
            Self::Io(e) => Some(e),
            Self::SlowConsumer => None,
        }
    }
}

impl From<HandshakeError> for Error {
    fn from(e: HandshakeError) -> Self {
        Self::Handshake(e)
    }
}

impl From<LocalError> for Error {
    fn from(e: LocalError) -> Self {
        Self::Local(e)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

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
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Handshake(e) => fmt::Display::fmt(e, f),
            Self::Local(e) => fmt::Display::fmt(e, f),
            Self::Io(e) => write!(f, "transport error: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Handshake(e) => Some(e),
            Self::Local(e) => Some(e),
            Self::Io(e) => Some(e),
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

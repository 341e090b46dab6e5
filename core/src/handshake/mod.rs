//! The opening handshake (RFC 6455 §4): reading and validating the client's upgrade
//! request, writing the server's response, building the client's request and
//! validating the server's response.
//!
//! A [`Connection`](crate::Connection) runs these steps itself; they are public so
//! that a program whose HTTP server already parsed the request (hyper, axum, ...) can
//! validate it with [`validate_upgrade`] and write [`accept_key`] in its own response,
//! then drive the frames with [`Connection::open`](crate::Connection::open).
//!
//! [`forwarded`] finds a request's client address behind trusted reverse proxies.

mod client;
pub mod forwarded;
mod head;
mod origin;
mod request;
pub(crate) mod response;

pub(crate) use client::ResponseCheck;
pub use client::{ClientRequest, InvalidRequest};
pub use forwarded::{Cidr, ClientAddress, InvalidCidr, TrustedProxies, client_address};
pub(crate) use head::HeadReader;
pub use origin::{OriginPolicy, OriginRefused};
pub use request::{Request, RequestKind, validate_upgrade};
pub use response::{Accept, HttpResponse, Rejection};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};

/// The GUID that RFC 6455 §1.3 appends to the client's key.
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Computes `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (base64 of the SHA-1 of
/// the key followed by the GUID).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(sha1.finalize())
}

/// Encodes 16 random bytes as a `Sec-WebSocket-Key`.
pub fn client_key(random: [u8; 16]) -> String {
    BASE64.encode(random)
}

/// Why an opening handshake did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// (Server) The request was refused with this HTTP status; the response explains
    /// why in its plain-text body. Produced both for invalid requests and for
    /// [`Connection::reject`](crate::Connection::reject).
    Refused {
        /// The status sent.
        status: u16,
        /// The reason sent as the body.
        reason: String,
    },
    /// (Client) The server answered with a status other than 101.
    UnexpectedStatus(u16),
    /// (Client) The server's 101 response broke RFC 6455 §4.1 in the way described.
    InvalidResponse(&'static str),
    /// The peer did not finish its part of the handshake in time.
    Timeout,
    /// The transport closed before the handshake finished.
    TransportClosed,
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused { status, reason } => write!(f, "handshake refused with {status}: {reason}"),
            Self::UnexpectedStatus(s) => write!(f, "server answered {s} instead of 101"),
            Self::InvalidResponse(why) => write!(f, "invalid handshake response: {why}"),
            Self::Timeout => f.write_str("handshake timed out"),
            Self::TransportClosed => f.write_str("connection closed during the handshake"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// Whether a comma-separated header list (`Connection: keep-alive, Upgrade`) holds
/// `token`, compared without regard to ASCII case, across all lines of the header.
pub(crate) fn has_token(headers: &http::HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|v| v.to_str().map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))).unwrap_or(false))
}

/// All items of a comma-separated header list, across all its lines, trimmed and
/// non-empty.
pub(crate) fn list_items(headers: &http::HeaderMap, name: http::header::HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_sample_key() {
        // RFC 6455 §1.3.
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}

//! Close codes and close frame payloads (RFC 6455 §5.5.1, §7.4).

use std::fmt;

/// A close status code.
///
/// Any `u16` can be held, so that codes received from a peer can be reported; which
/// codes may be *sent* is decided by [`CloseCode::is_sendable`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: the endpoint received a kind of data it cannot accept.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1005: no status code was present in the close frame. Never sent.
    pub const NO_STATUS: Self = Self(1005);
    /// 1006: the connection was lost without a close frame. Never sent.
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: a text message (or close reason) was not valid UTF-8.
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: a message violated the endpoint's policy.
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a frame or message was larger than the endpoint accepts.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: Self = Self(1010);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1012: the service is restarting.
    pub const SERVICE_RESTART: Self = Self(1012);
    /// 1013: try again later (the server is overloaded).
    pub const TRY_AGAIN_LATER: Self = Self(1013);
    /// 1015: the TLS handshake failed. Never sent.
    pub const TLS_FAILURE: Self = Self(1015);

    /// Whether this code may appear in a close frame on the wire.
    ///
    /// Allowed: 1000–1003, 1007–1014 (1012–1014 were registered with IANA after RFC
    /// 6455 and are sent by widely used servers) and the application ranges
    /// 3000–4999. Everything else, including 1005, 1006 and 1015, is rejected: a peer
    /// that sends one gets a 1002 close.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloseCode({})", self.0)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        Self(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

/// Why a close frame payload received from a peer is unacceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadClosePayload {
    /// One byte: too short for a code, and a reason needs a code.
    Truncated,
    /// A code that may not be sent.
    Code(u16),
    /// A reason that is not UTF-8.
    Reason,
}

/// Parses a received close payload into its code (1005 when absent) and reason.
pub(crate) fn parse_close_payload(payload: &[u8]) -> Result<(CloseCode, &str), BadClosePayload> {
    match payload {
        [] => Ok((CloseCode::NO_STATUS, "")),
        [_] => Err(BadClosePayload::Truncated),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_sendable() {
                return Err(BadClosePayload::Code(code.0));
            }
            let reason = simdutf8::basic::from_utf8(reason).map_err(|_| BadClosePayload::Reason)?;
            Ok((code, reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sendable_ranges() {
        for code in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999] {
            assert!(CloseCode(code).is_sendable(), "{code}");
        }
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
            assert!(!CloseCode(code).is_sendable(), "{code}");
        }
    }

    #[test]
    fn payloads() {
        assert_eq!(parse_close_payload(&[]), Ok((CloseCode::NO_STATUS, "")));
        assert_eq!(parse_close_payload(&[3]), Err(BadClosePayload::Truncated));
        assert_eq!(parse_close_payload(&[0x03, 0xE8, b'o', b'k']), Ok((CloseCode::NORMAL, "ok")));
        assert_eq!(parse_close_payload(&[0x03, 0xED]), Err(BadClosePayload::Code(1005)));
        assert_eq!(parse_close_payload(&[0x03, 0xE8, 0xFF]), Err(BadClosePayload::Reason));
    }
}

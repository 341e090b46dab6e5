//! The client's side of the handshake: the request it sends (§4.1) and the checks on
//! the server's response.

use bytes::{BufMut, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Uri, header};

use super::{HandshakeError, accept_key, client_key, has_token, list_items};
use crate::deflate::{DeflateConfig, DeflateParams};

/// What a client asks for when it opens a connection.
#[derive(Debug, Clone)]
pub struct ClientRequest {
    uri: Uri,
    subprotocols: Vec<String>,
    headers: HeaderMap,
    deflate: Option<DeflateConfig>,
}

/// Why a client request cannot be built: a URL that is not `ws://` or `wss://` with
/// a host, or a subprotocol name that is not an HTTP token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRequest(pub String);

impl std::fmt::Display for InvalidRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid WebSocket request: {}", self.0)
    }
}

impl std::error::Error for InvalidRequest {}

/// Whether `port` is a TCP port written as digits only (no sign), 1 to 65535.
fn valid_port(port: &str) -> bool {
    port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p != 0)
}

/// Whether `s` is an HTTP token (RFC 9110 §5.6.2), as subprotocol names must be
/// (RFC 6455 §4.1).
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl ClientRequest {
    /// A request for a `ws://` or `wss://` URL (the scheme in any case, as URL
    /// schemes are case-insensitive). The host must not be empty, an IPv6 literal
    /// must be a valid IPv6 address (`ws://[::1]:9001/`), and a port, if given, a
    /// number from 1 to 65535. User information (`user:password@`) is accepted and
    /// never sent: send credentials in a header.
    pub fn new(url: &str) -> Result<Self, InvalidRequest> {
        let uri: Uri = url.parse().map_err(|e| InvalidRequest(format!("{url}: {e}")))?;
        if !uri.scheme_str().is_some_and(|s| s.eq_ignore_ascii_case("ws") || s.eq_ignore_ascii_case("wss")) {
            return Err(InvalidRequest(format!("{url}: the scheme must be ws or wss")));
        }
        // User information (`user:password@`) is not part of RFC 6455's ws-URI; it
        // is accepted as browsers accept it, and never sent (not even in Host).
        let authority = uri.authority().map_or("", |a| a.as_str());
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let host = uri.host().unwrap_or_default();
        match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(literal) if literal.parse::<std::net::Ipv6Addr>().is_err() => {
                return Err(InvalidRequest(format!("{url}: {host} is not an IPv6 address")));
            }
            Some(_) => {}
            None if host.is_empty() || host.contains(['[', ']']) => {
                return Err(InvalidRequest(format!("{url}: no valid host")));
            }
            None => {}
        }
        // The port as written (http's parser leaves a port that is not a number
        // out rather than refusing it): empty means the scheme's default.
        let after_host = match authority.find(']') {
            Some(end) => &authority[end + 1..],
            None => authority.find(':').map_or("", |at| &authority[at..]),
        };
        match after_host.strip_prefix(':') {
            None if !after_host.is_empty() => {
                return Err(InvalidRequest(format!("{url}: {after_host:?} follows the host")));
            }
            Some(port) if !port.is_empty() && !valid_port(port) => {
                return Err(InvalidRequest(format!("{url}: the port {port} is not a number from 1 to 65535")));
            }
            _ => {}
        }
        Ok(Self { uri, subprotocols: Vec::new(), headers: HeaderMap::new(), deflate: None })
    }

    /// Offers a subprotocol (call again to offer several, most preferred first). The
    /// name must be an HTTP token.
    pub fn with_subprotocol(mut self, name: impl Into<String>) -> Result<Self, InvalidRequest> {
        let name = name.into();
        if !is_token(&name) {
            return Err(InvalidRequest(format!("subprotocol {name:?} is not a token")));
        }
        self.subprotocols.push(name);
        Ok(self)
    }

    /// Offers permessage-deflate (RFC 7692) with these settings
    /// ([`DeflateConfig::offer`]); the server's answer is checked, and the
    /// parameters it agreed to are in [`Opened::deflate`](crate::Opened::deflate).
    pub fn with_deflate(mut self, config: DeflateConfig) -> Self {
        self.deflate = Some(config);
        self
    }

    /// The permessage-deflate settings offered, if any.
    pub fn deflate(&self) -> Option<&DeflateConfig> {
        self.deflate.as_ref()
    }

    /// Adds a header (for example `Origin`, `Cookie` or `Authorization`).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// The URL.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// Whether the URL asks for TLS (`wss`).
    pub fn is_tls(&self) -> bool {
        self.uri.scheme_str().is_some_and(|s| s.eq_ignore_ascii_case("wss"))
    }

    /// The host to connect to.
    pub fn host(&self) -> &str {
        self.uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']')
    }

    /// The port to connect to (80 or 443 unless the URL names one).
    pub fn port(&self) -> u16 {
        self.uri.port_u16().unwrap_or(if self.is_tls() { 443 } else { 80 })
    }

    /// The request bytes, and the check of the response to it.
    pub(crate) fn encode(&self, key_bytes: [u8; 16]) -> (BytesMut, ResponseCheck) {
        let key = client_key(key_bytes);
        // `ws://host?x` has an empty path, which is "/" on the wire (RFC 6455 §3).
        let path = match self.uri.path() {
            "" => "/",
            path => path,
        };
        let query = self.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        let target = format!("{path}{query}");
        let authority = self.uri.authority().map_or("", |a| a.as_str());
        // The Host header never carries credentials.
        let host = authority.rsplit('@').next().unwrap_or(authority);
        let mut out = BytesMut::with_capacity(256);
        for part in [
            "GET ",
            &target,
            " HTTP/1.1\r\nHost: ",
            host,
            "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ",
            &key,
            "\r\nSec-WebSocket-Version: 13\r\n",
        ] {
            out.put_slice(part.as_bytes());
        }
        if !self.subprotocols.is_empty() {
            out.put_slice(b"Sec-WebSocket-Protocol: ");
            out.put_slice(self.subprotocols.join(", ").as_bytes());
            out.put_slice(b"\r\n");
        }
        if let Some(deflate) = &self.deflate {
            out.put_slice(b"Sec-WebSocket-Extensions: ");
            out.put_slice(deflate.offer().as_bytes());
            out.put_slice(b"\r\n");
        }
        for (name, value) in &self.headers {
            out.put_slice(name.as_str().as_bytes());
            out.put_slice(b": ");
            out.put_slice(value.as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"\r\n");
        let check = ResponseCheck {
            accept: accept_key(key.as_bytes()),
            offered: self.subprotocols.clone(),
            deflate: self.deflate,
        };
        (out, check)
    }
}

/// What the server's response must contain.
#[derive(Debug, Clone)]
pub(crate) struct ResponseCheck {
    accept: String,
    offered: Vec<String>,
    deflate: Option<DeflateConfig>,
}

/// A valid 101 response, as the client sees it.
#[derive(Debug, Clone)]
pub(crate) struct ValidResponse {
    pub(crate) subprotocol: Option<String>,
    pub(crate) headers: HeaderMap,
    pub(crate) deflate: Option<DeflateParams>,
}

impl ResponseCheck {
    /// The permessage-deflate settings offered, if any.
    pub(crate) fn deflate_config(&self) -> Option<DeflateConfig> {
        self.deflate
    }

    /// Parses and checks a complete response head (§4.1, the client's checks).
    pub(crate) fn check(&self, head: &[u8], max_headers: usize) -> Result<ValidResponse, HandshakeError> {
        let invalid = HandshakeError::InvalidResponse;
        let mut slots = vec![httparse::EMPTY_HEADER; max_headers];
        let mut parsed = httparse::Response::new(&mut slots);
        match parsed.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) | Err(_) => return Err(invalid("malformed HTTP response")),
        }
        let status = parsed.code.unwrap_or_default();
        if status != 101 {
            return Err(HandshakeError::UnexpectedStatus(status));
        }
        if parsed.version != Some(1) {
            return Err(invalid("a 101 response must be HTTP/1.1"));
        }
        let mut headers = HeaderMap::with_capacity(parsed.headers.len());
        for h in parsed.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| invalid("invalid header name"))?;
            let value = HeaderValue::from_bytes(h.value).map_err(|_| invalid("invalid header value"))?;
            headers.append(name, value);
        }
        // §4.1: the value must be "websocket" itself, not a list that contains it.
        let mut upgrades = headers.get_all(header::UPGRADE).iter();
        match (upgrades.next(), upgrades.next()) {
            (Some(v), None) if v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket") => {}
            _ => return Err(invalid("missing Upgrade: websocket")),
        }
        if !has_token(&headers, header::CONNECTION, "upgrade") {
            return Err(invalid("missing Connection: Upgrade"));
        }
        let mut accepts = headers.get_all(header::SEC_WEBSOCKET_ACCEPT).iter();
        match (accepts.next(), accepts.next()) {
            (Some(v), None) if v.as_bytes() == self.accept.as_bytes() => {}
            _ => return Err(invalid("wrong or missing Sec-WebSocket-Accept")),
        }
        let deflate = match &self.deflate {
            None if !list_items(&headers, header::SEC_WEBSOCKET_EXTENSIONS).is_empty() => {
                return Err(invalid("the server chose an extension that was not offered"));
            }
            None => None,
            Some(config) => crate::deflate::check_response(
                headers.get_all(header::SEC_WEBSOCKET_EXTENSIONS).iter().map(|v| v.as_bytes()),
                config,
            )
            .map_err(invalid)?,
        };
        let mut chosen = list_items(&headers, header::SEC_WEBSOCKET_PROTOCOL);
        let subprotocol = match chosen.len() {
            0 => None,
            1 if self.offered.contains(&chosen[0]) => chosen.pop(),
            _ => return Err(invalid("the server chose a subprotocol that was not offered")),
        };
        Ok(ValidResponse { subprotocol, headers, deflate })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(extra: &str, accept: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
        )
    }

    #[test]
    fn request_bytes() {
        let req =
            ClientRequest::new("ws://user:pw@example.com:8080/chat?x=1").unwrap().with_subprotocol("chat").unwrap();
        let (bytes, _) = req.encode(*b"the sample nonce");
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with("GET /chat?x=1 HTTP/1.1\r\nHost: example.com:8080\r\n"), "{text}");
        assert!(text.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"), "{text}");
        assert!(text.contains("Sec-WebSocket-Protocol: chat\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
        assert_eq!(req.port(), 8080);
        assert!(ClientRequest::new("http://example.com/").is_err());
        let (bytes, _) = ClientRequest::new("ws://example.com?x=1").unwrap().encode([0; 16]);
        assert!(bytes.starts_with(b"GET /?x=1 HTTP/1.1\r\n"), "{bytes:?}");
        let injected = ClientRequest::new("ws://example.com/").unwrap().with_subprotocol("chat\r\nX-Evil: 1");
        assert!(injected.is_err());
        assert!(ClientRequest::new("ws:///nohost").is_err());
    }

    #[test]
    fn response_checks() {
        let req = ClientRequest::new("ws://example.com/").unwrap().with_subprotocol("chat").unwrap();
        let (_, check) = req.encode(*b"the sample nonce");
        let good = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
        let ok = check.check(response("Sec-WebSocket-Protocol: chat\r\n", good).as_bytes(), 32).unwrap();
        assert_eq!(ok.subprotocol.as_deref(), Some("chat"));
        assert!(check.check(response("", good).as_bytes(), 32).unwrap().subprotocol.is_none());
        let bad = |extra: &str, accept: &str| check.check(response(extra, accept).as_bytes(), 32).unwrap_err();
        assert_eq!(bad("", "wrong="), HandshakeError::InvalidResponse("wrong or missing Sec-WebSocket-Accept"));
        assert!(matches!(bad("Sec-WebSocket-Protocol: other\r\n", good), HandshakeError::InvalidResponse(_)));
        assert!(matches!(
            bad("Sec-WebSocket-Extensions: permessage-deflate\r\n", good),
            HandshakeError::InvalidResponse(_)
        ));
        assert_eq!(
            check.check(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 32).unwrap_err(),
            HandshakeError::UnexpectedStatus(404)
        );
    }
}

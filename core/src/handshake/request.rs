//! The client's opening request, as the server reads and validates it (§4.2.1).

use http::{HeaderMap, HeaderValue, Method, Uri, Version, header};

use super::{has_token, list_items};
use crate::handshake::HandshakeError;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKind {
    /// A valid WebSocket upgrade request.
    Upgrade,
    /// A request that does not try to upgrade: the application may answer it as plain
    /// HTTP, for example to serve a page on the same port.
    Http,
}

/// A request head read from a client, with the parts a WebSocket application needs
/// already extracted.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    kind: RequestKind,
    subprotocols: Vec<String>,
    extensions: Vec<String>,
}

impl Request {
    /// Parses a complete request head (up to and including its blank line), with at
    /// most `max_headers` header lines, and decides what kind of request it is.
    ///
    /// A request that tries to upgrade but breaks RFC 6455 is an error carrying the
    /// status to answer with: 400, 426 for a missing or unsupported
    /// `Sec-WebSocket-Version`, 431 for too many headers.
    pub(crate) fn parse(head: &[u8], max_headers: usize) -> Result<Self, HandshakeError> {
        let mut slots = vec![httparse::EMPTY_HEADER; max_headers];
        let mut parsed = httparse::Request::new(&mut slots);
        match parsed.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(refuse(400, "malformed HTTP request head")),
            Err(httparse::Error::TooManyHeaders) => return Err(refuse(431, "too many header lines")),
            Err(e) => return Err(refuse(400, &format!("malformed HTTP request: {e}"))),
        }
        let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
            .map_err(|_| refuse(400, "invalid method"))?;
        let uri: Uri = parsed.path.unwrap_or_default().parse().map_err(|_| refuse(400, "invalid request target"))?;
        let version = if parsed.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
        let mut headers = HeaderMap::with_capacity(parsed.headers.len());
        for h in parsed.headers.iter() {
            let name =
                header::HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| refuse(400, "invalid header name"))?;
            let value = HeaderValue::from_bytes(h.value).map_err(|_| refuse(400, "invalid header value"))?;
            headers.append(name, value);
        }
        Self::from_parts(method, uri, version, headers)
    }

    /// Classifies and validates a request that was already parsed.
    fn from_parts(method: Method, uri: Uri, version: Version, headers: HeaderMap) -> Result<Self, HandshakeError> {
        let wants_upgrade = has_token(&headers, header::UPGRADE, "websocket")
            || headers.contains_key(header::SEC_WEBSOCKET_KEY)
            || headers.contains_key(header::SEC_WEBSOCKET_VERSION);
        let kind = if wants_upgrade {
            check_upgrade(&method, version, &headers)?;
            RequestKind::Upgrade
        } else {
            RequestKind::Http
        };
        let subprotocols = list_items(&headers, header::SEC_WEBSOCKET_PROTOCOL);
        let extensions = list_items(&headers, header::SEC_WEBSOCKET_EXTENSIONS);
        Ok(Self { method, uri, version, headers, kind, subprotocols, extensions })
    }

    /// Whether this is an upgrade or a plain HTTP request.
    pub fn kind(&self) -> &RequestKind {
        &self.kind
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The request target as sent (usually a path and query).
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The HTTP version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The path part of the target, still percent-encoded.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The query string without its `?`, still percent-encoded.
    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }

    /// All headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The first value of a header, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Host` header.
    pub fn host(&self) -> Option<&str> {
        self.header("host")
    }

    /// The `Origin` header that browsers send (check it against an allow-list to stop
    /// cross-site WebSocket hijacking).
    pub fn origin(&self) -> Option<&str> {
        self.header("origin")
    }

    /// The subprotocols the client offered, in its order of preference.
    pub fn subprotocols(&self) -> &[String] {
        &self.subprotocols
    }

    /// The extension offers the client made, one string per offer with its
    /// parameters (for example `permessage-deflate; client_max_window_bits`).
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// Converts into the `http` crate's request type.
    pub fn into_http(self) -> http::Request<()> {
        let mut req = http::Request::new(());
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers;
        req
    }
}

/// Validates an upgrade request that another HTTP server already parsed, returning
/// the `Sec-WebSocket-Accept` value to answer with, or the refusal to send.
pub fn validate_upgrade<B>(request: &http::Request<B>) -> Result<String, HandshakeError> {
    check_upgrade(request.method(), request.version(), request.headers())?;
    let key = request.headers().get(header::SEC_WEBSOCKET_KEY).expect("checked above");
    Ok(super::accept_key(key.as_bytes()))
}

/// The checks of RFC 6455 §4.2.1 on a request that asked to upgrade.
fn check_upgrade(method: &Method, version: Version, headers: &HeaderMap) -> Result<(), HandshakeError> {
    use base64::Engine as _;
    if method != Method::GET {
        return Err(refuse(400, "a WebSocket upgrade must use GET"));
    }
    if version < Version::HTTP_11 {
        return Err(refuse(400, "a WebSocket upgrade needs HTTP/1.1 or later"));
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(host), None) if !host.is_empty() => {}
        _ => return Err(refuse(400, "exactly one non-empty Host header is required")),
    }
    // An upgrade request has no body; bytes after its head are frames (RFC 9112 §6).
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get_all(header::CONTENT_LENGTH).iter().any(|v| v.as_bytes() != b"0");
    if has_body {
        return Err(refuse(400, "a WebSocket upgrade request must not have a body"));
    }
    if !has_token(headers, header::UPGRADE, "websocket") {
        return Err(refuse(400, "the Upgrade header must name websocket"));
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(refuse(400, "the Connection header must include Upgrade"));
    }
    let mut versions = headers.get_all(header::SEC_WEBSOCKET_VERSION).iter();
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.as_bytes() == b"13" => {}
        (None, _) => return Err(refuse(400, "Sec-WebSocket-Version is missing")),
        // §4.2.2: an unsupported version gets 426 and the version we speak.
        _ => return Err(refuse(426, "only WebSocket version 13 is supported")),
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let key_ok = match (keys.next(), keys.next()) {
        (Some(key), None) => {
            base64::engine::general_purpose::STANDARD.decode(key.as_bytes()).is_ok_and(|k| k.len() == 16)
        }
        _ => false,
    };
    if !key_ok {
        return Err(refuse(400, "Sec-WebSocket-Key must be one base64 value of 16 bytes"));
    }
    Ok(())
}

fn refuse(status: u16, reason: &str) -> HandshakeError {
    HandshakeError::Refused { status, reason: reason.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "GET /chat/ann?age=3 HTTP/1.1\r\nHost: example.com\r\nUpgrade: WebSocket\r\n\
        Connection: keep-alive, upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\nOrigin: http://example.com\r\n\
        Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

    fn status_of(head: &str) -> u16 {
        match Request::parse(head.as_bytes(), 64) {
            Ok(r) if r.kind() == &RequestKind::Upgrade => 101,
            Ok(_) => 200,
            Err(HandshakeError::Refused { status, .. }) => status,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn good_request() {
        let r = Request::parse(GOOD.as_bytes(), 64).unwrap();
        assert_eq!(r.kind(), &RequestKind::Upgrade);
        assert_eq!(r.path(), "/chat/ann");
        assert_eq!(r.query(), Some("age=3"));
        assert_eq!(r.origin(), Some("http://example.com"));
        assert_eq!(r.subprotocols(), ["chat", "superchat"]);
        assert_eq!(r.extensions(), ["permessage-deflate; client_max_window_bits"]);
    }

    #[test]
    fn refusals() {
        assert_eq!(status_of(&GOOD.replace("GET", "POST")), 400);
        assert_eq!(status_of(&GOOD.replace("HTTP/1.1", "HTTP/1.0")), 400);
        assert_eq!(status_of(&GOOD.replace("Host: example.com\r\n", "")), 400);
        assert_eq!(status_of(&GOOD.replace("Upgrade: WebSocket\r\n", "")), 400);
        assert_eq!(status_of(&GOOD.replace("keep-alive, upgrade", "keep-alive")), 400);
        assert_eq!(status_of(&GOOD.replace("Version: 13", "Version: 8")), 426);
        assert_eq!(status_of(&GOOD.replace("Sec-WebSocket-Version: 13\r\n", "")), 400);
        assert_eq!(status_of(&GOOD.replace("Host: example.com", "Host:")), 400);
        assert_eq!(status_of(&GOOD.replace("Origin:", "Content-Length: 5\r\nOrigin:")), 400);
        assert_eq!(status_of(&GOOD.replace("Origin:", "Content-Length: 0\r\nOrigin:")), 101);
        assert_eq!(status_of(&GOOD.replace("Origin:", "Transfer-Encoding: chunked\r\nOrigin:")), 400);
        assert_eq!(status_of(&GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=")), 400);
        assert_eq!(status_of(&GOOD.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "")), 400);
        assert_eq!(status_of("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 200);
        assert_eq!(status_of("BREW / HTCPCP/1.0\r\n\r\n"), 400);
        let many: String = (0..70).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(status_of(&format!("GET / HTTP/1.1\r\n{many}\r\n")), 431);
    }
}

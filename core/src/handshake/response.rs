//! The server's answers to a request: accept (101), refuse (4xx/5xx), or a plain
//! HTTP response.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// How the application accepts an upgrade request.
#[derive(Debug, Clone, Default)]
pub struct Accept {
    /// The subprotocol to use; it must be one the client offered.
    pub subprotocol: Option<String>,
    /// Extra headers for the 101 response (for example `Set-Cookie`).
    pub headers: HeaderMap,
    /// Accept permessage-deflate (RFC 7692) with these settings, if the client
    /// offers it (`None`: no compression).
    pub deflate: Option<crate::deflate::DeflateConfig>,
}

impl Accept {
    /// Accept with no subprotocol and no extra headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Chooses a subprotocol.
    pub fn with_subprotocol(mut self, name: impl Into<String>) -> Self {
        self.subprotocol = Some(name.into());
        self
    }

    /// Adds a header to the response.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Accepts permessage-deflate with these settings when the client offers it:
    /// the first offer they can honour is answered (see [`crate::deflate`]).
    pub fn with_deflate(mut self, config: crate::deflate::DeflateConfig) -> Self {
        self.deflate = Some(config);
        self
    }
}

/// How the application refuses an upgrade request.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The status: a client (4xx) or server (5xx) error.
    pub status: StatusCode,
    /// A short reason, sent as the plain-text body.
    pub reason: String,
    /// Extra headers (for example `WWW-Authenticate` with a 401).
    pub headers: HeaderMap,
}

impl Rejection {
    /// A refusal with a status and a plain-text reason.
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self { status, reason: reason.into(), headers: HeaderMap::new() }
    }

    /// The answer to a plain HTTP request at an endpoint that only speaks WebSocket:
    /// 426 Upgrade Required, naming the protocol and version to use.
    pub fn websocket_only() -> Self {
        Self::new(StatusCode::UPGRADE_REQUIRED, "this endpoint only speaks WebSocket")
    }

    /// Adds a header to the response.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }
}

/// A plain HTTP response to a request that was not an upgrade. The connection closes
/// after it is sent.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers; `Content-Length` and `Connection: close` are added.
    pub headers: HeaderMap,
    /// The body (not sent in answer to `HEAD`).
    pub body: Bytes,
}

impl HttpResponse {
    /// A response with a content type and a body.
    pub fn new(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        Self { status, headers, body: body.into() }
    }
}

/// The 101 response.
pub(crate) fn switching_protocols(
    accept_key: &str,
    subprotocol: Option<&str>,
    extensions: Option<&str>,
    extra: &HeaderMap,
) -> BytesMut {
    let mut out = BytesMut::with_capacity(160);
    out.put_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.put_slice(accept_key.as_bytes());
    out.put_slice(b"\r\n");
    if let Some(p) = subprotocol {
        put_header(&mut out, b"Sec-WebSocket-Protocol", p.as_bytes());
    }
    if let Some(e) = extensions {
        put_header(&mut out, b"Sec-WebSocket-Extensions", e.as_bytes());
    }
    put_headers(&mut out, extra);
    out.put_slice(b"\r\n");
    out
}

/// A response that ends the connection: status line, headers, length, body.
///
/// The message framing is ours to write: any `Content-Length`, `Transfer-Encoding`
/// or `Connection` the application put in `headers` is left out. 204 and 304 carry
/// neither a body nor a length (RFC 9110 §8.6); the caller refuses 1xx.
pub(crate) fn closing_response(status: StatusCode, headers: &HeaderMap, body: &[u8], head_request: bool) -> BytesMut {
    debug_assert!(!status.is_informational(), "1xx cannot end a connection");
    let mut out = BytesMut::with_capacity(128 + body.len());
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.put_slice(b"\r\n");
    for (name, value) in headers {
        if ![CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION].contains(name) {
            put_header(&mut out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    let bodiless = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    if !bodiless {
        put_header(&mut out, b"Content-Length", body.len().to_string().as_bytes());
    }
    out.put_slice(b"Connection: close\r\n\r\n");
    if !bodiless && !head_request {
        out.put_slice(body);
    }
    out
}

/// The response to a request refused with `status` and a plain-text `reason`.
pub(crate) fn refusal(status: StatusCode, reason: &str, extra: &HeaderMap, head_request: bool) -> BytesMut {
    let mut headers = extra.clone();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if status == StatusCode::UPGRADE_REQUIRED {
        headers.insert(http::header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    closing_response(status, &headers, reason.as_bytes(), head_request)
}

/// Writes the application's headers as they are (101 response).
fn put_headers(out: &mut BytesMut, headers: &HeaderMap) {
    for (name, value) in headers {
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
}

fn put_header(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_headers_are_ours() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("99"));
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive"));
        headers.insert("x-kept", HeaderValue::from_static("yes"));
        let r = closing_response(StatusCode::OK, &headers, b"1", false);
        assert_eq!(&r[..], b"HTTP/1.1 200 OK\r\nx-kept: yes\r\nContent-Length: 1\r\nConnection: close\r\n\r\n1");
        let r = closing_response(StatusCode::NO_CONTENT, &HeaderMap::new(), b"ignored", false);
        assert_eq!(&r[..], b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        let r = closing_response(StatusCode::OK, &HeaderMap::new(), b"body", true);
        assert_eq!(&r[..], b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\n", "HEAD");
    }

    #[test]
    fn refusal_426_names_the_version() {
        let r = refusal(StatusCode::UPGRADE_REQUIRED, "only 13", &HeaderMap::new(), false);
        let text = std::str::from_utf8(&r).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"), "{text}");
        assert!(text.contains("sec-websocket-version: 13\r\n"), "{text}");
        assert!(text.ends_with("Content-Length: 7\r\nConnection: close\r\n\r\nonly 13"), "{text}");
    }
}

//! `ClientRequest::new` with arbitrary URLs, subprotocols and headers. Checks that
//! nothing panics; that a subprotocol is refused exactly when it is not an HTTP
//! token; that a URL accepted says what it means (TLS for `wss`, a host, the port
//! it names or the scheme's default); and that the request it makes is accepted by
//! the server side of the core, which sees the same path, query, host and
//! subprotocols, and whose 101 the client accepts in turn.
#![no_main]

use bytes::Buf;
use chinwag_core::http::{HeaderName, HeaderValue};
use chinwag_core::{Accept, ClientRequest, Config, Connection, Event};

/// The input as text: the URL on the first line; then `p NAME` offers a
/// subprotocol and `h NAME: VALUE` adds the header `x-NAME` (a name that means
/// nothing to the handshake, so that the server must accept any).
struct Input {
    url: String,
    subprotocols: Vec<String>,
    headers: Vec<(String, String)>,
}

impl Input {
    fn read(data: &[u8]) -> Self {
        let text = String::from_utf8_lossy(data);
        let mut lines = text.split('\n');
        let url = lines.next().unwrap_or_default().to_owned();
        let (mut subprotocols, mut headers) = (Vec::new(), Vec::new());
        for line in lines {
            if let Some(name) = line.strip_prefix("p ") {
                subprotocols.push(name.to_owned());
            } else if let Some((name, value)) = line.strip_prefix("h ").and_then(|h| h.split_once(':')) {
                headers.push((name.to_owned(), value.trim_start().to_owned()));
            }
        }
        Self { url, subprotocols, headers }
    }
}

/// RFC 9110 §5.6.2.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn drain(conn: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(t) = conn.poll_transmit() {
        out.extend_from_slice(t.chunk());
        let n = t.chunk().len();
        t.advance(n);
    }
    out
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let input = Input::read(data);
    let url = input.url;
    let Ok(mut request) = ClientRequest::new(&url) else { return };
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    assert!(matches!(scheme.as_deref(), Some("ws" | "wss")), "{url:?} accepted without a ws or wss scheme");
    assert_eq!(request.is_tls(), scheme.as_deref() == Some("wss"), "{url:?}");
    assert!(!request.host().is_empty(), "{url:?} accepted without a host");
    let authority = request.uri().authority().expect("a URL with a host has an authority").as_str().to_owned();
    let host_port = authority.rsplit('@').next().unwrap_or(&authority).to_owned();
    // The port is what follows the host (an IPv6 host is in brackets).
    let after_host = host_port.rsplit_once(']').map_or(host_port.as_str(), |(_, rest)| rest);
    match after_host.rsplit_once(':').map(|(_, port)| port) {
        Some(port) if !port.is_empty() => assert_eq!(
            port.parse::<u16>().ok(),
            Some(request.port()),
            "{url:?}: the URL names port {port:?}, the request would connect to {}",
            request.port()
        ),
        _ => assert_eq!(request.port(), if request.is_tls() { 443 } else { 80 }, "{url:?}: the default port"),
    }

    let mut offered = Vec::new();
    for name in &input.subprotocols {
        match request.clone().with_subprotocol(name.as_str()) {
            Ok(more) => {
                assert!(is_token(name), "{name:?} is not a token, yet accepted as a subprotocol");
                request = more;
                offered.push(name.clone());
            }
            Err(_) => assert!(!is_token(name), "{name:?} is a token, yet refused as a subprotocol"),
        }
    }
    for (name, value) in &input.headers {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(format!("x-{name}").as_bytes()), HeaderValue::from_str(value))
        {
            request = request.with_header(name, value);
        }
    }

    let config = Config { max_head_size: 64 << 10, max_headers: 256, ..Config::default() };
    let now = chinwag_fuzz::t0();
    let mut client = Connection::client(&request, *b"fuzz-client-key!", Box::new(|| [1, 2, 3, 4]), config.clone(), now);
    let head = drain(&mut client);
    let mut server = Connection::server(config, now);
    server.receive(now, &head);
    let seen = match server.poll_event(now) {
        Some(Event::UpgradeRequest(seen)) => seen,
        other => panic!(
            "{url:?}: the server did not take the request as an upgrade: {other:?}\n{}",
            String::from_utf8_lossy(&head)
        ),
    };
    let path = match request.uri().path() {
        "" => "/",
        path => path,
    };
    assert_eq!(seen.path(), path, "{url:?}");
    assert_eq!(seen.query(), request.uri().query(), "{url:?}");
    assert_eq!(seen.host(), Some(host_port.as_str()), "{url:?}: the Host header");
    assert_eq!(seen.subprotocols(), offered.as_slice(), "{url:?}");

    let mut accept = Accept::new();
    if let Some(first) = offered.first() {
        accept = accept.with_subprotocol(first.clone());
    }
    server.accept(now, accept).expect("an upgrade request can be accepted");
    assert!(matches!(server.poll_event(now), Some(Event::Open(_))));
    let response = drain(&mut server);
    client.receive(now, &response);
    match client.poll_event(now) {
        Some(Event::Open(opened)) => assert_eq!(opened.subprotocol.as_ref(), offered.first(), "{url:?}"),
        other => panic!("{url:?}: the client refused the server's 101: {other:?}"),
    }
});

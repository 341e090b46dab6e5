//! The opening handshake as a connection performs it, byte for byte on the wire.

mod common;

use chinwag_core::http::{HeaderValue, StatusCode, header};
use chinwag_core::{
    Accept, ClientRequest, Config, Connection, Event, HandshakeError, HttpResponse, LocalError, Rejection, State,
};
use common::{counter_masks, drain_events, drain_transmit, t0};

const REQUEST: &str = "GET /chat/ann?age=30 HTTP/1.1\r\nHost: localhost:9090\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
    Sec-WebSocket-Protocol: chat, v2.chat\r\nOrigin: http://localhost:9090\r\n\r\n";

fn server() -> Connection {
    Connection::server(Config::default(), t0())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn accepts_with_the_exact_response() {
    let mut s = server();
    for b in REQUEST.as_bytes() {
        s.receive(t0(), std::slice::from_ref(b)); // one byte at a time
    }
    let Some(Event::UpgradeRequest(req)) = s.poll_event(t0()) else { panic!() };
    assert_eq!((req.path(), req.query(), req.origin()), ("/chat/ann", Some("age=30"), Some("http://localhost:9090")));
    assert_eq!(req.subprotocols(), ["chat", "v2.chat"]);
    assert_eq!(
        s.accept(t0(), Accept::new().with_subprotocol("nope")),
        Err(LocalError::SubprotocolNotOffered("nope".into()))
    );
    s.accept(
        t0(),
        Accept::new().with_subprotocol("v2.chat").with_header(header::SET_COOKIE, HeaderValue::from_static("a=b")),
    )
    .unwrap();
    assert_eq!(
        text(&drain_transmit(&mut s)),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: v2.chat\r\nset-cookie: a=b\r\n\r\n"
    );
    assert_eq!(s.subprotocol(), Some("v2.chat"));
    assert!(matches!(s.poll_event(t0()), Some(Event::Open(o)) if o.subprotocol.as_deref() == Some("v2.chat")));
}

#[test]
fn frames_sent_with_the_request_are_kept() {
    let mut s = server();
    let mut wire = REQUEST.as_bytes().to_vec();
    wire.extend_from_slice(&[0x81, 0x82, 0, 0, 0, 0, b'h', b'i']);
    s.receive(t0(), &wire);
    assert!(matches!(s.poll_event(t0()), Some(Event::UpgradeRequest(_))));
    assert!(s.poll_event(t0()).is_none(), "no frame before the decision");
    s.accept(t0(), Accept::new()).unwrap();
    assert!(matches!(s.poll_event(t0()), Some(Event::Open(_))));
    assert!(matches!(s.poll_event(t0()), Some(Event::Text(t)) if t == "hi"));
}

#[test]
fn invalid_requests_are_refused_on_the_wire() {
    let cases = [
        (REQUEST.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"), "HTTP/1.1 426 Upgrade Required"),
        (REQUEST.replace("GET", "POST"), "HTTP/1.1 400 Bad Request"),
        (REQUEST.replace("HTTP/1.1", "HTTP/1.0"), "HTTP/1.1 400 Bad Request"),
        (REQUEST.replace("dGhlIHNhbXBsZSBub25jZQ==", "!!"), "HTTP/1.1 400 Bad Request"),
        ("\x16\x03\x01garbage\r\n\r\n".to_owned(), "HTTP/1.1 400 Bad Request"),
    ];
    for (request, status_line) in cases {
        let mut s = server();
        s.receive(t0(), request.as_bytes());
        assert!(
            matches!(s.poll_event(t0()), Some(Event::HandshakeFailed(HandshakeError::Refused { .. }))),
            "{request:?}"
        );
        let response = text(&drain_transmit(&mut s));
        assert!(response.starts_with(status_line), "{request:?} got {response}");
        assert!(response.contains("Connection: close\r\n"));
        if status_line.contains("426") {
            assert!(response.contains("sec-websocket-version: 13\r\n"), "{response}");
        }
        lingers_then_finishes(&mut s);
    }
}

#[test]
fn oversized_heads_get_431_before_they_end() {
    let mut s = Connection::server(Config { max_head_size: 1024, ..Config::default() }, t0());
    s.receive(t0(), b"GET / HTTP/1.1\r\n");
    for _ in 0..100 {
        s.receive(t0(), b"X-Filler: aaaaaaaaaaaaaaaaaaaa\r\n");
        if s.state() == State::Closed {
            break;
        }
    }
    assert!(matches!(s.poll_event(t0()), Some(Event::HandshakeFailed(HandshakeError::Refused { status: 431, .. }))));
    assert!(text(&drain_transmit(&mut s)).starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
}

#[test]
fn plain_http_requests_go_to_the_application() {
    let mut s = server();
    s.receive(t0(), b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let Some(Event::HttpRequest(req)) = s.poll_event(t0()) else { panic!() };
    assert_eq!(req.path(), "/");
    assert_eq!(s.accept(t0(), Accept::new()), Err(LocalError::NotAnUpgrade));
    s.respond(t0(), HttpResponse::new(StatusCode::OK, "text/html; charset=utf-8", "<p>hi</p>")).unwrap();
    let response = text(&drain_transmit(&mut s));
    assert!(response.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\n"), "{response}");
    assert!(response.ends_with("Content-Length: 9\r\nConnection: close\r\n\r\n<p>hi</p>"), "{response}");
    lingers_then_finishes(&mut s);

    let mut s = server();
    s.receive(t0(), b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    drain_events(&mut s, t0());
    s.respond(t0(), HttpResponse::new(StatusCode::OK, "text/plain", "body")).unwrap();
    assert!(text(&drain_transmit(&mut s)).ends_with("Content-Length: 4\r\nConnection: close\r\n\r\n"));
}

#[test]
fn application_rejection() {
    let mut s = server();
    s.receive(t0(), REQUEST.as_bytes());
    drain_events(&mut s, t0());
    assert_eq!(
        s.reject(t0(), Rejection::new(StatusCode::OK, "no")).unwrap_err(),
        LocalError::InvalidRejectStatus(200),
        "a refusal must be an error status"
    );
    s.reject(t0(), Rejection::new(StatusCode::CONFLICT, "name taken")).unwrap();
    let response = text(&drain_transmit(&mut s));
    assert!(response.starts_with("HTTP/1.1 409 Conflict\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\nname taken"));
    lingers_then_finishes(&mut s);
    assert_eq!(s.reject(t0(), Rejection::new(StatusCode::CONFLICT, "again")), Err(LocalError::Closed));
}

#[test]
fn a_rejected_head_request_gets_no_body() {
    let mut s = server();
    s.receive(t0(), b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    drain_events(&mut s, t0());
    s.reject(t0(), Rejection::new(StatusCode::NOT_FOUND, "no page here")).unwrap();
    let response = text(&drain_transmit(&mut s));
    assert!(response.starts_with("HTTP/1.1 404 Not Found\r\n"), "{response}");
    assert!(response.ends_with("Content-Length: 12\r\nConnection: close\r\n\r\n"), "{response}");
    lingers_then_finishes(&mut s);
}

#[test]
fn a_head_upgrade_refused_by_the_core_gets_no_body() {
    let mut s = server();
    let head = REQUEST.replacen("GET ", "HEAD ", 1);
    s.receive(t0(), head.as_bytes());
    drain_events(&mut s, t0());
    let response = text(&drain_transmit(&mut s));
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
    assert!(response.ends_with("\r\nConnection: close\r\n\r\n"), "a body after the head: {response}");
}

#[test]
fn client_handshake_failures() {
    let request = ClientRequest::new("ws://localhost/").unwrap();
    let cases: [(&[u8], HandshakeError); 3] = [
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", HandshakeError::UnexpectedStatus(404)),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: bad\r\n\r\n",
            HandshakeError::InvalidResponse("wrong or missing Sec-WebSocket-Accept"),
        ),
        (b"SSH-2.0-OpenSSH\r\n\r\n", HandshakeError::InvalidResponse("malformed HTTP response")),
    ];
    for (response, error) in cases {
        let mut c = Connection::client(&request, [1; 16], counter_masks(), Config::default(), t0());
        drain_transmit(&mut c);
        c.receive(t0(), response);
        assert!(matches!(c.poll_event(t0()), Some(Event::HandshakeFailed(e)) if e == error));
        assert!(c.is_finished());
    }
    let mut c = Connection::client(&request, [1; 16], counter_masks(), Config::default(), t0());
    c.receive_eof(t0());
    assert!(matches!(c.poll_event(t0()), Some(Event::HandshakeFailed(HandshakeError::TransportClosed))));
}

#[test]
fn client_urls_are_checked() {
    for (url, host, port) in [
        ("ws://example.com/", "example.com", 80),
        ("WSS://example.com/", "example.com", 443),
        ("Ws://example.com:9001/x?y=1", "example.com", 9001),
        ("ws://[::1]:9001/", "::1", 9001),
        ("ws://user:secret@example.com:81/", "example.com", 81),
        ("ws://127.0.0.1:65535/", "127.0.0.1", 65535),
    ] {
        let request = ClientRequest::new(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!((request.host(), request.port()), (host, port), "{url}");
    }
    for url in [
        "http://example.com/",
        "ws://example.com:x/",
        "ws://example.com:99999/",
        "ws://example.com:0/",
        "ws://[]/",
        "ws://[a]/",
        "ws://[::1],:000y",
        "ws://[::@]:03333",
        "ws://[::1]x:80/",
        "ws:///path",
    ] {
        assert!(ClientRequest::new(url).is_err(), "{url} was accepted");
    }
}

/// Bytes after the request head are kept within `max_head_size`, whether they come
/// in the same read as the head or later (found by the handshake_request fuzz
/// target: in the same read they were kept without a bound).
#[test]
fn early_bytes_are_bounded_however_they_arrive() {
    let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let config = Config { max_head_size: 2048, ..Config::default() };
    let mut stream = head.to_vec();
    stream.extend_from_slice(&[b'x'; 2100]);
    for cut in [stream.len(), head.len() + 1000, head.len()] {
        let mut s = Connection::server(config.clone(), t0());
        s.receive(t0(), &stream[..cut]);
        let mut events = drain_events(&mut s, t0());
        s.receive(t0(), &stream[cut..]);
        events.extend(drain_events(&mut s, t0()));
        assert!(
            matches!(
                &events[..],
                [Event::HttpRequest(_), Event::HandshakeFailed(HandshakeError::Refused { status: 400, .. })]
            ),
            "cut at {cut}: {events:?}"
        );
    }
}

/// A server that answered a request it does not upgrade shuts its writing side
/// down once the answer is written, and reads (discarding what still comes) until
/// the client's EOF: closing with unread input would reset the connection, which
/// can destroy the answer before the client reads it.
fn lingers_then_finishes(s: &mut Connection) {
    assert!(s.wants_write_shutdown(), "the answer written, the writing side should be shut down");
    assert!(!s.is_finished() && s.wants_input(), "finished before the client's EOF");
    s.receive(t0(), b"more of the request, discarded");
    assert!(drain_events(s, t0()).is_empty() && drain_transmit(s).is_empty());
    s.receive_eof(t0());
    assert!(s.is_finished() && !s.wants_input());
}

//! One test per row of the life-cycle transition table in
//! `core/src/connection/mod.rs`: the phase, the input, then what the connection
//! became, wrote and reported. Test names are `<phase>__<input>`.
//!
//! The phase is observed through the public API: `state()`, `wants_input()` (a
//! connection in `Closed { await_eof: true }` still reads, waiting for the peer's
//! EOF), `wants_write_shutdown()` (a server lingering so) and `is_finished()`.
#![allow(non_snake_case)]

mod common;

use chinwag_core::handshake::{accept_key, client_key};
use chinwag_core::http::StatusCode;
use chinwag_core::{
    Accept, ClientRequest, CloseCode, Closed, Config, Connection, ConnectionError, Event, HandshakeError, HttpResponse,
    Initiator, LocalError, ProtocolError, Rejection, State,
};
use common::{Pair, counter_masks, drain_events, drain_transmit, masked};
use std::time::{Duration, Instant};

const REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Short, distinct timeouts: which one fired is visible in the deadline.
fn config() -> Config {
    Config {
        handshake_timeout: Some(Duration::from_secs(3)),
        keepalive_interval: Some(Duration::from_secs(20)),
        keepalive_timeout: Duration::from_secs(7),
        close_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

/// An unmasked server frame.
fn unmasked(b0: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= 125);
    [&[b0, payload.len() as u8][..], payload].concat()
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    [&code.to_be_bytes()[..], reason.as_bytes()].concat()
}

fn only_closed(events: &[Event]) -> &Closed {
    match events {
        [Event::Closed(c)] => c,
        other => panic!("expected exactly one Closed, got {other:?}"),
    }
}

fn assert_closed(c: &Closed, code: CloseCode, initiator: Initiator, error: Option<ConnectionError>) {
    assert_eq!((c.code, c.initiator, c.error), (code, initiator, error), "{c:?}");
}

/// `Closed { await_eof: false }`: no more reading; finished once output is taken.
fn assert_closed_not_awaiting(conn: &mut Connection) {
    assert_eq!(conn.state(), State::Closed);
    assert!(!conn.wants_input());
    drain_transmit(conn);
    assert!(!conn.wants_write_shutdown());
    assert!(conn.is_finished());
}

/// `Closed { await_eof: true }` on a server that failed the connection or refused
/// the request: once its output is taken it wants its writing side shut down,
/// reads and discards until the client's EOF, and is finished then.
fn assert_server_lingers(conn: &mut Connection, now: Instant) {
    assert_eq!(conn.state(), State::Closed);
    assert!(conn.wants_input(), "a lingering server reads until the client's EOF");
    drain_transmit(conn);
    assert!(conn.wants_write_shutdown(), "its output written, the writing side is to be shut down");
    assert!(!conn.is_finished(), "finished before the client's EOF");
    conn.receive(now, &masked(0x81, b"still sending"));
    assert!(drain_events(conn, now).is_empty() && drain_transmit(conn).is_empty(), "what still comes is discarded");
    conn.receive_eof(now);
    assert!(conn.is_finished() && !conn.wants_input());
    assert_eq!(conn.poll_timeout(), None);
}

// ----- server phases --------------------------------------------------------------

fn reading(now: Instant) -> Connection {
    Connection::server(config(), now)
}

fn deciding(now: Instant) -> Connection {
    let mut s = reading(now);
    s.receive(now, REQUEST);
    assert!(matches!(s.poll_event(now), Some(Event::UpgradeRequest(_))));
    s
}

#[test]
fn ServerReadingRequest__bytes_head_incomplete() {
    let now = Instant::now();
    let mut s = reading(now);
    s.receive(now, &REQUEST[..REQUEST.len() - 2]);
    assert!(drain_events(&mut s, now).is_empty());
    assert!(drain_transmit(&mut s).is_empty());
    assert_eq!(s.state(), State::Handshake);
    assert!(s.wants_input());
}

#[test]
fn ServerReadingRequest__bytes_head_complete_and_valid() {
    let now = Instant::now();
    let mut s = reading(now);
    s.receive(now, REQUEST);
    assert!(matches!(&drain_events(&mut s, now)[..], [Event::UpgradeRequest(r)] if r.path() == "/chat"));
    assert!(!s.wants_input(), "deciding: nothing more is read until the answer");
    let mut h = reading(now);
    h.receive(now, b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(matches!(&drain_events(&mut h, now)[..], [Event::HttpRequest(r)] if r.path() == "/page"));
}

#[test]
fn ServerReadingRequest__bytes_head_invalid_or_too_large() {
    let now = Instant::now();
    let mut s = reading(now);
    s.receive(now, b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    let events = drain_events(&mut s, now);
    assert!(matches!(&events[..], [Event::HandshakeFailed(HandshakeError::Refused { status: 400, .. })]), "{events:?}");
    let out = String::from_utf8(drain_transmit(&mut s)).unwrap();
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    assert_server_lingers(&mut s, now);

    let mut big = Connection::server(Config { max_head_size: 64, ..config() }, now);
    big.receive(now, &[b'a'; 65]);
    assert!(matches!(
        &drain_events(&mut big, now)[..],
        [Event::HandshakeFailed(HandshakeError::Refused { status: 431, .. })]
    ));
    assert!(String::from_utf8(drain_transmit(&mut big)).unwrap().starts_with("HTTP/1.1 431 "));
    assert_server_lingers(&mut big, now);
}

#[test]
fn ServerReadingRequest__eof_and_transport_lost() {
    let now = Instant::now();
    for lost in [false, true] {
        let mut s = reading(now);
        s.receive(now, b"GET /");
        if lost {
            s.transport_lost(now)
        } else {
            s.receive_eof(now)
        }
        assert!(matches!(&drain_events(&mut s, now)[..], [Event::HandshakeFailed(HandshakeError::TransportClosed)]));
        assert!(drain_transmit(&mut s).is_empty());
        assert_closed_not_awaiting(&mut s);
    }
}

#[test]
fn ServerReadingRequest__handshake_timer() {
    let now = Instant::now();
    let mut s = reading(now);
    s.receive(now, b"GET / HTTP/1.1\r\n");
    assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(3)));
    s.handle_timeout(now + Duration::from_secs(3) - Duration::from_nanos(1));
    assert!(drain_events(&mut s, now).is_empty(), "not due yet");
    s.handle_timeout(now + Duration::from_secs(3));
    assert!(matches!(&drain_events(&mut s, now)[..], [Event::HandshakeFailed(HandshakeError::Timeout)]));
    assert_closed_not_awaiting(&mut s);
}

#[test]
fn ServerReadingRequest__calls_are_refused() {
    let now = Instant::now();
    let mut s = reading(now);
    assert_eq!(s.send_text(now, "x"), Err(LocalError::NotOpen));
    assert_eq!(s.close(now, CloseCode::NORMAL, ""), Err(LocalError::NotOpen));
    assert_eq!(s.ping(now, b""), Err(LocalError::NotOpen));
    assert_eq!(s.accept(now, Accept::new()), Err(LocalError::NoPendingRequest));
    assert_eq!(s.state(), State::Handshake);
    assert!(drain_transmit(&mut s).is_empty());
}

#[test]
fn ServerDeciding__bytes_within_the_head_bound_are_kept() {
    let now = Instant::now();
    let mut s = deciding(now);
    s.receive(now, &masked(0x81, b"early"));
    assert!(drain_events(&mut s, now).is_empty(), "nothing before the decision");
    s.accept(now, Accept::new()).unwrap();
    assert!(matches!(&drain_events(&mut s, now)[..], [Event::Open(_), Event::Text(t)] if t == "early"));
}

#[test]
fn ServerDeciding__bytes_beyond_the_head_bound() {
    let now = Instant::now();
    let mut s = Connection::server(Config { max_head_size: 256, ..config() }, now);
    s.receive(now, REQUEST);
    drain_events(&mut s, now);
    s.receive(now, &[0u8; 257]);
    assert!(matches!(
        &drain_events(&mut s, now)[..],
        [Event::HandshakeFailed(HandshakeError::Refused { status: 400, .. })]
    ));
    assert!(String::from_utf8(drain_transmit(&mut s)).unwrap().starts_with("HTTP/1.1 400 "));
    assert_server_lingers(&mut s, now);
}

#[test]
fn ServerDeciding__accept() {
    let now = Instant::now();
    let mut s = deciding(now);
    s.accept(now, Accept::new()).unwrap();
    assert!(String::from_utf8(drain_transmit(&mut s)).unwrap().starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(matches!(&drain_events(&mut s, now)[..], [Event::Open(_)]));
    assert_eq!(s.state(), State::Open);
    assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(20)), "keepalive runs from the accept");
}

#[test]
fn ServerDeciding__reject_and_respond() {
    let now = Instant::now();
    let mut s = deciding(now);
    s.reject(now, Rejection::new(StatusCode::FORBIDDEN, "no")).unwrap();
    assert!(drain_events(&mut s, now).is_empty());
    assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(5)), "the response may linger a close timeout");
    assert!(String::from_utf8(drain_transmit(&mut s)).unwrap().starts_with("HTTP/1.1 403 Forbidden\r\n"));
    assert_server_lingers(&mut s, now);

    let mut h = reading(now);
    h.receive(now, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    drain_events(&mut h, now);
    h.respond(now, HttpResponse::new(StatusCode::OK, "text/plain", "hi")).unwrap();
    assert!(String::from_utf8(drain_transmit(&mut h)).unwrap().starts_with("HTTP/1.1 200 OK\r\n"));
    assert_server_lingers(&mut h, now);
}

#[test]
fn ServerDeciding__eof_and_transport_lost() {
    let now = Instant::now();
    for lost in [false, true] {
        let mut s = deciding(now);
        if lost {
            s.transport_lost(now)
        } else {
            s.receive_eof(now)
        }
        assert!(matches!(&drain_events(&mut s, now)[..], [Event::HandshakeFailed(HandshakeError::TransportClosed)]));
        assert_eq!(s.accept(now, Accept::new()), Err(LocalError::Closed));
        assert_closed_not_awaiting(&mut s);
    }
}

#[test]
fn ServerDeciding__handshake_timer() {
    let now = Instant::now();
    let mut s = deciding(now);
    let later = now + Duration::from_secs(3);
    // The answer comes too late: the call first fires the deadline, then finds no
    // request pending.
    assert_eq!(s.accept(later, Accept::new()), Err(LocalError::Closed));
    assert!(matches!(&drain_events(&mut s, later)[..], [Event::HandshakeFailed(HandshakeError::Timeout)]));
    assert!(drain_transmit(&mut s).is_empty(), "no 101 went out");
    assert_closed_not_awaiting(&mut s);
}

// ----- client handshake -------------------------------------------------------------

fn awaiting(now: Instant) -> Connection {
    let request = ClientRequest::new("ws://example.com/chat").unwrap();
    let mut c = Connection::client(&request, [1; 16], counter_masks(), config(), now);
    assert!(String::from_utf8(drain_transmit(&mut c)).unwrap().starts_with("GET /chat HTTP/1.1\r\n"));
    c
}

fn switching_protocols() -> Vec<u8> {
    let key = accept_key(client_key([1; 16]).as_bytes());
    format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {key}\r\n\r\n")
        .into_bytes()
}

#[test]
fn ClientAwaitingResponse__bytes_head_incomplete() {
    let now = Instant::now();
    let mut c = awaiting(now);
    let response = switching_protocols();
    c.receive(now, &response[..response.len() - 1]);
    assert!(drain_events(&mut c, now).is_empty());
    assert_eq!(c.state(), State::Handshake);
}

#[test]
fn ClientAwaitingResponse__bytes_a_valid_101() {
    let now = Instant::now();
    let mut c = awaiting(now);
    let mut wire = switching_protocols();
    wire.extend_from_slice(&unmasked(0x81, b"hi"));
    c.receive(now, &wire);
    assert!(matches!(&drain_events(&mut c, now)[..], [Event::Open(_), Event::Text(t)] if t == "hi"));
    assert_eq!(c.state(), State::Open);
}

#[test]
fn ClientAwaitingResponse__bytes_any_other_response() {
    let now = Instant::now();
    let mut c = awaiting(now);
    c.receive(now, b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
    assert!(matches!(&drain_events(&mut c, now)[..], [Event::HandshakeFailed(HandshakeError::UnexpectedStatus(403))]));
    assert_closed_not_awaiting(&mut c);
}

#[test]
fn ClientAwaitingResponse__eof_and_transport_lost() {
    let now = Instant::now();
    for lost in [false, true] {
        let mut c = awaiting(now);
        if lost {
            c.transport_lost(now)
        } else {
            c.receive_eof(now)
        }
        assert!(matches!(&drain_events(&mut c, now)[..], [Event::HandshakeFailed(HandshakeError::TransportClosed)]));
        assert_closed_not_awaiting(&mut c);
    }
}

#[test]
fn ClientAwaitingResponse__handshake_timer() {
    let now = Instant::now();
    let mut c = awaiting(now);
    c.handle_timeout(now + Duration::from_secs(3));
    assert!(matches!(&drain_events(&mut c, now)[..], [Event::HandshakeFailed(HandshakeError::Timeout)]));
    assert_closed_not_awaiting(&mut c);
}

// ----- open -------------------------------------------------------------------------

fn open() -> Pair {
    Pair::open(config(), config())
}

#[test]
fn Open__a_data_frame_ping_or_pong() {
    let mut p = open();
    let t = p.now + Duration::from_secs(15);
    p.server
        .receive(t, &[masked(0x81, b"text"), masked(0x82, b"bin"), masked(0x89, b"pi"), masked(0x8A, b"po")].concat());
    let events = drain_events(&mut p.server, t);
    assert!(
        matches!(&events[..],
        [Event::Text(a), Event::Binary(b), Event::Ping(c), Event::Pong(d)]
            if a == "text" && b[..] == *b"bin" && c[..] == *b"pi" && d[..] == *b"po"),
        "{events:?}"
    );
    assert_eq!(drain_transmit(&mut p.server), unmasked(0x8A, b"pi"), "the pong for the ping");
    assert_eq!(p.server.state(), State::Open);
    assert_eq!(p.server.poll_timeout(), Some(t + Duration::from_secs(20)), "keepalive restarted from the arrival");
}

#[test]
fn Open__a_close_frame() {
    // Server side: answers and is finished once the answer is written.
    let mut p = open();
    p.server.receive(p.now, &masked(0x88, &close_payload(4001, "bye")));
    let events = drain_events(&mut p.server, p.now);
    let c = only_closed(&events);
    assert_closed(c, CloseCode(4001), Initiator::Peer, None);
    assert_eq!(c.reason, "bye");
    assert_eq!(c.sent.as_ref().map(|f| f.code), Some(CloseCode(4001)), "the echo");
    assert_eq!(drain_transmit(&mut p.server), unmasked(0x88, &close_payload(4001, "")));
    assert_closed_not_awaiting(&mut p.server);

    // Client side: answers, then waits for the server's EOF (Closed { await_eof: true }).
    let mut p = open();
    p.client.receive(p.now, &unmasked(0x88, &close_payload(1001, "going")));
    let events = drain_events(&mut p.client, p.now);
    assert_closed(only_closed(&events), CloseCode::GOING_AWAY, Initiator::Peer, None);
    assert_eq!(p.client.state(), State::Closed);
    drain_transmit(&mut p.client);
    assert!(p.client.wants_input() && !p.client.is_finished(), "awaits the server's EOF");
    assert_eq!(p.client.poll_timeout(), Some(p.now + Duration::from_secs(5)));
}

#[test]
fn Open__a_protocol_violation() {
    let mut p = open();
    p.server.receive(p.now, &masked(0x83, b"")); // reserved opcode
    let events = drain_events(&mut p.server, p.now);
    let c = only_closed(&events);
    assert_closed(
        c,
        CloseCode::ABNORMAL,
        Initiator::Local,
        Some(ConnectionError::Protocol(ProtocolError::ReservedOpcode(3))),
    );
    assert_eq!(c.sent.as_ref().map(|f| f.code), Some(CloseCode::PROTOCOL_ERROR));
    let out = drain_transmit(&mut p.server);
    assert_eq!(&out[..4], &[0x88, out[1], 0x03, 0xEA], "close 1002 written");
    assert_server_lingers(&mut p.server, p.now);
}

#[test]
fn Open__eof() {
    let mut p = open();
    p.server.receive_eof(p.now);
    let events = drain_events(&mut p.server, p.now);
    assert_closed(only_closed(&events), CloseCode::ABNORMAL, Initiator::Peer, Some(ConnectionError::TransportClosed));
    assert!(only_closed(&events).sent.is_none());
    assert_closed_not_awaiting(&mut p.server);
}

#[test]
fn Open__transport_lost() {
    let mut p = open();
    p.server.send_text(p.now, "queued").unwrap();
    p.server.transport_lost(p.now);
    let events = drain_events(&mut p.server, p.now);
    assert_closed(only_closed(&events), CloseCode::ABNORMAL, Initiator::Peer, Some(ConnectionError::TransportClosed));
    assert!(p.server.poll_transmit().is_none(), "queued output dropped");
    assert!(p.server.is_finished());
}

#[test]
fn Open__close() {
    let mut p = open();
    let t = p.now + Duration::from_secs(12);
    p.server.close(t, CloseCode::GOING_AWAY, "shutdown").unwrap();
    assert_eq!(p.server.state(), State::Closing);
    assert_eq!(drain_transmit(&mut p.server), unmasked(0x88, &close_payload(1001, "shutdown")));
    assert_eq!(p.server.poll_timeout(), Some(t + Duration::from_secs(5)), "the close timer runs from the call");
    assert!(drain_events(&mut p.server, t).is_empty());
}

#[test]
fn Open__a_data_send_over_max_backlog() {
    let server = Config { backlog_high_water: 100, max_backlog: 100, ..config() };
    let mut p = Pair::open(config(), server);
    p.server.send_binary(p.now, &[0; 150]).unwrap(); // the backlog was empty: queued
    assert_eq!(p.server.send_text(p.now, "more"), Err(LocalError::Closed), "not queued");
    let events = drain_events(&mut p.server, p.now);
    let c = only_closed(&events);
    assert_closed(c, CloseCode::ABNORMAL, Initiator::Local, Some(ConnectionError::SlowConsumer));
    assert_eq!(c.sent.as_ref().map(|f| f.code), Some(CloseCode::POLICY_VIOLATION));
    let out = drain_transmit(&mut p.server);
    assert_eq!(
        out.len(),
        4 + 150 + 2 + 2 + chinwag_core::SLOW_CONSUMER_REASON.len(),
        "the binary frame, then the 1008"
    );
    assert_eq!(&out[154..158], &[0x88, out[155], 0x03, 0xF0]);
    assert_server_lingers(&mut p.server, p.now);
}

#[test]
fn Open__keepalive_timer_peer_quiet_for_the_interval() {
    let mut p = open();
    let due = p.server.poll_timeout().unwrap();
    assert_eq!(due, p.now + Duration::from_secs(20));
    p.server.handle_timeout(due);
    assert_eq!(drain_transmit(&mut p.server), unmasked(0x89, b""), "a ping");
    assert_eq!(p.server.state(), State::Open);
    assert_eq!(p.server.poll_timeout(), Some(due + Duration::from_secs(7)), "the answer is awaited");
}

#[test]
fn Open__keepalive_timer_no_answer_within_the_timeout() {
    let mut p = open();
    let ping_at = p.server.poll_timeout().unwrap();
    p.server.handle_timeout(ping_at);
    drain_transmit(&mut p.server);
    p.server.send_text(ping_at, "never read").unwrap();
    p.server.handle_timeout(ping_at + Duration::from_secs(7));
    let events = drain_events(&mut p.server, ping_at);
    assert_closed(only_closed(&events), CloseCode::ABNORMAL, Initiator::Local, Some(ConnectionError::KeepaliveTimeout));
    assert!(p.server.poll_transmit().is_none(), "queued output dropped: the peer is gone");
    assert!(p.server.is_finished());
}

// ----- close sent -------------------------------------------------------------------

fn close_sent() -> Pair {
    let mut p = open();
    p.server.close(p.now, CloseCode::NORMAL, "done").unwrap();
    drain_transmit(&mut p.server);
    p
}

#[test]
fn CloseSent__a_data_frame_ping_or_pong() {
    let mut p = close_sent();
    p.server.receive(p.now, &[masked(0x81, b"late"), masked(0x89, b"pi"), masked(0x8A, b"po")].concat());
    assert!(matches!(&drain_events(&mut p.server, p.now)[..], [Event::Text(_), Event::Ping(_), Event::Pong(_)]));
    assert!(drain_transmit(&mut p.server).is_empty(), "no pong after our close frame");
    assert_eq!(p.server.state(), State::Closing);
}

#[test]
fn CloseSent__a_close_frame() {
    let mut p = close_sent();
    p.server.receive(p.now, &masked(0x88, &close_payload(1000, "ok")));
    let events = drain_events(&mut p.server, p.now);
    let c = only_closed(&events);
    assert_closed(c, CloseCode::NORMAL, Initiator::Local, None);
    assert_eq!((c.reason.as_str(), c.sent.as_ref().map(|f| f.reason.as_str())), ("ok", Some("done")));
    assert!(drain_transmit(&mut p.server).is_empty(), "nothing more is written");
    assert_closed_not_awaiting(&mut p.server);
}

#[test]
fn CloseSent__a_protocol_violation() {
    let mut p = close_sent();
    p.server.receive(p.now, &[0x81, 0x01, b'x']); // unmasked
    let events = drain_events(&mut p.server, p.now);
    assert_closed(
        only_closed(&events),
        CloseCode::ABNORMAL,
        Initiator::Local,
        Some(ConnectionError::Protocol(ProtocolError::UnmaskedFrame)),
    );
    assert!(drain_transmit(&mut p.server).is_empty(), "our close frame was already sent");
    assert_server_lingers(&mut p.server, p.now);
}

#[test]
fn CloseSent__eof_and_transport_lost() {
    for lost in [false, true] {
        let mut p = close_sent();
        if lost {
            p.server.transport_lost(p.now)
        } else {
            p.server.receive_eof(p.now)
        }
        let events = drain_events(&mut p.server, p.now);
        let c = only_closed(&events);
        assert_closed(c, CloseCode::ABNORMAL, Initiator::Local, Some(ConnectionError::TransportClosed));
        assert_eq!(c.sent.as_ref().map(|f| f.code), Some(CloseCode::NORMAL));
        assert_closed_not_awaiting(&mut p.server);
    }
}

#[test]
fn CloseSent__close_timer() {
    let mut p = close_sent();
    let due = p.server.poll_timeout().unwrap();
    assert_eq!(due, p.now + Duration::from_secs(5));
    p.server.handle_timeout(due);
    let events = drain_events(&mut p.server, due);
    assert_closed(only_closed(&events), CloseCode::ABNORMAL, Initiator::Local, Some(ConnectionError::CloseTimeout));
    assert!(p.server.is_finished());
}

#[test]
fn CloseSent__calls_are_refused() {
    let mut p = close_sent();
    assert_eq!(p.server.send_text(p.now, "x"), Err(LocalError::Closing));
    assert_eq!(p.server.ping(p.now, b""), Err(LocalError::Closing));
    assert_eq!(p.server.close(p.now, CloseCode::NORMAL, ""), Err(LocalError::Closing));
    assert!(drain_transmit(&mut p.server).is_empty());
}

// ----- closed -----------------------------------------------------------------------

/// A client that received the server's close and answered it: `Closed { await_eof: true }`.
fn client_awaiting_eof() -> Pair {
    let mut p = open();
    p.client.receive(p.now, &unmasked(0x88, &close_payload(1000, "")));
    drain_events(&mut p.client, p.now);
    drain_transmit(&mut p.client);
    assert!(p.client.wants_input() && !p.client.is_finished());
    p
}

#[test]
fn Closed_awaiting_eof__bytes() {
    let mut p = client_awaiting_eof();
    p.client.receive(p.now, &unmasked(0x81, b"ignored"));
    assert!(drain_events(&mut p.client, p.now).is_empty());
    assert!(p.client.wants_input() && !p.client.is_finished());
}

#[test]
fn Closed_awaiting_eof__eof() {
    let mut p = client_awaiting_eof();
    p.client.receive_eof(p.now);
    assert!(drain_events(&mut p.client, p.now).is_empty(), "Closed was reported once, before");
    assert!(p.client.is_finished());
    assert_eq!(p.client.poll_timeout(), None);
}

#[test]
fn Closed_awaiting_eof__transport_lost() {
    let mut p = client_awaiting_eof();
    p.client.transport_lost(p.now);
    assert!(drain_events(&mut p.client, p.now).is_empty());
    assert!(p.client.is_finished());
}

#[test]
fn Closed_awaiting_eof__close_timer() {
    let mut p = client_awaiting_eof();
    let due = p.client.poll_timeout().unwrap();
    assert_eq!(due, p.now + Duration::from_secs(5));
    p.client.handle_timeout(due);
    assert!(drain_events(&mut p.client, due).is_empty());
    assert!(p.client.is_finished(), "the client stops waiting for the server");
}

/// A server that answered the client's close with output its peer has not taken
/// (`Closed { await_eof: false }`: the client sent its close, so nothing more of
/// it is waited for).
fn closed_with_output() -> Pair {
    let mut p = open();
    p.server.send_binary(p.now, &[1; 100]).unwrap();
    p.server.receive(p.now, &masked(0x88, &close_payload(1000, "")));
    assert!(matches!(&drain_events(&mut p.server, p.now)[..], [Event::Closed(_)]));
    assert!(!p.server.wants_input() && !p.server.is_finished() && !p.server.wants_write_shutdown());
    p
}

/// A server that failed the connection (or refused a request) lingers in
/// `Closed { await_eof: true }`: the rows of that phase, on the server's side.
#[test]
fn Closed_awaiting_eof__a_server_lingers_for_the_clients_eof() {
    for input in ["bytes and eof", "transport lost", "close timer"] {
        let mut p = open();
        p.server.send_binary(p.now, &[1; 100]).unwrap();
        p.server.receive(p.now, &[0x81, 0x00]); // unmasked: fails the connection
        assert!(matches!(&drain_events(&mut p.server, p.now)[..], [Event::Closed(_)]));
        assert!(p.server.wants_input() && !p.server.wants_write_shutdown(), "the output is still to be written");
        assert_eq!(p.server.poll_timeout(), Some(p.now + Duration::from_secs(5)), "the linger bounds it");
        match input {
            "bytes and eof" => {
                assert!(drain_transmit(&mut p.server).len() > 100);
                assert_server_lingers(&mut p.server, p.now);
            }
            "transport lost" => {
                p.server.transport_lost(p.now);
                assert!(p.server.poll_transmit().is_none() && p.server.is_finished());
            }
            _ => {
                drain_transmit(&mut p.server);
                let due = p.server.poll_timeout().unwrap();
                p.server.handle_timeout(due);
                assert!(drain_events(&mut p.server, due).is_empty());
                assert!(p.server.is_finished(), "a client that never closes is not waited for past the linger");
            }
        }
    }
}

#[test]
fn Closed__bytes_and_eof() {
    let mut p = closed_with_output();
    p.server.receive(p.now, &masked(0x81, b"ignored"));
    p.server.receive_eof(p.now);
    assert!(drain_events(&mut p.server, p.now).is_empty());
    assert!(!p.server.is_finished(), "the output is still to be written");
    assert_eq!(p.server.poll_timeout(), Some(p.now + Duration::from_secs(5)), "the linger still bounds it");
    assert_eq!(p.server.send_text(p.now, "x"), Err(LocalError::Closed));
    assert!(drain_transmit(&mut p.server).len() > 100);
    assert!(p.server.is_finished());
}

#[test]
fn Closed__transport_lost() {
    let mut p = closed_with_output();
    p.server.transport_lost(p.now);
    assert!(drain_events(&mut p.server, p.now).is_empty());
    assert!(p.server.poll_transmit().is_none(), "output dropped");
    assert!(p.server.is_finished());
}

#[test]
fn Closed__close_timer_linger() {
    let mut p = closed_with_output();
    let due = p.server.poll_timeout().unwrap();
    p.server.handle_timeout(due);
    assert!(drain_events(&mut p.server, due).is_empty());
    assert!(p.server.poll_transmit().is_none(), "output the peer never took is abandoned");
    assert!(p.server.is_finished());
}

/// A deadline armed for the very instant of the call (a zero timeout) is due at
/// that same instant: time need not move for it to fire.
#[test]
fn a_zero_timeout_fires_without_the_clock_moving() {
    let config = Config { close_timeout: Duration::ZERO, ..config() };
    let mut p = Pair::open(config.clone(), config);
    let now = p.now;
    p.server.close(now, CloseCode::NORMAL, "").unwrap();
    p.server.handle_timeout(now);
    let events = drain_events(&mut p.server, now);
    assert_closed(only_closed(&events), CloseCode::ABNORMAL, Initiator::Local, Some(ConnectionError::CloseTimeout));
    assert!(p.server.is_finished());
}

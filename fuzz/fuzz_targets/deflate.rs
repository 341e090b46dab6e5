//! permessage-deflate (RFC 7692): the `Sec-WebSocket-Extensions` parser and both
//! roles' negotiation against arbitrary header values, and compressed frames in
//! arbitrary pieces on connections that agreed on it.
//!
//! The first byte picks what is fuzzed (its low two bits): 0 negotiation, 1 a
//! server without context takeover (the default), 2 a server with context
//! takeover both ways, 3 a client whose server kept context takeover. For
//! negotiation the next byte is the settings and the rest the header value;
//! otherwise the rest is the stream of frames (as `frames` reads it: split
//! points first).
#![no_main]

use chinwag_core::deflate::{DeflateConfig, check_response, negotiate, parse_extensions};
use chinwag_core::{Accept, ClientRequest, Connection, Event};

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

/// The answer to `client_with`'s request (key `[9; 16]`), keeping context
/// takeover in both directions and limiting neither window.
const RESPONSE: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: YRvg7nG23R+7QjoLe5oqFk+9iMk=\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n";

/// Settings from the bits of a byte: takeover each way, window bits each way.
fn config(bits: u8) -> DeflateConfig {
    DeflateConfig {
        server_no_context_takeover: bits & 1 != 0,
        client_no_context_takeover: bits & 2 != 0,
        server_max_window_bits: 8 + ((bits >> 2) & 7),
        client_max_window_bits: 8 + ((bits >> 5) & 7),
        ..DeflateConfig::default()
    }
}

fn server_with(deflate: DeflateConfig) -> Connection {
    let t0 = chinwag_fuzz::t0();
    let mut conn = chinwag_fuzz::server();
    conn.receive(t0, REQUEST);
    while conn.poll_event(t0).is_some() {}
    conn.accept(t0, Accept::new().with_deflate(deflate)).expect("accept");
    drain(&mut conn);
    assert!(conn.deflate().is_some(), "deflate was negotiated");
    conn
}

fn server_default() -> Connection {
    server_with(DeflateConfig::default())
}

fn server_takeover() -> Connection {
    server_with(DeflateConfig::default().with_context_takeover())
}

fn client_takeover() -> Connection {
    let t0 = chinwag_fuzz::t0();
    let request = ClientRequest::new("ws://fuzz.example/")
        .expect("valid URL")
        .with_deflate(DeflateConfig::default().with_context_takeover());
    let mut n = 0u32;
    let masks = Box::new(move || {
        n = n.wrapping_add(0x9E37_79B9);
        n.to_be_bytes()
    });
    let config = chinwag_fuzz::server().config().clone();
    let mut conn = Connection::client(&request, [9; 16], masks, config, t0);
    drain(&mut conn);
    conn.receive(t0, RESPONSE);
    assert!(matches!(conn.poll_event(t0), Some(Event::Open(_))));
    drain(&mut conn);
    assert!(conn.deflate().is_some(), "deflate was negotiated");
    conn
}

fn drain(conn: &mut Connection) {
    while conn.poll_event(chinwag_fuzz::t0()).is_some() {}
    while let Some(t) = conn.poll_transmit() {
        let n = bytes::Buf::remaining(t);
        bytes::Buf::advance(t, n);
    }
}

/// The parser and both roles' negotiation: no panic, and every answer a server
/// gives is one a client accepts, with window bits in range.
fn negotiation(settings: u8, value: &[u8]) {
    let _ = parse_extensions(value);
    let server = config(settings);
    if let Some(params) = negotiate([value], &server) {
        let response = params.response();
        let parsed = parse_extensions(response.as_bytes()).expect("the answer parses");
        assert_eq!(parsed.len(), 1, "{response}");
        for bits in [params.server_max_window_bits, params.client_max_window_bits].into_iter().flatten() {
            assert!((8..=15).contains(&bits), "{response}");
        }
    }
    for client in [server, DeflateConfig::default()] {
        if let Ok(Some(params)) = check_response([value], &client) {
            assert!(params.server_window_bits() <= 15 && params.client_window_bits() <= 15);
            if client.server_no_context_takeover {
                assert!(params.server_no_context_takeover);
            }
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode & 3 {
        0 => {
            let Some((&settings, value)) = rest.split_first() else { return };
            negotiation(settings, value);
        }
        1 => chinwag_fuzz::check(&server_default, rest),
        2 => chinwag_fuzz::check(&server_takeover, rest),
        _ => chinwag_fuzz::check(&client_takeover, rest),
    }
});

//! The frame decoder in both roles: a valid handshake, then arbitrary frame bytes in
//! arbitrary pieces. The first byte picks the role (and, for a server, whether it
//! skips oversized messages or closes).
#![no_main]

use chinwag_core::Connection;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn open_server() -> Connection {
    accepted(chinwag_fuzz::server())
}

fn open_server_skipping() -> Connection {
    accepted(chinwag_fuzz::server_skipping())
}

fn accepted(mut conn: Connection) -> Connection {
    conn.receive(chinwag_fuzz::t0(), REQUEST);
    while conn.poll_event(chinwag_fuzz::t0()).is_some() {}
    conn.accept(chinwag_fuzz::t0(), chinwag_core::Accept::new()).expect("accept");
    drain(&mut conn);
    conn
}

fn open_client() -> Connection {
    let mut conn = chinwag_fuzz::client();
    conn.receive(chinwag_fuzz::t0(), chinwag_fuzz::CLIENT_RESPONSE);
    assert!(matches!(conn.poll_event(chinwag_fuzz::t0()), Some(chinwag_core::Event::Open(_))));
    drain(&mut conn);
    conn
}

fn drain(conn: &mut Connection) {
    while conn.poll_event(chinwag_fuzz::t0()).is_some() {}
    while let Some(t) = conn.poll_transmit() {
        let n = bytes::Buf::remaining(t);
        bytes::Buf::advance(t, n);
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&role, rest)) = data.split_first() else { return };
    match role & 3 {
        0 => chinwag_fuzz::check(&open_server, rest),
        2 => chinwag_fuzz::check(&open_server_skipping, rest),
        _ => chinwag_fuzz::check(&open_client, rest),
    }
});

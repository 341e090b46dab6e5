//! What the fuzz targets share: feeding a connection whole and in pieces, and
//! comparing what comes out; reading back what a connection wrote ([`wire`]).

pub mod wire;

use bytes::Buf;
use chinwag_core::{Accept, ClientRequest, Config, Connection, Event};
use std::time::Instant;

/// The one instant the byte-only targets run at: time stands still for them (the
/// `lifecycle` target drives time).
pub fn t0() -> Instant {
    static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *T0.get_or_init(Instant::now)
}

/// Splits the fuzzer's input: the first byte picks how many split points follow (two
/// bytes each); the rest is the stream.
pub fn split_input(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&count, rest)) = data.split_first() else { return (vec![], data) };
    let count = usize::from(count % 8);
    let (cuts, stream) = rest.split_at((count * 2).min(rest.len()));
    let mut cuts: Vec<usize> =
        cuts.chunks(2).map(|c| usize::from(u16::from_le_bytes([c[0], *c.get(1).unwrap_or(&0)]))).collect();
    cuts.iter_mut().for_each(|c| *c %= stream.len() + 1);
    cuts.sort_unstable();
    (cuts, stream)
}

/// Feeds `stream` to a fresh connection from `make`, in the pieces `cuts` gives,
/// answering any upgrade request by accepting it. Returns the events (as text) and
/// every byte the connection wrote.
pub fn run(make: &dyn Fn() -> Connection, stream: &[u8], cuts: &[usize]) -> (Vec<String>, Vec<u8>) {
    let mut conn = make();
    let mut events = Vec::new();
    let mut out = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&stream.len())) {
        conn.receive(t0(), &stream[start..end]);
        start = end;
        while let Some(event) = conn.poll_event(t0()) {
            if let Event::UpgradeRequest(_) = event {
                conn.accept(t0(), Accept::new()).expect("a pending upgrade can be accepted");
            }
            events.push(describe(&event));
        }
        while let Some(t) = conn.poll_transmit() {
            out.extend_from_slice(t.chunk());
            let n = t.chunk().len();
            t.advance(n);
        }
    }
    (events, out)
}

/// Events compared as text: `Request` has no equality, and its `Debug` says all.
fn describe(event: &Event) -> String {
    format!("{event:?}")
}

/// A server connection with small limits, so the fuzzer reaches them.
pub fn server() -> Connection {
    Connection::server(small_limits(), t0())
}

/// [`server`], reading past oversized messages instead of closing
/// (`Oversized::Skip`).
pub fn server_skipping() -> Connection {
    let config = Config { oversized: chinwag_core::Oversized::Skip, ..small_limits() };
    Connection::server(config, t0())
}

/// A client connection whose request was already sent.
pub fn client() -> Connection {
    let request = ClientRequest::new("ws://fuzz.example/").expect("valid URL");
    let mut n = 0u32;
    let masks = Box::new(move || {
        n = n.wrapping_add(0x9E37_79B9);
        n.to_be_bytes()
    });
    let mut conn = Connection::client(&request, [9; 16], masks, small_limits(), t0());
    while let Some(t) = conn.poll_transmit() {
        let n = t.remaining();
        t.advance(n);
    }
    conn
}

/// The response that completes `client()`'s handshake.
pub const CLIENT_RESPONSE: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: YRvg7nG23R+7QjoLe5oqFk+9iMk=\r\n\r\n";

fn small_limits() -> Config {
    Config { max_frame_size: 4096, max_message_size: 8192, max_head_size: 2048, max_headers: 32, ..Config::default() }
}

/// Runs the stream whole and in pieces and checks both give the same events and
/// output, and that the output is what an endpoint may write: frames decoded from it
/// are well formed, no close code that must never be sent was, and nothing follows
/// the close frame.
pub fn check(make: &dyn Fn() -> Connection, data: &[u8]) {
    let (cuts, stream) = split_input(data);
    let whole = run(make, stream, &[]);
    let pieces = run(make, stream, &cuts);
    assert_eq!(whole, pieces, "chunking changed the outcome");
    // The same bytes either way, so reading one copy back checks both.
    wire::WireCheck::auto(make().role()).push(&whole.1);
}

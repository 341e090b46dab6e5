//! What the fuzz targets share: feeding a connection whole and in pieces, and
//! comparing what comes out; reading back what a connection wrote ([`wire`]);
//! observing a connection through its life cycle ([`checked`]); JSON values built
//! from fuzz input ([`json`]).

pub mod checked;
pub mod json;
pub mod wire;

use bytes::Buf;
use chinwag_core::frame::{FrameHeader, MAX_HEADER_LEN, apply_mask};
use chinwag_core::{Accept, ClientRequest, CloseCode, Config, Connection, Event};
use std::time::Instant;

/// Whether to print what a target does (set `FUZZ_TRACE` when replaying one input,
/// to see what a crash or a seed does).
pub fn tracing() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FUZZ_TRACE").is_some())
}

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

/// A frame made by hand, for a connection to receive as if its peer wrote it: any
/// header bits, masked or not, any payload.
#[derive(Debug)]
pub struct RawFrame {
    /// The FIN bit.
    pub fin: bool,
    /// The RSV bits (the low three are used).
    pub rsv: u8,
    /// The opcode (the low four bits are used).
    pub opcode: u8,
    /// The masking key, if masked.
    pub mask: Option<[u8; 4]>,
    /// The payload, before masking.
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// Reads a frame from a script: a byte of bits (1: FIN, 2, 4 and 8: the RSV
    /// bits, 16: masked), the opcode byte, the masking key if masked (four bytes),
    /// then the payload (a length byte and the bytes).
    pub fn read(script: &mut Script<'_>) -> Self {
        let bits = script.u8();
        let opcode = script.u8();
        let mask = (bits & 16 != 0).then(|| script.array4());
        Self { fin: bits & 1 != 0, rsv: (bits >> 1) & 7, opcode, mask, payload: script.bytes().to_vec() }
    }

    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let header = FrameHeader {
            fin: self.fin,
            rsv: self.rsv & 7,
            opcode: self.opcode & 0xF,
            mask: self.mask,
            payload_len: self.payload.len() as u64,
        };
        let mut buf = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut buf);
        let mut out = buf[..n].to_vec();
        let start = out.len();
        out.extend_from_slice(&self.payload);
        if let Some(mask) = self.mask {
            apply_mask(&mut out[start..], mask, 0);
        }
        out
    }
}

/// A close code from fuzz input: with `near`, one near the sendable ranges (which
/// random `u16`s rarely hit), else `n` itself.
pub fn close_code(n: u16, near: bool) -> CloseCode {
    const NEAR: &[u16] = &[
        0, 999, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 1015, 1016,
        2999, 3000, 4999, 5000, 65535,
    ];
    if near { CloseCode(NEAR[usize::from(n) % NEAR.len()]) } else { CloseCode(n) }
}

/// A fuzz input read as a script: bytes, little-endian numbers and
/// length-prefixed strings, each read as 0 or empty once the input runs out. Simple
/// enough that a seed can be written by hand, byte by byte.
pub struct Script<'a>(&'a [u8]);

impl<'a> Script<'a> {
    /// Reads `data` from its start.
    pub fn new(data: &'a [u8]) -> Self {
        Self(data)
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// One byte.
    pub fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        b
    }

    /// Two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// A length byte, then that many bytes (fewer if the input ends).
    pub fn bytes(&mut self) -> &'a [u8] {
        let len = usize::from(self.u8()).min(self.0.len());
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        taken
    }

    /// [`bytes`](Self::bytes) as text (invalid UTF-8 replaced).
    pub fn string(&mut self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }

    /// Four bytes.
    pub fn array4(&mut self) -> [u8; 4] {
        [self.u8(), self.u8(), self.u8(), self.u8()]
    }
}

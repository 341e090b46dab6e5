//! Property tests of the connection: any split of the incoming stream gives the same
//! events and the same output, for valid and arbitrary streams, in both roles; and
//! messages of any size, fragmentation and masking round-trip.

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use chinwag_core::frame::{FrameHeader, MAX_HEADER_LEN, OpCode, apply_mask};
use chinwag_core::{Accept, ClientRequest, Config, Connection, Event, Message, Oversized};
use common::{counter_masks, drain_events, drain_transmit, t0};
use proptest::prelude::*;
use std::time::Instant;

/// A comparable summary of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Upgrade(String),
    Http(String),
    Open,
    HandshakeFailed(String),
    Text(String),
    Binary(Vec<u8>),
    Skipped(bool, u64),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Closed(u16, String, bool),
}

fn seen(e: Event) -> Seen {
    match e {
        Event::UpgradeRequest(r) => Seen::Upgrade(r.uri().to_string()),
        Event::HttpRequest(r) => Seen::Http(r.uri().to_string()),
        Event::Open(_) => Seen::Open,
        Event::HandshakeFailed(e) => Seen::HandshakeFailed(e.to_string()),
        Event::Text(t) => Seen::Text(t.to_string()),
        Event::Binary(b) => Seen::Binary(b.to_vec()),
        Event::Skipped(s) => Seen::Skipped(s.text, s.len),
        Event::Ping(b) => Seen::Ping(b.to_vec()),
        Event::Pong(b) => Seen::Pong(b.to_vec()),
        Event::Closed(c) => {
            let clean = c.is_clean();
            Seen::Closed(c.code.0, c.reason, clean)
        }
    }
}

/// One thing put on the wire by the test's own encoder.
#[derive(Debug, Clone)]
enum Item {
    /// A data message split into fragments of these sizes, with a control frame
    /// after some fragments.
    Message {
        text: bool,
        payload: Vec<u8>,
        cuts: Vec<usize>,
        pings_between: Vec<bool>,
    },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        4 => (any::<bool>(), any::<String>(), proptest::collection::vec(any::<u8>(), 0..3000),
              proptest::collection::vec(0usize..4000, 0..4), proptest::collection::vec(any::<bool>(), 0..4))
            .prop_map(|(text, s, bin, cuts, pings_between)| Item::Message {
                text,
                payload: if text { s.into_bytes() } else { bin },
                cuts,
                pings_between,
            }),
        1 => proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Item::Ping),
        1 => proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Item::Pong),
    ]
}

fn put_frame(wire: &mut BytesMut, fin: bool, opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) {
    put_any_frame(wire, fin, 0, opcode as u8, payload, mask);
}

/// [`put_frame`] with any reserved bits and opcode, valid or not.
fn put_any_frame(wire: &mut BytesMut, fin: bool, rsv: u8, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    let header = FrameHeader { fin, rsv, opcode, mask, payload_len: payload.len() as u64 };
    let mut buf = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut buf);
    wire.put_slice(&buf[..n]);
    let start = wire.len();
    wire.put_slice(payload);
    if let Some(m) = mask {
        apply_mask(&mut wire[start..], m, 0);
    }
}

/// Encodes items (masked when `masks` is given) and returns the messages and
/// control payloads a receiver must report.
fn encode_items(items: &[Item], mask: impl FnMut() -> Option<[u8; 4]>) -> (BytesMut, Vec<Seen>) {
    encode_items_within(items, None, mask)
}

/// [`encode_items`], expecting messages over `skip_over` (max frame, max message)
/// to be reported as skipped.
fn encode_items_within(
    items: &[Item],
    skip_over: Option<(usize, usize)>,
    mut mask: impl FnMut() -> Option<[u8; 4]>,
) -> (BytesMut, Vec<Seen>) {
    let mut wire = BytesMut::new();
    let mut expect = Vec::new();
    for item in items {
        match item {
            Item::Ping(p) => {
                put_frame(&mut wire, true, OpCode::Ping, p, mask());
                expect.push(Seen::Ping(p.clone()));
            }
            Item::Pong(p) => {
                put_frame(&mut wire, true, OpCode::Pong, p, mask());
                expect.push(Seen::Pong(p.clone()));
            }
            Item::Message { text, payload, cuts, pings_between } => {
                let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (payload.len() + 1)).collect();
                cuts.sort_unstable();
                cuts.dedup();
                let mut bounds = vec![0];
                bounds.extend(cuts);
                bounds.push(payload.len());
                let pieces: Vec<&[u8]> = bounds.windows(2).map(|w| &payload[w[0]..w[1]]).collect();
                let mut interleaved = Vec::new();
                for (i, piece) in pieces.iter().enumerate() {
                    let opcode = match (i, text) {
                        (0, true) => OpCode::Text,
                        (0, false) => OpCode::Binary,
                        _ => OpCode::Continuation,
                    };
                    let fin = i + 1 == pieces.len();
                    put_frame(&mut wire, fin, opcode, piece, mask());
                    if !fin && pings_between.get(i).copied().unwrap_or(false) {
                        put_frame(&mut wire, true, OpCode::Ping, b"between", mask());
                        interleaved.push(Seen::Ping(b"between".to_vec()));
                    }
                }
                expect.extend(interleaved);
                let oversized = skip_over
                    .is_some_and(|(frame, message)| payload.len() > message || pieces.iter().any(|p| p.len() > frame));
                expect.push(if oversized {
                    Seen::Skipped(*text, payload.len() as u64)
                } else if *text {
                    Seen::Text(String::from_utf8(payload.clone()).unwrap())
                } else {
                    Seen::Binary(payload.clone())
                });
            }
        }
    }
    (wire, expect)
}

/// The bytes a client sends to open, and a matching server response.
fn handshake_bytes() -> (Vec<u8>, Vec<u8>) {
    let now = Instant::now();
    let request = ClientRequest::new("ws://localhost/p?q=1").unwrap();
    let mut client = Connection::client(&request, [3; 16], counter_masks(), Config::default(), now);
    let req = drain_transmit(&mut client);
    let mut server = Connection::server(Config::default(), now);
    server.receive(t0(), &req);
    drain_events(&mut server, t0());
    server.accept(t0(), Accept::new()).unwrap();
    (req, drain_transmit(&mut server))
}

fn split_points(len: usize, cuts: &[usize]) -> Vec<usize> {
    let mut c: Vec<usize> = cuts.iter().map(|c| c % (len + 1)).collect();
    c.sort_unstable();
    c.push(len);
    c
}

/// Feeds `wire` whole and in the pieces given by `cuts`; returns both results as
/// (events, output bytes). Events are drained after every piece, as a driver does:
/// so every split point is parsed from a fresh `receive`, also after the first
/// event (feeding every piece before draining would parse all of them as one
/// buffer once an event is pending).
fn feed_both(make: &dyn Fn() -> Connection, wire: &[u8], cuts: &[usize]) -> [(Vec<Seen>, Vec<u8>); 2] {
    let mut whole = make();
    whole.receive(t0(), wire);
    let whole_result = (drain_events(&mut whole, t0()).into_iter().map(seen).collect(), drain_transmit(&mut whole));
    let mut pieces = make();
    let mut events = Vec::new();
    let mut start = 0;
    for end in split_points(wire.len(), cuts) {
        pieces.receive(t0(), &wire[start..end]);
        events.extend(drain_events(&mut pieces, t0()).into_iter().map(seen));
        start = end;
    }
    let piece_result = (events, drain_transmit(&mut pieces));
    [whole_result, piece_result]
}

/// An echoing application over `wire` in the pieces given by `cuts`: with
/// `drain_each`, events are taken (and each message echoed) after every read, as
/// a level-triggered driver does; without, every piece is read first and the
/// events taken after, as an edge-triggered loop that reads until the socket is
/// empty does. Returns the events and the output.
fn echo_in_pieces(conn: &mut Connection, wire: &[u8], cuts: &[usize], drain_each: bool) -> (Vec<Seen>, Vec<u8>) {
    let mut events = Vec::new();
    let mut take = |conn: &mut Connection| {
        while let Some(event) = conn.poll_event(t0()) {
            // Refused once the connection is closing: the echo is then not sent.
            let _ = match &event {
                Event::Text(t) => conn.send(t0(), &Message::Text(t.clone())),
                Event::Binary(b) => conn.send(t0(), &Message::Binary(b.clone())),
                _ => Ok(()),
            };
            events.push(seen(event));
        }
    };
    let mut start = 0;
    for end in split_points(wire.len(), cuts) {
        conn.receive(t0(), &wire[start..end]);
        start = end;
        if drain_each {
            take(conn);
        }
    }
    take(conn);
    (events, drain_transmit(conn))
}

/// What a fresh connection from `open` reports and writes when it echoes `wire`
/// read at once, and when it reads one byte at a time (nothing can be parsed ahead).
fn echo_whole_and_bytewise(open: &dyn Fn() -> Connection, wire: &[u8]) -> [(Vec<Seen>, Vec<u8>); 2] {
    let bytewise: Vec<usize> = (0..wire.len()).collect();
    [echo_in_pieces(&mut open(), wire, &[], true), echo_in_pieces(&mut open(), wire, &bytewise, true)]
}

/// A server with [`small_limits`], open after `request` and with its output taken.
fn open_server(request: &[u8]) -> Connection {
    open_server_with(small_limits(), request)
}

/// A server connection with `config`, opened by `request`, its 101 taken.
fn open_server_with(config: Config, request: &[u8]) -> Connection {
    let mut s = Connection::server(config, t0());
    s.receive(t0(), request);
    drain_events(&mut s, t0());
    s.accept(t0(), Accept::new()).unwrap();
    drain_events(&mut s, t0());
    drain_transmit(&mut s);
    s
}

/// A client connection with `config`, its request taken and opened by `response`.
fn open_client_with(config: Config, response: &[u8]) -> Connection {
    let request = ClientRequest::new("ws://localhost/p?q=1").unwrap();
    let mut c = Connection::client(&request, [3; 16], counter_masks(), config, t0());
    drain_transmit(&mut c);
    c.receive(t0(), response);
    drain_events(&mut c, t0());
    c
}

fn small_limits() -> Config {
    Config { max_frame_size: 2000, max_message_size: 3000, ..Config::default() }
}

/// One element of a pipelined burst: a whole data message (its text possibly not
/// UTF-8), or any other item (control frames, fragments).
type BurstElement = (Option<(bool, Vec<u8>)>, Option<Item>);

/// Bursts long enough, and with messages large enough, to be read ahead past
/// its bound and its minimum.
fn burst() -> impl Strategy<Value = Vec<BurstElement>> {
    proptest::collection::vec(
        prop_oneof![
            8 => (any::<bool>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300))
                .prop_map(|(text, valid, payload)| {
                    let payload =
                        if text && valid { String::from_utf8_lossy(&payload).into_owned().into_bytes() } else { payload };
                    (Some((text, payload)), None)
                }),
            1 => item().prop_map(|item| (None, Some(item))),
        ],
        0..80,
    )
}

fn junk() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..40)
}

/// The client's bytes for `burst`, then `junk`.
fn burst_wire(burst: &[BurstElement], junk: &[u8]) -> BytesMut {
    burst_wire_masked(burst, junk, true)
}

/// The bytes for `burst`, then `junk`: masked as a client's (`masked`) or not,
/// as a server's.
fn burst_wire_masked(burst: &[BurstElement], junk: &[u8], masked: bool) -> BytesMut {
    let mut frames = BytesMut::new();
    for element in burst {
        match element {
            (Some((text, payload)), _) => {
                let opcode = if *text { OpCode::Text } else { OpCode::Binary };
                put_frame(&mut frames, true, opcode, payload, masked.then_some([1, 2, 3, 4]));
            }
            (None, Some(item)) => {
                frames.extend_from_slice(&encode_items(std::slice::from_ref(item), || masked.then_some([5, 6, 7, 8])).0)
            }
            (None, None) => unreachable!("every element is one or the other"),
        }
    }
    frames.extend_from_slice(junk);
    frames
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// With `Oversized::Skip`, a message over either limit is reported as skipped
    /// with its size, whatever its fragmentation, the control frames between its
    /// fragments still count, the messages after it arrive intact, and nothing is
    /// written but pongs: the connection stays open. In any chunking.
    #[test]
    fn oversized_messages_are_skipped(
        items in proptest::collection::vec(
            (any::<bool>(), 0usize..6000, any::<u8>(), proptest::collection::vec(0usize..6000, 0..4),
             proptest::collection::vec(any::<bool>(), 0..4))
                .prop_map(|(text, len, byte, cuts, pings_between)| Item::Message {
                    text,
                    payload: vec![if text { b'a' + byte % 26 } else { byte }; len],
                    cuts,
                    pings_between,
                }),
            0..5,
        ),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let limits = Config { oversized: Oversized::Skip, ..small_limits() };
        let (request, _) = handshake_bytes();
        let (frames, expect) = encode_items_within(&items, Some((2000, 3000)), || Some([9, 8, 7, 6]));
        let head_len = request.len();
        let make_open = || {
            let mut s = Connection::server(limits.clone(), t0());
            s.receive(t0(), &request[..head_len]);
            drain_events(&mut s, t0());
            s.accept(t0(), Accept::new()).unwrap();
            drain_events(&mut s, t0());
            drain_transmit(&mut s);
            s
        };
        let [whole, pieces] = feed_both(&make_open, &frames, &cuts);
        prop_assert_eq!(&whole, &pieces);
        prop_assert_eq!(&whole.0, &expect);
        let pings = expect.iter().filter(|e| matches!(e, Seen::Ping(_))).count();
        prop_assert_eq!(whole.1.len(), pings * (2 + b"between".len()), "only pongs were written");
    }

    /// Server role: a valid masked stream, after the request, in any chunking.
    #[test]
    fn server_chunking_invariance(
        items in proptest::collection::vec(item(), 0..6),
        masks in proptest::collection::vec(any::<[u8; 4]>(), 64),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let (request, _) = handshake_bytes();
        let mut next = masks.into_iter().cycle();
        let (frames, expect) = encode_items(&items, || next.next());
        let mut wire = request;
        wire.extend_from_slice(&frames);
        let head_len = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let make_open = || {
            let mut s = Connection::server(Config::default(), t0());
            s.receive(t0(), &wire[..head_len]);
            drain_events(&mut s, t0());
            s.accept(t0(), Accept::new()).unwrap();
            drain_events(&mut s, t0());
            drain_transmit(&mut s);
            s
        };
        let [whole, pieces] = feed_both(&make_open, &wire[head_len..], &cuts);
        prop_assert_eq!(&whole, &pieces);
        prop_assert_eq!(&whole.0, &expect);
    }

    /// Client role: the 101 response and unmasked frames, in any chunking.
    #[test]
    fn client_chunking_invariance(
        items in proptest::collection::vec(item(), 0..6),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let (_, response) = handshake_bytes();
        let (frames, expect) = encode_items(&items, || None);
        let mut wire = response;
        wire.extend_from_slice(&frames);
        let make = || {
            let request = ClientRequest::new("ws://localhost/p?q=1").unwrap();
            let mut c = Connection::client(&request, [3; 16], counter_masks(), Config::default(), t0());
            drain_transmit(&mut c);
            c
        };
        let [whole, pieces] = feed_both(&make, &wire, &cuts);
        prop_assert_eq!(&whole, &pieces);
        let mut expect_all = vec![Seen::Open];
        expect_all.extend(expect);
        prop_assert_eq!(&whole.0, &expect_all);
    }

    /// Arbitrary bytes after the handshake (mostly invalid) never panic, give the
    /// same events and output in any chunking, and only ever close with a code that
    /// may be sent.
    #[test]
    fn arbitrary_frames_chunking_invariance(
        junk in proptest::collection::vec(any::<u8>(), 0..600),
        valid_prefix in proptest::collection::vec(item(), 0..2),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
        server in any::<bool>(),
    ) {
        let (request, response) = handshake_bytes();
        let (mut frames, _) = encode_items(&valid_prefix, || server.then_some([1, 2, 3, 4]));
        frames.extend_from_slice(&junk);
        let make: Box<dyn Fn() -> Connection> = if server {
            Box::new(|| {
                open_server(&request)
            })
        } else {
            Box::new(|| open_client_with(small_limits(), &response))
        };
        let [whole, pieces] = feed_both(&*make, &frames, &cuts);
        prop_assert_eq!(&whole, &pieces);
        for e in &whole.0 {
            if let Seen::Closed(code, _, _) = e {
                // Reported codes: the peer's (checked by the core), or 1005/1006.
                let code = chinwag_core::CloseCode(*code);
                prop_assert!(code.is_sendable() || code == chinwag_core::CloseCode::NO_STATUS
                    || code == chinwag_core::CloseCode::ABNORMAL, "closed with {}", code);
            }
        }
        // Every close frame we wrote carries no code or one that may be sent.
        let mut out = &whole.1[..];
        while let Ok(Some((header, at))) = FrameHeader::decode(out) {
            let mut payload = out[at..at + header.payload_len as usize].to_vec();
            if let Some(mask) = header.mask {
                apply_mask(&mut payload, mask, 0);
            }
            if header.opcode == OpCode::Close as u8 && payload.len() >= 2 {
                let code = chinwag_core::CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
                prop_assert!(code.is_sendable(), "sent close code {}", code);
            }
            out = &out[at + header.payload_len as usize..];
        }
        prop_assert!(out.is_empty(), "our output is whole frames");
    }

    /// Frames with arbitrary header fields and payloads (invalid UTF-8, reserved
    /// bits, missing or unexpected masks, lengths over either limit, fragments,
    /// control opcodes), in both roles: the same events and output whether each
    /// arrives whole (a whole message is read in one step) or split (the general
    /// path, a piece at a time).
    #[test]
    fn whole_frames_read_as_split_ones(
        frames in proptest::collection::vec(
            (
                any::<bool>(),
                prop_oneof![6 => Just(0u8), 1 => 0u8..8],
                prop_oneof![Just(0u8), Just(1), Just(2), Just(3), Just(9), Just(10)],
                prop_oneof![8 => Just(true), 1 => Just(false)],
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..40),
                    "[a-z\u{e9}\u{20ac}\u{1f600}]{0,20}".prop_map(String::into_bytes),
                    proptest::collection::vec(any::<u8>(), 1990..2010),
                ],
            ),
            1..6,
        ),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
        server in any::<bool>(),
        // The frame limit below the message limit, or above it.
        (max_frame_size, max_message_size) in prop_oneof![Just((2000usize, 3000usize)), Just((3000, 2000))],
    ) {
        let (request, response) = handshake_bytes();
        let mut wire = BytesMut::new();
        for (fin, rsv, opcode, as_expected, payload) in &frames {
            // Mostly masked for a server and unmasked for a client, as they must be.
            let masked = *as_expected == server;
            put_any_frame(&mut wire, *fin, *rsv, *opcode, payload, masked.then_some([5, 6, 7, 8]));
        }
        let config = Config { max_frame_size, max_message_size, ..Config::default() };
        let open = || {
            if server { open_server_with(config.clone(), &request) } else { open_client_with(config.clone(), &response) }
        };
        let [whole, pieces] = feed_both(&open, &wire, &cuts);
        prop_assert_eq!(&whole, &pieces);
        let bytewise: Vec<usize> = (0..wire.len()).collect();
        let [_, bytes] = feed_both(&open, &wire, &bytewise);
        prop_assert_eq!(&whole, &bytes);
    }

    /// Whether a driver takes events after every read or only after reading all it
    /// can, an echoing server answers the same: every echo of a message before a
    /// violation leaves before the close it causes (Autobahn 4.1.4 with the text
    /// message and the reserved opcode in separate reads).
    #[test]
    fn answers_do_not_depend_on_when_events_are_taken(
        valid_prefix in proptest::collection::vec(item(), 0..4),
        junk in proptest::collection::vec(any::<u8>(), 0..200),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let (request, _) = handshake_bytes();
        let (mut frames, _) = encode_items(&valid_prefix, || Some([1, 2, 3, 4]));
        frames.extend_from_slice(&junk);
        let open = || open_server(&request);
        let whole = echo_in_pieces(&mut open(), &frames, &[], true);
        let level = echo_in_pieces(&mut open(), &frames, &cuts, true);
        let edge = echo_in_pieces(&mut open(), &frames, &cuts, false);
        prop_assert_eq!(&whole, &level);
        prop_assert_eq!(&whole, &edge);
    }

    /// A burst of whole messages in one read, which the connection parses ahead of
    /// the events taken (up to a bound), is answered exactly as when every byte
    /// arrives alone and nothing can be parsed ahead: the same events, and every
    /// echo before the pong, close or error that a later frame causes (a control
    /// frame, invalid UTF-8, a fragment, junk).
    #[test]
    fn a_burst_read_at_once_is_answered_as_one_read_per_byte(burst in burst(), junk in junk()) {
        let (request, _) = handshake_bytes();
        let frames = burst_wire(&burst, &junk);
        let [whole, bytes] = echo_whole_and_bytewise(&|| open_server(&request), &frames);
        prop_assert_eq!(whole, bytes);
    }

    /// The same where reading ahead must stop at a frame it cannot take whole:
    /// messages over the limits skipped (`Oversized::Skip`; the burst's messages
    /// reach 300 bytes, the limits are 200 and 250), and on the client's side
    /// (unmasked frames from the server, the echoes masked).
    #[test]
    fn a_burst_read_at_once_is_answered_as_one_read_per_byte_when_skipping_or_as_a_client(
        burst in burst(),
        junk in junk(),
        client in any::<bool>(),
    ) {
        let (request, response) = handshake_bytes();
        let config =
            Config { oversized: Oversized::Skip, max_message_size: 200, max_frame_size: 250, ..Config::default() };
        let frames = burst_wire_masked(&burst, &junk, !client);
        let open = || {
            if client { open_client_with(config.clone(), &response) } else { open_server_with(config.clone(), &request) }
        };
        let [whole, bytes] = echo_whole_and_bytewise(&open, &frames);
        prop_assert_eq!(whole, bytes);
    }

    /// If the connection ends (here its transport is lost) while messages of a
    /// burst read at once wait, those read ahead of the event that stopped
    /// parsing are dropped with the bytes not parsed yet, as when parsing stops
    /// at every event: after the application took `taken` messages, it sees the
    /// end (after the first message if it took none, which was parsed before the
    /// end), never a message after it.
    #[test]
    fn messages_read_ahead_go_with_the_unparsed_bytes_when_the_connection_ends(
        messages in proptest::collection::vec((any::<bool>(), "[ -~]{0,300}"), 1..80),
        taken in 0usize..90,
    ) {
        let (request, _) = handshake_bytes();
        let burst: Vec<BurstElement> =
            messages.iter().map(|(text, s)| (Some((*text, s.clone().into_bytes())), None)).collect();
        let frames = burst_wire(&burst, &[]);
        let mut conn = open_server(&request);
        conn.receive(t0(), &frames);
        let mut events: Vec<Seen> = std::iter::from_fn(|| conn.poll_event(t0())).take(taken).map(seen).collect();
        conn.transport_lost(t0());
        events.extend(drain_events(&mut conn, t0()).into_iter().map(seen));

        let delivered = taken.max(1).min(messages.len());
        let mut expected: Vec<Seen> = messages[..delivered]
            .iter()
            .map(|(text, s)| if *text { Seen::Text(s.clone()) } else { Seen::Binary(s.clone().into_bytes()) })
            .collect();
        let closed = events.last().cloned();
        prop_assert!(matches!(closed, Some(Seen::Closed(..))), "ends with the close: {:?}", events);
        expected.extend(closed);
        prop_assert_eq!(events, expected);
    }

    /// Arbitrary request heads never panic and give the same events and response in
    /// any chunking.
    #[test]
    fn arbitrary_request_heads(
        head in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            "[A-Z]{1,7} /[a-z/?=&%]{0,20} HTTP/1\\.[01]\r\n([A-Za-z-]{1,20}: [ -~]{0,30}\r\n){0,8}\r\n"
                .prop_map(String::into_bytes),
        ],
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        let make = || Connection::server(Config::default(), t0());
        let [whole, pieces] = feed_both(&make, &head, &cuts);
        prop_assert_eq!(whole, pieces);
    }

    /// Messages sent with the connection's own API arrive intact, both ways.
    #[test]
    fn send_receive_round_trip(
        messages in proptest::collection::vec(prop_oneof![
            any::<String>().prop_map(Message::text),
            proptest::collection::vec(any::<u8>(), 0..5000).prop_map(|b| Message::binary(Bytes::from(b))),
        ], 0..8),
        from_client in any::<bool>(),
    ) {
        let mut p = common::Pair::default_open();
        for m in &messages {
            if from_client { p.client.send(p.now, m).unwrap() } else { p.server.send(p.now, m).unwrap() }
        }
        p.run();
        let got: Vec<Message> = if from_client { &p.server_events } else { &p.client_events }
            .iter()
            .map(|e| match e {
                Event::Text(t) => Message::Text(t.clone()),
                Event::Binary(b) => Message::Binary(b.clone()),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        prop_assert_eq!(got, messages);
    }
}

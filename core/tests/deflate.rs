//! permessage-deflate on connections: negotiation through the handshake, messages
//! compressed and inflated both ways, the RSV1 rules, limits on the inflated size,
//! fail-fast UTF-8 on inflated text, and shared frames compressed once.

mod common;

use chinwag_core::deflate::DeflateConfig;
use chinwag_core::frame::{FrameHeader, MAX_HEADER_LEN, RSV1, apply_mask};
use chinwag_core::{
    Accept, ClientRequest, CloseCode, Config, Connection, ConnectionError, Event, Message, Oversized, ProtocolError,
    SharedFrame,
};
use common::{counter_masks, drain_events, drain_transmit, t0};
use proptest::prelude::*;

/// A client and a server after the handshake, with whatever each end asked for.
fn pair(client: Option<DeflateConfig>, server: Option<DeflateConfig>, config: Config) -> (Connection, Connection) {
    let now = t0();
    let mut request = ClientRequest::new("ws://example.com/").unwrap();
    if let Some(d) = client {
        request = request.with_deflate(d);
    }
    let mut c = Connection::client(&request, *b"0123456789abcdef", counter_masks(), config.clone(), now);
    let mut s = Connection::server(config, now);
    s.receive(now, &drain_transmit(&mut c));
    assert!(matches!(s.poll_event(now), Some(Event::UpgradeRequest(_))));
    let mut accept = Accept::new();
    if let Some(d) = server {
        accept = accept.with_deflate(d);
    }
    s.accept(now, accept).unwrap();
    let Some(Event::Open(opened)) = s.poll_event(now) else { panic!() };
    assert_eq!(opened.deflate.as_ref(), s.deflate());
    c.receive(now, &drain_transmit(&mut s));
    match c.poll_event(now) {
        Some(Event::Open(opened)) => assert_eq!(opened.deflate, s.deflate().copied()),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.deflate(), s.deflate());
    (c, s)
}

fn deflate_pair() -> (Connection, Connection) {
    pair(Some(DeflateConfig::default()), Some(DeflateConfig::default()), Config::default())
}

/// The frames in a stream of bytes: header and unmasked payload.
fn frames(mut wire: &[u8]) -> Vec<(FrameHeader, Vec<u8>)> {
    let mut out = Vec::new();
    while !wire.is_empty() {
        let (header, n) = FrameHeader::decode(wire).unwrap().unwrap();
        let len = header.payload_len as usize;
        let mut payload = wire[n..n + len].to_vec();
        if let Some(mask) = header.mask {
            apply_mask(&mut payload, mask, 0);
        }
        out.push((header, payload));
        wire = &wire[n + len..];
    }
    out
}

/// Encodes a frame, masked if `mask` is given.
fn frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let header = FrameHeader { fin, rsv, opcode, mask, payload_len: payload.len() as u64 };
    let mut buf = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut buf);
    let mut out = buf[..n].to_vec();
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(mask) = mask {
        apply_mask(&mut out[start..], mask, 0);
    }
    out
}

/// Cuts every data frame of `wire` into fragments of at most `size` bytes (RSV1
/// and the opcode on the first only), as another implementation may send them.
fn refragment(wire: &[u8], size: usize, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::new();
    for (header, payload) in frames(wire) {
        let pieces: Vec<&[u8]> = if payload.is_empty() { vec![&[]] } else { payload.chunks(size.max(1)).collect() };
        let last = pieces.len() - 1;
        for (n, piece) in pieces.iter().enumerate() {
            let (rsv, opcode) = if n == 0 { (header.rsv, header.opcode) } else { (0, 0) };
            out.extend(frame(n == last && header.fin, rsv, opcode, piece, mask));
        }
    }
    out
}

fn received(conn: &mut Connection, wire: &[u8], cut: usize) -> Vec<Event> {
    let now = t0();
    let mut events = Vec::new();
    for piece in wire.chunks(cut.max(1)) {
        conn.receive(now, piece);
        events.extend(drain_events(conn, now));
    }
    events.extend(drain_events(conn, now));
    events
}

fn closed_with(events: &[Event]) -> Option<(CloseCode, Option<ConnectionError>)> {
    events.iter().find_map(|e| match e {
        Event::Closed(c) => Some((c.sent.as_ref().map_or(c.code, |s| s.code), c.error)),
        _ => None,
    })
}

#[test]
fn negotiated_by_default_settings_and_compressed_both_ways() {
    let (mut c, mut s) = deflate_pair();
    let p = *s.deflate().unwrap();
    assert!(p.server_no_context_takeover && p.client_no_context_takeover);
    let now = t0();
    let text = "chinwag ".repeat(100);
    c.send_text(now, &text).unwrap();
    let wire = drain_transmit(&mut c);
    let f = frames(&wire);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].0.rsv, RSV1, "compressed");
    assert!(wire.len() < 100, "{} bytes on the wire", wire.len());
    match received(&mut s, &wire, 7).as_slice() {
        [Event::Text(t)] => assert_eq!(t.as_str(), text),
        other => panic!("{other:?}"),
    }
    s.send(now, &Message::text(text.clone())).unwrap();
    let wire = drain_transmit(&mut s);
    assert_eq!(frames(&wire)[0].0.rsv, RSV1);
    match received(&mut c, &wire, 3).as_slice() {
        [Event::Text(t)] => assert_eq!(t.as_str(), text),
        other => panic!("{other:?}"),
    }
    // Short messages go uncompressed.
    c.send_text(now, "hi").unwrap();
    let wire = drain_transmit(&mut c);
    assert_eq!(frames(&wire)[0].0.rsv, 0);
    assert!(matches!(received(&mut s, &wire, 100).as_slice(), [Event::Text(t)] if t == "hi"));
}

#[test]
fn not_negotiated_unless_both_ends_want_it() {
    for (client, server) in
        [(None, Some(DeflateConfig::default())), (Some(DeflateConfig::default()), None), (None, None)]
    {
        let (mut c, mut s) = pair(client, server, Config::default());
        assert!(s.deflate().is_none() && c.deflate().is_none());
        let now = t0();
        c.send_text(now, &"x".repeat(1000)).unwrap();
        let wire = drain_transmit(&mut c);
        assert_eq!(frames(&wire)[0].0.rsv, 0);
        assert!(matches!(received(&mut s, &wire, 100).as_slice(), [Event::Text(_)]));
        // And RSV1 is then a protocol error.
        let events = received(&mut s, &frame(true, RSV1, 1, b"\xf2\x48\xcd\xc9\xc9\x07\x00", Some([1, 2, 3, 4])), 100);
        assert_eq!(
            closed_with(&events),
            Some((CloseCode::PROTOCOL_ERROR, Some(ConnectionError::Protocol(ProtocolError::ReservedBits))))
        );
    }
}

#[test]
fn rsv1_rules() {
    let mask = Some([9, 8, 7, 6]);
    let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    // RFC 7692 §7.2.3.1 "Hello", and the same split in two fragments (§7.2.3.1's
    // second example): RSV1 on the first fragment only.
    let (_, mut s) = deflate_pair();
    let mut wire = frame(true, RSV1, 1, &hello, mask);
    wire.extend(frame(false, RSV1, 1, &hello[..3], mask));
    wire.extend(frame(true, 0, 0, &hello[3..], mask));
    match received(&mut s, &wire, 5).as_slice() {
        [Event::Text(a), Event::Text(b)] => assert_eq!((a.as_str(), b.as_str()), ("Hello", "Hello")),
        other => panic!("{other:?}"),
    }
    // RSV1 on a continuation frame, on a control frame; RSV2 and RSV3.
    for wire in [
        [frame(false, RSV1, 1, &hello[..3], mask), frame(true, RSV1, 0, &hello[3..], mask)].concat(),
        [frame(false, 0, 1, b"He", mask), frame(true, RSV1, 0, b"llo", mask)].concat(),
        frame(true, RSV1, 9, b"", mask),
        frame(true, RSV1, 8, &[3, 232], mask),
        frame(true, 0b010, 1, b"x", mask),
        frame(true, 0b001, 2, b"x", mask),
        frame(true, RSV1 | 0b010, 1, &hello, mask),
    ] {
        let (_, mut s) = deflate_pair();
        let events = received(&mut s, &wire, 100);
        assert_eq!(
            closed_with(&events),
            Some((CloseCode::PROTOCOL_ERROR, Some(ConnectionError::Protocol(ProtocolError::ReservedBits)))),
            "{events:?}"
        );
    }
    // Control frames interleaved with a compressed fragmented message.
    let (_, mut s) = deflate_pair();
    let wire =
        [frame(false, RSV1, 1, &hello[..2], mask), frame(true, 0, 9, b"p", mask), frame(true, 0, 0, &hello[2..], mask)]
            .concat();
    match received(&mut s, &wire, 1).as_slice() {
        [Event::Ping(p), Event::Text(t)] => assert_eq!((&p[..], t.as_str()), (&b"p"[..], "Hello")),
        other => panic!("{other:?}"),
    }
}

/// Compresses `data` as a peer would (through a client connection).
fn compressed_by_client(data: &[u8], text: bool) -> Vec<u8> {
    let config = DeflateConfig { min_size: 0, ..DeflateConfig::default() };
    let (mut c, _) = pair(Some(config), Some(config), Config::default());
    if text {
        c.send_text(t0(), std::str::from_utf8(data).unwrap()).unwrap();
    } else {
        c.send_binary(t0(), data).unwrap();
    }
    let wire = drain_transmit(&mut c);
    assert_eq!(frames(&wire)[0].0.rsv, RSV1);
    wire
}

#[test]
fn a_decompression_bomb_closes_with_1009_before_it_costs_memory() {
    let bomb = compressed_by_client(&vec![0u8; 16 << 20], false);
    assert!(bomb.len() < 40_000, "{}", bomb.len());
    let config = Config { max_message_size: 64 << 10, ..Config::default() };
    let (_, mut s) = pair(Some(DeflateConfig::default()), Some(DeflateConfig::default()), config.clone());
    let events = received(&mut s, &bomb, 1000);
    assert_eq!(
        closed_with(&events),
        Some((CloseCode::MESSAGE_TOO_BIG, Some(ConnectionError::Protocol(ProtocolError::MessageTooLarge))))
    );
    // With Oversized::Skip, it is skipped and the next message arrives.
    let config = Config { oversized: Oversized::Skip, ..config };
    let (_, mut s) = pair(Some(DeflateConfig::default()), Some(DeflateConfig::default()), config);
    let next = compressed_by_client("after".repeat(20).as_bytes(), true);
    let events = received(&mut s, &[bomb, next].concat(), 999);
    match events.as_slice() {
        [Event::Skipped(skipped), Event::Text(t)] => {
            assert_eq!(t.as_str(), "after".repeat(20));
            // Its frames are under the limit; what it inflated to is not.
            assert!(skipped.len > 64 << 10, "{skipped:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_message_exactly_at_the_limit_passes_even_if_it_does_not_compress() {
    // Incompressible bytes: deflate adds a few bytes, the inflated size is the limit.
    let mut x = 0x9E37_79B9u32;
    let data: Vec<u8> = (0..(64 << 10))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let config = Config { max_message_size: 64 << 10, max_frame_size: 64 << 10, ..Config::default() };
    // With context takeover a sender compresses every message (skipping one would
    // leave the peer's window behind), so this one grows a little on the wire.
    let d = DeflateConfig::default().with_context_takeover();
    let (mut c, mut s) = pair(Some(d), Some(d), config);
    c.send_binary(t0(), &data).unwrap();
    let wire = drain_transmit(&mut c);
    let f = frames(&wire);
    assert_eq!(f[0].0.rsv, RSV1);
    assert!(f[0].1.len() > 64 << 10, "{}", f[0].1.len());
    assert!(matches!(received(&mut s, &wire, 4096).as_slice(), [Event::Binary(b)] if b.len() == 64 << 10));
}

#[test]
fn inflated_text_is_checked_as_it_comes_out() {
    // 1 MiB of text whose first bytes are not UTF-8: the connection closes with
    // 1007 long before the message ends.
    let mut data = vec![0xff, 0xfe];
    data.extend(std::iter::repeat_n(b'a', 1 << 20));
    let mut wire = compressed_by_client(&data, false);
    // Make it a text frame (opcode in the first byte).
    wire[0] = (wire[0] & 0xF0) | 0x1;
    let (_, mut s) = deflate_pair();
    let header_len = FrameHeader::decode(&wire).unwrap().unwrap().1;
    // Only the header and the first bytes of the payload.
    let events = received(&mut s, &wire[..header_len + 20], 1);
    assert_eq!(
        closed_with(&events),
        Some((CloseCode::INVALID_PAYLOAD, Some(ConnectionError::Protocol(ProtocolError::InvalidUtf8))))
    );
    // Invalid DEFLATE data.
    let (_, mut s) = deflate_pair();
    let events = received(&mut s, &frame(true, RSV1, 2, &[0xff, 0xff, 0xff, 0xff], Some([1, 2, 3, 4])), 100);
    assert_eq!(
        closed_with(&events),
        Some((CloseCode::INVALID_PAYLOAD, Some(ConnectionError::Protocol(ProtocolError::InvalidCompressedData))))
    );
}

#[test]
fn shared_frames_are_compressed_once_per_class() {
    let d = DeflateConfig::default();
    let (mut c1, mut s1) = pair(Some(d), Some(d), Config::default());
    let (mut c2, mut s2) = pair(Some(d), Some(d), Config::default());
    let (mut c3, mut s3) = pair(None, Some(d), Config::default());
    let (mut c4, mut s4) = pair(Some(d.with_context_takeover()), Some(d.with_context_takeover()), Config::default());
    let line = "{\"from\":\"ann\",\"text\":\"hello everyone, hello everyone\"}".repeat(4);
    let frame = SharedFrame::text(&line);
    let now = t0();
    for s in [&mut s1, &mut s2, &mut s3, &mut s4] {
        s.send_shared(now, &frame).unwrap();
        s.send_shared(now, &frame).unwrap();
    }
    let (w1, w2, w3, w4) =
        (drain_transmit(&mut s1), drain_transmit(&mut s2), drain_transmit(&mut s3), drain_transmit(&mut s4));
    assert_eq!(w1, w2, "the same compressed bytes");
    assert_eq!(frames(&w1)[0].0.rsv, RSV1);
    assert_eq!(w3, [frame.as_bytes().to_vec(), frame.as_bytes().to_vec()].concat(), "uncompressed without deflate");
    // With context takeover the second copy is shorter (it refers to the first).
    let f4 = frames(&w4);
    assert!(f4[1].1.len() < f4[0].1.len(), "{} {}", f4[1].1.len(), f4[0].1.len());
    for (c, w) in [(&mut c1, &w1), (&mut c2, &w2), (&mut c3, &w3), (&mut c4, &w4)] {
        match received(c, w, 10).as_slice() {
            [Event::Text(a), Event::Text(b)] => assert!(a == line.as_str() && b == line.as_str()),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn server_accepts_what_browsers_offer() {
    let now = t0();
    let mut s = Connection::server(Config::default(), now);
    s.receive(
        now,
        b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
    );
    assert!(matches!(s.poll_event(now), Some(Event::UpgradeRequest(_))));
    s.accept(now, Accept::new().with_deflate(DeflateConfig::default())).unwrap();
    let response = String::from_utf8(drain_transmit(&mut s)).unwrap();
    assert!(
        response.contains(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
        ),
        "{response}"
    );
}

#[test]
fn client_fails_on_an_invalid_answer() {
    let now = t0();
    let request = ClientRequest::new("ws://h/").unwrap().with_deflate(DeflateConfig::default());
    let mut c = Connection::client(&request, *b"0123456789abcdef", counter_masks(), Config::default(), now);
    let sent = String::from_utf8(drain_transmit(&mut c)).unwrap();
    assert!(sent.contains("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits\r\n"), "{sent}");
    let accept =
        chinwag_core::handshake::accept_key(chinwag_core::handshake::client_key(*b"0123456789abcdef").as_bytes());
    c.receive(
        now,
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=16\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(matches!(c.poll_event(now), Some(Event::HandshakeFailed(_))));
}

fn deflate_config() -> impl Strategy<Value = DeflateConfig> {
    let settings = (any::<bool>(), any::<bool>(), 8u8..16, 8u8..16, 0u8..10, prop_oneof![Just(0usize), 0usize..300]);
    (settings, any::<bool>()).prop_map(|((snct, cnct, sbits, cbits, level, min_size), skip_incompressible)| {
        DeflateConfig {
            level,
            min_size,
            server_no_context_takeover: snct,
            client_no_context_takeover: cnct,
            server_max_window_bits: sbits,
            client_max_window_bits: cbits,
            skip_incompressible,
        }
    })
}

fn messages() -> impl Strategy<Value = Vec<Message>> {
    let text = prop_oneof!["[a-z ]{0,400}", ".{0,100}", "(hello |world ){0,200}"].prop_map(Message::text);
    let binary = prop::collection::vec(prop_oneof![any::<u8>(), Just(0u8)], 0..2000).prop_map(Message::binary);
    prop::collection::vec(prop_oneof![text, binary], 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Any messages, both directions, any parameters both ends may choose, any
    /// split of the byte stream and any fragmentation of the frames arrive as
    /// sent, in order.
    #[test]
    fn round_trips(
        client in deflate_config(),
        server in deflate_config(),
        sent in messages(),
        cut in 1usize..3000,
        fragment in prop::option::of(1usize..300),
    ) {
        let (mut c, mut s) = pair(Some(client), Some(server), Config::default());
        prop_assert!(c.deflate().is_some());
        let now = t0();
        for from_client in [true, false] {
            let (sender, receiver) = if from_client { (&mut c, &mut s) } else { (&mut s, &mut c) };
            for m in &sent {
                sender.send(now, m).unwrap();
            }
            let mut wire = drain_transmit(sender);
            if let Some(size) = fragment {
                wire = refragment(&wire, size, from_client.then_some([5, 6, 7, 8]));
            }
            let got: Vec<Message> = received(receiver, &wire, cut)
                .into_iter()
                .map(|e| match e {
                    Event::Text(t) => Message::Text(t),
                    Event::Binary(b) => Message::Binary(b),
                    other => panic!("{other:?}"),
                })
                .collect();
            prop_assert_eq!(&got, &sent);
        }
    }
}

/// A server that echoes `wire` fed in the pieces `cuts` gives (events taken after
/// every piece, as a driver does): what it reported, and what it wrote.
fn echo_in_pieces(server: &mut Connection, wire: &[u8], cuts: &[usize]) -> (Vec<String>, Vec<u8>) {
    let now = t0();
    let mut seen = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&wire.len())) {
        server.receive(now, &wire[start..end.max(start)]);
        start = end.max(start);
        while let Some(event) = server.poll_event(now) {
            let _ = match &event {
                Event::Text(t) => server.send(now, &Message::Text(t.clone())),
                Event::Binary(b) => server.send(now, &Message::Binary(b.clone())),
                _ => Ok(()),
            };
            seen.push(format!("{event:?}"));
        }
    }
    (seen, drain_transmit(server))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A burst of messages, compressed and not (small ones stay plain), read at
    /// once, is answered exactly as when every byte arrives alone: the connection
    /// reads plain messages ahead of the events taken, and must stop at a
    /// compressed one, whose inflater carries context from message to message.
    #[test]
    fn a_burst_read_at_once_is_answered_as_one_read_per_byte(sent in prop::collection::vec(
        prop_oneof![
            "[a-z ]{0,400}".prop_map(Message::text),
            "(hello |world ){0,100}".prop_map(Message::text),
            prop::collection::vec(any::<u8>(), 0..300).prop_map(Message::binary),
            (any::<u8>(), 0..600usize).prop_map(|(byte, n)| Message::binary(vec![byte; n])),
        ],
        0..60,
    )) {
        let now = t0();
        let open = || {
            let (mut c, s) = deflate_pair();
            for m in &sent {
                c.send(now, m).unwrap();
            }
            (drain_transmit(&mut c), s)
        };
        let (wire, mut whole) = open();
        let (_, mut bytewise) = open();
        let cuts: Vec<usize> = (1..wire.len()).collect();
        prop_assert_eq!(echo_in_pieces(&mut whole, &wire, &[]), echo_in_pieces(&mut bytewise, &wire, &cuts));
    }
}

#[test]
fn control_frames_are_never_compressed_and_compress_everything_compresses_the_rest() {
    let d = DeflateConfig::default().compress_everything();
    let (mut c, mut s) = pair(Some(d), Some(d), Config::default());
    let now = t0();
    // Even a two-byte message and incompressible bytes are compressed.
    let mut x = 0x9E37_79B9u32;
    let noise: Vec<u8> = (0..3000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    c.send_text(now, "hi").unwrap();
    c.send_binary(now, &noise).unwrap();
    c.ping(now, &[b'a'; 125]).unwrap();
    let wire = drain_transmit(&mut c);
    let f = frames(&wire);
    assert_eq!(f.iter().map(|(h, _)| h.rsv).collect::<Vec<_>>(), [RSV1, RSV1, 0], "pings are never compressed");
    match received(&mut s, &wire, 11).as_slice() {
        [Event::Text(t), Event::Binary(b), Event::Ping(p)] => {
            assert_eq!((t.as_str(), &b[..], p.len()), ("hi", &noise[..], 125));
        }
        other => panic!("{other:?}"),
    }
    // The pong and the close frame go out uncompressed too.
    s.close(now, CloseCode::NORMAL, &"r".repeat(120)).unwrap();
    let wire = drain_transmit(&mut s);
    assert!(frames(&wire).iter().all(|(h, _)| h.rsv == 0), "{:?}", frames(&wire));
    // By default the same noise would go uncompressed (it does not shrink).
    let (mut c, _) = deflate_pair();
    c.send_binary(now, &noise).unwrap();
    assert_eq!(frames(&drain_transmit(&mut c))[0].0.rsv, 0);
}

#[test]
fn a_compressed_broadcast_is_one_buffer_shared_by_its_recipients() {
    let d = DeflateConfig::default();
    let frame = SharedFrame::text(&"hello everyone, ".repeat(20));
    let mut queued = Vec::new();
    for _ in 0..3 {
        let (_, mut s) = pair(Some(d), Some(d), Config::default());
        s.send_shared(t0(), &frame).unwrap();
        let out = s.poll_transmit().unwrap();
        let chunk = bytes::Buf::chunk(out);
        assert_eq!(FrameHeader::decode(chunk).unwrap().unwrap().0.rsv, RSV1, "compressed");
        queued.push(chunk.as_ptr());
    }
    assert!(queued.windows(2).all(|w| w[0] == w[1]), "compressed once, queued by reference: {queued:?}");
}

//! Every peer violation gets its close code, at the byte that reveals it.

mod common;

use chinwag_core::{CloseCode, Config, ConnectionError, Event, ProtocolError};
use common::{Pair, drain_events, drain_transmit};

/// A masked client frame with an all-zero mask (so the payload is readable).
fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![b0];
    match payload.len() {
        n @ 0..=125 => f.push(0x80 | n as u8),
        n @ 126..=0xFFFF => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// Feeds `wire` to an open server connection; returns the close it reported and the
/// code of the close frame it sent.
fn server_closes(config: Config, wire: &[u8]) -> (chinwag_core::Closed, Option<u16>) {
    let mut p = Pair::open(Config::default(), config);
    p.server.receive(p.now, wire);
    let events = drain_events(&mut p.server, p.now);
    let Some(Event::Closed(closed)) = events.last().cloned() else { panic!("no close for {wire:x?}: {events:?}") };
    let out = drain_transmit(&mut p.server);
    let sent = (out.len() >= 4 && out[0] == 0x88).then(|| u16::from_be_bytes([out[2], out[3]]));
    // Once flushed, a failed connection shuts its writing side down and lingers
    // only for the client's EOF.
    assert!(p.server.wants_write_shutdown(), "a failed connection does not shut its writing side down");
    p.server.receive_eof(p.now);
    assert!(p.server.is_finished(), "a failed connection is not finished at the client's EOF");
    (*closed, sent)
}

#[test]
fn violations_and_their_codes() {
    use ProtocolError::*;
    let cases: Vec<(&str, Vec<u8>, ProtocolError)> = vec![
        ("RSV1 without extension", frame(0xC1, b"x"), ReservedBits),
        ("RSV3", frame(0x91, b"x"), ReservedBits),
        ("reserved data opcode 3", frame(0x83, b""), ReservedOpcode(3)),
        ("reserved control opcode 0xB", frame(0x8B, b""), ReservedOpcode(0xB)),
        ("unmasked client frame", vec![0x81, 0x01, b'x'], UnmaskedFrame),
        ("fragmented ping", frame(0x09, b""), FragmentedControl),
        ("ping over 125 bytes", frame(0x89, &[0; 126]), ControlTooLong),
        ("continuation first", frame(0x80, b"x"), UnexpectedContinuation),
        ("text inside fragmented text", [frame(0x01, b"a"), frame(0x81, b"b")].concat(), ExpectedContinuation),
        ("64-bit length with top bit", vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], InvalidLength),
        ("one-byte close", frame(0x88, &[3]), TruncatedClose),
        ("close code 1005", frame(0x88, &[0x03, 0xED]), InvalidCloseCode(1005)),
        ("close code 999", frame(0x88, &[0x03, 0xE7]), InvalidCloseCode(999)),
        ("close code 5000", frame(0x88, &[0x13, 0x88]), InvalidCloseCode(5000)),
        ("close reason not UTF-8", frame(0x88, &[0x03, 0xE8, 0xC0]), InvalidUtf8),
        ("text not UTF-8", frame(0x81, &[0xFF]), InvalidUtf8),
        ("text ends mid code point", frame(0x81, &[0xE2, 0x82]), InvalidUtf8),
        ("fragments end mid code point", [frame(0x01, &[0xE2]), frame(0x80, &[0x82])].concat(), InvalidUtf8),
    ];
    for (what, wire, error) in cases {
        let (closed, sent) = server_closes(Config::default(), &wire);
        assert_eq!(closed.error, Some(ConnectionError::Protocol(error)), "{what}");
        assert_eq!(closed.code, CloseCode::ABNORMAL, "{what}: no close frame was received");
        assert_eq!(closed.sent.as_ref().map(|f| f.code), Some(error.close_code()), "{what}");
        assert_eq!(sent, Some(error.close_code().0), "{what}: close frame on the wire");
    }
}

#[test]
fn size_limits_close_with_1009_at_the_header() {
    let config = Config { max_frame_size: 1000, max_message_size: 1500, ..Config::default() };
    // Only the header of an oversized frame: no payload needs to arrive.
    let header_only = &frame(0x82, &[0; 1001])[..8];
    let (closed, sent) = server_closes(config.clone(), header_only);
    assert_eq!((closed.effective_code(), sent), (CloseCode::MESSAGE_TOO_BIG, Some(1009)));
    assert_eq!(closed.error, Some(ConnectionError::Protocol(ProtocolError::FrameTooLarge)));
    // Two fragments under the frame limit that exceed the message limit.
    let wire = [frame(0x02, &[0; 1000]), frame(0x80, &[0; 501])[..8].to_vec()].concat();
    let (closed, _) = server_closes(config, &wire);
    assert_eq!(closed.error, Some(ConnectionError::Protocol(ProtocolError::MessageTooLarge)));
}

#[test]
fn invalid_utf8_fails_mid_frame_before_the_rest_arrives() {
    let mut p = Pair::default_open();
    // A 1000-byte text frame announced; 10 valid bytes, then an invalid one arrive.
    let full = frame(0x81, &[b'a'; 1000]);
    let header_len = full.len() - 1000;
    let mut wire = full[..header_len + 10].to_vec();
    wire.push(0xFF);
    p.server.receive(p.now, &wire[..header_len + 10]);
    assert!(drain_events(&mut p.server, p.now).is_empty(), "valid so far");
    p.server.receive(p.now, &wire[header_len + 10..]);
    let events = drain_events(&mut p.server, p.now);
    assert!(
        matches!(events.last(), Some(Event::Closed(c)) if c.effective_code() == CloseCode::INVALID_PAYLOAD),
        "closed with 1007 at the invalid byte, 989 bytes before the frame's end: {events:?}"
    );
}

#[test]
fn nothing_is_processed_after_a_failure_or_a_close() {
    let mut p = Pair::default_open();
    let wire = [frame(0x88, &[0x03, 0xE8]), frame(0x81, b"after close"), frame(0x89, b"ping")].concat();
    p.server.receive(p.now, &wire);
    let events = drain_events(&mut p.server, p.now);
    assert!(matches!(&events[..], [Event::Closed(c)] if c.code == CloseCode::NORMAL), "{events:?}");
    let out = drain_transmit(&mut p.server);
    assert_eq!(out, [0x88, 0x02, 0x03, 0xE8], "only the close reply, no pong");
}

#[test]
fn control_frames_interleave_with_fragments_and_pings_get_pongs() {
    let mut p = Pair::default_open();
    let wire =
        [frame(0x01, b"hel"), frame(0x89, b"p1"), frame(0x00, b"lo "), frame(0x8A, b"p2"), frame(0x80, b"world")]
            .concat();
    p.server.receive(p.now, &wire);
    let events = drain_events(&mut p.server, p.now);
    assert!(
        matches!(&events[..], [Event::Ping(a), Event::Pong(b), Event::Text(t)] if a[..] == *b"p1" && b[..] == *b"p2" && t == "hello world"),
        "{events:?}"
    );
    assert_eq!(drain_transmit(&mut p.server), [0x8A, 0x02, b'p', b'1'], "pong echoes the ping payload");
}

#[test]
fn close_without_code_is_answered_without_code() {
    let mut p = Pair::default_open();
    p.server.receive(p.now, &frame(0x88, b""));
    let events = drain_events(&mut p.server, p.now);
    assert!(matches!(&events[..], [Event::Closed(c)] if c.code == CloseCode::NO_STATUS && c.is_clean()));
    assert_eq!(drain_transmit(&mut p.server), [0x88, 0x00]);
}

#[test]
fn client_rejects_masked_server_frames() {
    let mut p = Pair::default_open();
    p.client.receive(p.now, &frame(0x81, b"x"));
    let events = drain_events(&mut p.client, p.now);
    assert!(matches!(events.last(), Some(Event::Closed(c))
        if c.error == Some(ConnectionError::Protocol(ProtocolError::MaskedFrame))));
}

#[test]
fn a_reply_to_a_message_leaves_before_the_close_for_a_later_violation() {
    let mut p = Pair::default_open();
    // One read holds a valid message and then a frame with RSV1 set (Autobahn 3.3).
    p.server.receive(p.now, &[frame(0x81, b"first"), frame(0xC1, b"bad")].concat());
    let Some(Event::Text(text)) = p.server.poll_event(p.now) else { panic!("the message comes first") };
    assert!(p.server.has_events(), "more input is waiting");
    p.server.send_text(p.now, &text).unwrap();
    assert!(
        matches!(p.server.poll_event(p.now), Some(Event::Closed(c)) if c.effective_code() == CloseCode::PROTOCOL_ERROR)
    );
    let wire = drain_transmit(&mut p.server);
    assert_eq!(&wire[..7], b"\x81\x05first", "the echo is written first");
    assert_eq!(&wire[7..11], &[0x88, wire[8], 0x03, 0xEA], "then the 1002 close");
}

/// The same when the violation arrives in a later read that the driver feeds
/// before taking the first event (an edge-triggered loop reads until the socket
/// is empty): the event already waiting holds back the parsing of later bytes.
#[test]
fn a_reply_leaves_before_the_close_when_the_violation_comes_in_a_later_read() {
    let mut p = Pair::default_open();
    p.server.receive(p.now, &frame(0x81, b"first"));
    // Autobahn 4.1.4: a reserved opcode, then a ping, in the next read.
    p.server.receive(p.now, &[frame(0x86, b"bad"), frame(0x89, b"")].concat());
    assert!(p.server.poll_transmit().is_none(), "nothing is answered before the event is taken");
    let Some(Event::Text(text)) = p.server.poll_event(p.now) else { panic!("the message comes first") };
    p.server.send_text(p.now, &text).unwrap();
    assert!(
        matches!(p.server.poll_event(p.now), Some(Event::Closed(c)) if c.effective_code() == CloseCode::PROTOCOL_ERROR)
    );
    let wire = drain_transmit(&mut p.server);
    assert_eq!(&wire[..7], b"\x81\x05first", "the echo is written first");
    assert_eq!(&wire[7..11], &[0x88, wire[8], 0x03, 0xEA], "then the 1002 close, and no pong");
    assert_eq!(wire.len(), 7 + 2 + wire[8] as usize);
}

#[test]
fn an_invalid_length_is_caught_at_the_same_byte_however_the_header_is_split() {
    // Found by the `frames` fuzz target: a 64-bit length with its top bit set, and
    // no mask key yet. Whole, the error showed at once; split after two bytes, the
    // reader waited for the mask key first.
    let header = [0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00];
    for cut in 0..header.len() {
        let mut p = Pair::default_open();
        p.server.receive(p.now, &header[..cut]);
        p.server.receive(p.now, &header[cut..]);
        let events = drain_events(&mut p.server, p.now);
        assert!(
            matches!(events.last(), Some(Event::Closed(c)) if c.error == Some(ConnectionError::Protocol(ProtocolError::InvalidLength))),
            "split at {cut}: {events:?}"
        );
    }
}

/// Skipping an oversized message keeps no memory, but must not read forever: a
/// message over `max_skipped_size` closes with 1009 after all, at the header that
/// takes it over the bound.
#[test]
fn skipping_is_bounded_by_max_skipped_size() {
    let config = Config {
        max_frame_size: 100,
        max_message_size: 100,
        oversized: chinwag_core::Oversized::Skip,
        max_skipped_size: 1000,
        ..Config::default()
    };
    // A frame header announcing 2^62 bytes: closed at the header.
    let huge = [0x82, 0xFF, 0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let (closed, sent) = server_closes(config.clone(), &huge);
    assert_eq!(closed.error, Some(ConnectionError::Protocol(ProtocolError::MessageTooLarge)));
    assert_eq!(sent, Some(1009));

    // An endless fragmented message: skipped while its total stays within the bound,
    // closed by the frame that takes it over.
    let mut p = Pair::open(Config::default(), config.clone());
    p.server.receive(p.now, &frame(0x02, &[1; 120]));
    for _ in 0..7 {
        p.server.receive(p.now, &frame(0x00, &[1; 120])); // 960 bytes so far
    }
    assert!(drain_events(&mut p.server, p.now).is_empty(), "still skipping, still open");
    assert_eq!(p.server.state(), chinwag_core::State::Open);
    p.server.receive(p.now, &frame(0x00, &[1; 41])); // 1001
    let events = drain_events(&mut p.server, p.now);
    assert!(
        matches!(events.last(), Some(Event::Closed(c)) if c.error == Some(ConnectionError::Protocol(ProtocolError::MessageTooLarge))),
        "{events:?}"
    );

    // Up to the bound, a skipped message is reported and the connection stays open.
    let mut p = Pair::open(Config::default(), config);
    p.server.receive(p.now, &[frame(0x02, &[1; 120]), frame(0x80, &[1; 120])].concat());
    let events = drain_events(&mut p.server, p.now);
    assert!(matches!(&events[..], [Event::Skipped(s)] if s.len == 240), "{events:?}");
    p.server.receive(p.now, &frame(0x81, b"next"));
    assert!(matches!(&drain_events(&mut p.server, p.now)[..], [Event::Text(t)] if t == "next"));
}

//! Client and server cores against each other, with virtual time: close from either
//! side, simultaneous close, keepalive, dead peers and timeouts.

mod common;

use chinwag_core::{CloseCode, Config, ConnectionError, Event, Initiator, State};
use common::Pair;
use std::time::Duration;

fn closed(events: &[Event]) -> &chinwag_core::Closed {
    match events.last() {
        Some(Event::Closed(c)) => c,
        other => panic!("expected Closed last, got {other:?} in {events:?}"),
    }
}

#[test]
fn messages_flow_both_ways() {
    let mut p = Pair::default_open();
    p.client.send_text(p.now, "from client").unwrap();
    p.client.send_binary(p.now, &[1, 2, 3]).unwrap();
    p.server.send_text(p.now, "from server").unwrap();
    p.server.send(p.now, &chinwag_core::Message::binary(vec![9u8; 5000])).unwrap();
    p.run();
    assert!(
        matches!(&p.server_events[..], [Event::Text(t), Event::Binary(b)] if t == "from client" && b[..] == [1, 2, 3])
    );
    assert!(
        matches!(&p.client_events[..], [Event::Text(t), Event::Binary(b)] if t == "from server" && b.len() == 5000)
    );
}

#[test]
fn client_initiated_close() {
    let mut p = Pair::default_open();
    p.client.close(p.now, CloseCode::NORMAL, "done").unwrap();
    assert_eq!(p.client.state(), State::Closing);
    p.run();
    let s = closed(&p.server_events);
    assert_eq!(
        (s.code, s.reason.as_str(), s.initiator, s.is_clean()),
        (CloseCode::NORMAL, "done", Initiator::Peer, true)
    );
    let c = closed(&p.client_events);
    assert_eq!((c.code, c.initiator, c.is_clean()), (CloseCode::NORMAL, Initiator::Local, true));
    // The server closed the transport first; the client followed on EOF.
    assert!(p.server_transport_closed && p.client_transport_closed);
}

#[test]
fn server_initiated_close_client_waits_for_eof() {
    let mut p = Pair::default_open();
    p.server_to_client = true;
    p.server.close(p.now, CloseCode::GOING_AWAY, "shutdown").unwrap();
    p.run();
    assert_eq!(closed(&p.client_events).code, CloseCode::GOING_AWAY);
    let s = closed(&p.server_events);
    assert_eq!((s.code, s.initiator, s.is_clean()), (CloseCode::GOING_AWAY, Initiator::Local, true));
    assert!(p.client.is_finished(), "client got the server's EOF");
}

#[test]
fn client_lingers_until_close_timeout_without_eof() {
    let mut p = Pair::default_open();
    p.client.close(p.now, CloseCode::NORMAL, "").unwrap();
    // The server answers but its EOF is lost.
    p.server_to_client = true;
    let c2s = common::drain_transmit(&mut p.client);
    p.server.receive(p.now, &c2s);
    let s2c = common::drain_transmit(&mut p.server);
    p.client.receive(p.now, &s2c);
    assert!(p.server.is_finished());
    assert!(!p.client.is_finished(), "the client waits for the server to close first");
    let deadline = p.client.poll_timeout().expect("linger deadline");
    assert_eq!(deadline - p.now, Config::default().close_timeout);
    p.client.handle_timeout(deadline);
    assert!(p.client.is_finished());
}

#[test]
fn simultaneous_close() {
    let mut p = Pair::default_open();
    p.client.close(p.now, CloseCode::NORMAL, "c").unwrap();
    p.server.close(p.now, CloseCode::GOING_AWAY, "s").unwrap();
    p.run();
    let (c, s) = (closed(&p.client_events), closed(&p.server_events));
    assert!(c.is_clean() && s.is_clean());
    // Each reports the code it received (RFC 6455 §7.1.5) and its own as sent.
    assert_eq!((c.code, c.reason.as_str(), c.initiator), (CloseCode::GOING_AWAY, "s", Initiator::Local));
    assert_eq!((s.code, s.reason.as_str(), s.initiator), (CloseCode::NORMAL, "c", Initiator::Local));
    assert_eq!(c.sent.as_ref().map(|f| (f.code, f.reason.as_str())), Some((CloseCode::NORMAL, "c")));
    assert_eq!(s.sent.as_ref().map(|f| (f.code, f.reason.as_str())), Some((CloseCode::GOING_AWAY, "s")));
}

#[test]
fn close_timeout_when_peer_never_answers() {
    let mut p = Pair::default_open();
    p.client_to_server = false; // the server never sees the client's close
    p.server_to_client = true;
    p.client.close(p.now, CloseCode::NORMAL, "bye").unwrap();
    p.run();
    assert!(p.client_events.is_empty());
    assert!(p.advance(Duration::from_secs(10)));
    let c = closed(&p.client_events);
    assert_eq!(c.error, Some(ConnectionError::CloseTimeout));
    assert_eq!(c.code, CloseCode::ABNORMAL, "no close frame was received");
    assert_eq!(c.sent.as_ref().map(|f| (f.code, f.reason.as_str())), Some((CloseCode::NORMAL, "bye")));
    assert!(p.client.is_finished());
}

#[test]
fn keepalive_pings_keep_an_idle_connection_open() {
    let config = Config { keepalive_interval: Some(Duration::from_secs(30)), ..Config::default() };
    let mut p = Pair::open(config.clone(), config);
    let start = p.now;
    // Ten minutes of silence from the applications: pings and pongs keep it alive.
    while p.now < start + Duration::from_secs(600) {
        assert!(p.advance(Duration::from_secs(60)));
    }
    assert_eq!(p.client.state(), State::Open);
    assert_eq!(p.server.state(), State::Open);
    let pings = p.client_events.iter().filter(|e| matches!(e, Event::Ping(_))).count();
    assert!(pings >= 10, "server pinged the client {pings} times");
    assert!(!p.client_events.iter().chain(&p.server_events).any(|e| matches!(e, Event::Closed(_))));
}

#[test]
fn dead_peer_is_detected_by_keepalive() {
    let config = Config {
        keepalive_interval: Some(Duration::from_secs(20)),
        keepalive_timeout: Duration::from_secs(10),
        ..Config::default()
    };
    let mut p = Pair::open(Config { keepalive_interval: None, ..Config::default() }, config);
    let start = p.now;
    p.client_to_server = false; // pulled cable: nothing from the client arrives any more
    p.settle(Duration::from_secs(60));
    let s = closed(&p.server_events);
    assert_eq!(s.error, Some(ConnectionError::KeepaliveTimeout));
    assert_eq!(s.code, CloseCode::ABNORMAL);
    assert!(p.server.is_finished());
    // Idle 20 s, then 10 s waiting for the pong.
    assert_eq!(p.now - start, Duration::from_secs(30));
}

#[test]
fn any_traffic_counts_as_alive() {
    let config = Config {
        keepalive_interval: Some(Duration::from_secs(20)),
        keepalive_timeout: Duration::from_secs(10),
        ..Config::default()
    };
    let mut p = Pair::open(Config { keepalive_interval: None, ..Config::default() }, config);
    let start = p.now;
    for i in 0..10 {
        p.now += Duration::from_secs(15);
        p.server.handle_timeout(p.now);
        p.client.handle_timeout(p.now);
        p.client.send_text(p.now, &format!("tick {i}")).unwrap();
        p.run();
    }
    assert_eq!(p.now - start, Duration::from_secs(150));
    assert_eq!(p.server.state(), State::Open);
    assert!(!p.client_events.iter().any(|e| matches!(e, Event::Ping(_))), "no ping needed while data flows");
}

#[test]
fn handshake_timeout() {
    let now = std::time::Instant::now();
    let mut server = chinwag_core::Connection::server(Config::default(), now);
    server.receive(now, b"GET / HTTP/1.1\r\nHost: a\r\n"); // never finished (slow loris)
    let deadline = server.poll_timeout().unwrap();
    assert_eq!(deadline - now, Duration::from_secs(10));
    server.handle_timeout(deadline);
    assert!(matches!(server.poll_event(deadline), Some(Event::HandshakeFailed(chinwag_core::HandshakeError::Timeout))));
    assert!(server.is_finished());
}

#[test]
fn protocol_error_fails_fast_without_waiting_for_a_reply() {
    let mut p = Pair::default_open();
    // A client frame with RSV1 set: the server sends 1002 and closes the transport.
    p.server.receive(p.now, &[0xC1, 0x80, 0, 0, 0, 0]);
    let s = closed(&common::drain_events(&mut p.server, p.now)).clone();
    assert_eq!(s.code, CloseCode::ABNORMAL, "no close frame was received");
    assert_eq!(s.sent.as_ref().map(|f| f.code), Some(CloseCode::PROTOCOL_ERROR));
    assert_eq!(s.effective_code(), CloseCode::PROTOCOL_ERROR);
    assert_eq!(s.error, Some(ConnectionError::Protocol(chinwag_core::ProtocolError::ReservedBits)));
    let wire = common::drain_transmit(&mut p.server);
    assert_eq!(&wire[..4], &[0x88, wire[1], 0x03, 0xEA], "close frame with 1002");
    // It waits for no close frame: it shuts its writing side down at once, and
    // ends at the client's EOF (reading until then, so that what the client was
    // still sending cannot reset the connection before it read the 1002).
    assert!(p.server.wants_write_shutdown() && !p.server.is_finished());
    p.server.receive(p.now, &[0x81, 0x85, 1, 2, 3, 4, 0, 0, 0, 0, 0]);
    assert!(common::drain_events(&mut p.server, p.now).is_empty(), "discarded");
    p.server.receive_eof(p.now);
    assert!(p.server.is_finished());
}

#[test]
fn local_misuse_is_an_error_and_changes_nothing() {
    let mut p = Pair::default_open();
    assert_eq!(p.client.close(p.now, CloseCode::ABNORMAL, ""), Err(chinwag_core::LocalError::InvalidCloseCode(1006)));
    assert_eq!(
        p.client.close(p.now, CloseCode::NORMAL, &"x".repeat(124)),
        Err(chinwag_core::LocalError::CloseReasonTooLong)
    );
    assert_eq!(p.client.ping(p.now, &[0; 126]), Err(chinwag_core::LocalError::ControlPayloadTooLong));
    assert_eq!(
        p.client.send_shared(p.now, &chinwag_core::SharedFrame::text("x")),
        Err(chinwag_core::LocalError::SharedFrameFromClient)
    );
    assert_eq!(p.client.state(), State::Open);
    p.client.close(p.now, CloseCode::NORMAL, "").unwrap();
    assert_eq!(p.client.send_text(p.now, "late"), Err(chinwag_core::LocalError::Closing));
    assert_eq!(p.client.close(p.now, CloseCode::NORMAL, ""), Err(chinwag_core::LocalError::Closing));
    p.run();
    assert_eq!(p.client.send_text(p.now, "later"), Err(chinwag_core::LocalError::Closed));
}

#[test]
fn shared_frame_reaches_many_connections_without_copies() {
    let frame = chinwag_core::SharedFrame::text("to everyone");
    let mut pairs: Vec<Pair> = (0..5).map(|_| Pair::default_open()).collect();
    for p in &mut pairs {
        p.server.send_shared(p.now, &frame).unwrap();
        let out = p.server.poll_transmit().unwrap();
        assert_eq!(bytes::Buf::chunk(out).as_ptr(), frame.as_bytes().as_ptr(), "queued by reference");
        p.run();
        assert!(matches!(&p.client_events[..], [Event::Text(t)] if t == "to everyone"));
    }
}

#[test]
fn an_idle_open_connection_is_small() {
    // The struct itself, inline: no read buffer, no write buffer, no message.
    let size = std::mem::size_of::<chinwag_core::Connection>();
    assert!(size <= 700, "Connection is {size} bytes");
    let mut p = Pair::default_open();
    // After traffic, buffers are given back once drained.
    p.server.send(p.now, &chinwag_core::Message::binary(vec![1u8; 100_000])).unwrap();
    p.client.send(p.now, &chinwag_core::Message::binary(vec![2u8; 100_000])).unwrap();
    p.run();
    assert_eq!(p.server.buffered_amount(), 0);
    assert_eq!(p.client.buffered_amount(), 0);
    assert!(format!("{:?}", p.server).contains("buffered: 0"));
}

#[test]
fn a_ping_flood_stops_input_once_the_backlog_is_full() {
    let config = Config { backlog_high_water: 4096, ..Config::default() };
    let mut p = Pair::open(Config::default(), config);
    // The client pings without ever reading the pongs.
    let mut ping = vec![0x89, 0x80 | 125, 0, 0, 0, 0];
    ping.extend_from_slice(&[b'p'; 125]);
    let mut fed = 0;
    while p.server.wants_input() {
        p.server.receive(p.now, &ping);
        while p.server.poll_event(p.now).is_some() {}
        fed += 1;
        assert!(fed < 1000, "the server kept reading");
    }
    assert!(p.server.is_backlogged());
    assert!(p.server.buffered_amount() <= 4096 + 127, "bounded by the high-water mark and one pong");
    // Once the transport drains, input is wanted again.
    common::drain_transmit(&mut p.server);
    assert!(p.server.wants_input());
}

#[test]
fn no_input_is_wanted_while_events_wait() {
    let mut p = Pair::default_open();
    p.client.send_text(p.now, "a").unwrap();
    p.client.send_text(p.now, "b").unwrap();
    p.server.receive(p.now, &common::drain_transmit(&mut p.client));
    assert!(!p.server.wants_input(), "two messages are waiting");
    assert!(p.server.poll_event(p.now).is_some());
    assert!(!p.server.wants_input(), "one is still waiting");
    assert!(p.server.poll_event(p.now).is_some());
    assert!(p.server.wants_input());
}

#[test]
fn a_lost_transport_discards_output_and_finishes() {
    let mut p = Pair::default_open();
    p.server.send_text(p.now, "never written").unwrap();
    p.server.transport_lost(p.now);
    assert!(p.server.poll_transmit().is_none());
    assert!(p.server.is_finished());
    assert!(
        matches!(p.server.poll_event(p.now), Some(Event::Closed(c)) if c.error == Some(ConnectionError::TransportClosed))
    );
    assert!(!p.server.wants_input());
}

#[test]
fn nothing_is_sent_after_our_close_frame_not_even_a_pong() {
    let mut p = Pair::default_open();
    p.server.close(p.now, CloseCode::NORMAL, "").unwrap();
    common::drain_transmit(&mut p.server);
    p.server.receive(p.now, &[0x89, 0x82, 0, 0, 0, 0, b'h', b'i']);
    assert!(matches!(p.server.poll_event(p.now), Some(Event::Ping(b)) if b[..] == *b"hi"), "still reported");
    assert!(common::drain_transmit(&mut p.server).is_empty(), "our close frame was the last frame");
    assert_eq!(p.server.ping(p.now, b""), Err(chinwag_core::LocalError::Closing));
    assert_eq!(p.server.pong(p.now, b""), Err(chinwag_core::LocalError::Closing));
}

#[test]
fn a_peer_that_stops_reading_is_closed_once_its_backlog_is_over_the_bound() {
    let server_config = Config { max_backlog: 10_000, ..Config::default() };
    let mut p = Pair::open(Config::default(), server_config);
    let frame = chinwag_core::SharedFrame::text(&"x".repeat(1000));
    // The client reads nothing: frames pile up until the bound, and no further.
    let mut queued = 0;
    let refused = loop {
        match p.server.send_shared(p.now, &frame) {
            Ok(()) => queued += 1,
            Err(e) => break e,
        }
        assert!(queued < 100, "the backlog grew without bound");
    };
    assert_eq!(refused, chinwag_core::LocalError::Closed, "the peer's doing is reported as a close event");
    assert_eq!(queued, 10, "frames are queued while the backlog is within the bound");
    assert!(p.server.buffered_amount() <= 10_000 + 1004 + 64, "bounded: the limit, one frame, the close frame");
    assert_eq!(p.server.state(), State::Closed);
    assert_eq!(p.server.send_shared(p.now, &frame), Err(chinwag_core::LocalError::Closed), "nothing follows the close");
    let events = common::drain_events(&mut p.server, p.now);
    let s = closed(&events);
    assert_eq!(s.error, Some(ConnectionError::SlowConsumer));
    assert_eq!((s.code, s.initiator), (CloseCode::ABNORMAL, Initiator::Local), "no close frame was received");
    let sent = s.sent.as_ref().expect("a close frame was sent");
    assert_eq!((sent.code, sent.reason.as_str()), (CloseCode::POLICY_VIOLATION, chinwag_core::SLOW_CONSUMER_REASON));

    // When the client reads again it gets every frame queued before, then the 1008.
    p.run();
    let texts = p.client_events.iter().filter(|e| matches!(e, Event::Text(_))).count();
    assert_eq!(texts, queued);
    let c = closed(&p.client_events);
    assert_eq!((c.code, c.reason.as_str()), (CloseCode::POLICY_VIOLATION, chinwag_core::SLOW_CONSUMER_REASON));
}

#[test]
fn a_slow_peer_that_never_reads_again_is_dropped_after_the_close_timeout() {
    let server_config = Config { max_backlog: 2_000, ..Config::default() };
    let mut p = Pair::open(Config::default(), server_config);
    p.server_to_client = false;
    let frame = chinwag_core::SharedFrame::text(&"y".repeat(1000));
    while p.server.send_shared(p.now, &frame).is_ok() {}
    let start = p.now;
    while !p.server.is_finished() && p.advance(Duration::from_secs(10)) {}
    let s = closed(&p.server_events);
    assert_eq!(s.error, Some(ConnectionError::SlowConsumer));
    assert_eq!(s.sent.as_ref().map(|f| f.code), Some(CloseCode::POLICY_VIOLATION));
    // The server lingers for the client's EOF, which never comes: the close
    // timeout ends it.
    assert!(p.server.is_finished());
    assert!(p.now - start <= Config::default().close_timeout, "kept {:?}", p.now - start);
}

#[test]
fn one_message_larger_than_the_bound_still_goes_to_a_reading_peer() {
    // The bound applies to what is already queued: a driver's `send` waits until
    // the backlog drains, and its next message may be large.
    let server_config = Config { max_backlog: 1000, ..Config::default() };
    let mut p = Pair::open(Config::default(), server_config);
    p.server.send(p.now, &chinwag_core::Message::binary(vec![7u8; 50_000])).unwrap();
    p.run();
    assert!(matches!(&p.client_events[..], [Event::Binary(b)] if b.len() == 50_000));
    assert_eq!(p.server.state(), State::Open);
}

#[test]
fn output_a_peer_never_takes_is_abandoned_one_close_timeout_after_the_end() {
    let mut p = Pair::default_open();
    p.server_to_client = false; // the client stopped reading
    p.server.send(p.now, &chinwag_core::Message::binary(vec![0u8; 100_000])).unwrap();
    // ... and then breaks the protocol (a frame with reserved bits).
    p.server.receive(p.now, &[0xF1, 0x80, 0, 0, 0, 0]);
    let events = common::drain_events(&mut p.server, p.now);
    assert!(matches!(events.last(), Some(Event::Closed(c)) if c.effective_code() == CloseCode::PROTOCOL_ERROR));
    assert!(!p.server.is_finished(), "the close frame is still to be written");
    let deadline = p.server.poll_timeout().expect("a linger deadline");
    assert_eq!(deadline - p.now, Config::default().close_timeout);
    p.server.handle_timeout(deadline);
    assert!(p.server.is_finished(), "a peer that does not read cannot hold the connection open");
    assert_eq!(p.server.buffered_amount(), 0);
}

/// The bug that made idle clients lose their 1001 at shutdown: after a silence
/// longer than the close timeout, `close` armed its deadline from the last time the
/// connection had been told, which was already past, so the next wake-up fired it
/// and dropped the close frame. With `now` in the call, the deadline runs from the
/// call, and the frame goes out.
#[test]
fn a_close_after_a_long_silence_reaches_the_peer() {
    for (server_closes, code) in [(true, CloseCode::GOING_AWAY), (true, CloseCode(4321)), (false, CloseCode::NORMAL)] {
        let mut p = Pair::default_open();
        let opened = p.now;
        p.sleep(Duration::from_secs(20)); // no traffic, no timer: nothing was due
        let at = p.now;
        if server_closes {
            p.server.close(at, code, "bye").unwrap();
        } else {
            p.client.close(at, code, "bye").unwrap();
        }
        let closer = if server_closes { &p.server } else { &p.client };
        assert_eq!(closer.poll_timeout(), Some(at + Config::default().close_timeout), "armed from the call");
        p.settle(Duration::from_secs(60));
        let (peer, closer) =
            if server_closes { (&p.client_events, &p.server_events) } else { (&p.server_events, &p.client_events) };
        let got = closed(peer);
        assert_eq!((got.code, got.reason.as_str(), got.error), (code, "bye", None), "the peer got our close frame");
        let ours = closed(closer);
        assert!(ours.is_clean(), "{ours:?}");
        assert_eq!(ours.code, code, "the echo of our code");
        assert!(p.server.is_finished() && p.client.is_finished());
        assert!(p.now - opened < Duration::from_secs(30), "no keepalive was needed to finish");
    }
}

/// Latency and bytes in flight: a close crosses a slow link, and each event is
/// time-stamped when the bytes arrived.
#[test]
fn a_close_handshake_across_a_slow_link_takes_one_round_trip() {
    let mut p = Pair::open_with_latency(Config::default(), Config::default(), Duration::from_millis(150));
    let start = p.now;
    p.client.send_text(p.now, "hi").unwrap();
    p.client.close(p.now, CloseCode::NORMAL, "").unwrap();
    p.run();
    assert!(p.to_server.bytes_in_flight() > 0, "the frames are on their way");
    p.settle(Duration::from_secs(10));
    let texts: Vec<_> =
        p.server_events.iter().zip(&p.server_times).filter(|(e, _)| matches!(e, Event::Text(_))).collect();
    assert_eq!(*texts[0].1 - start, Duration::from_millis(150), "the message arrived after one latency");
    let client_closed_at = *p.client_times.last().unwrap();
    assert_eq!(client_closed_at - start, Duration::from_millis(300), "the answer came back after a round trip");
    assert!(closed(&p.client_events).is_clean());
}

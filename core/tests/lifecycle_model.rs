//! A model-based property test of the connection life cycle: a client and a server
//! over the two-peer harness (latency, bytes in flight, virtual time), driven by
//! random operations: sends either way, closes from either side or both at once,
//! a cut cable, a lost transport, an end of stream, a peer that stops reading,
//! and time advancing by random amounts. After the operations both applications
//! close and time runs on. Checked, for each side:
//! - `Closed` is reported exactly once, and it is the last event;
//! - nothing is written after our close frame;
//! - `Closed::sent` is the close frame written, if one was;
//! - a clean close reports the code and reason the peer's close frame carried;
//! - the connection finishes within the configured timeouts once closing begins.

mod common;

use chinwag_core::frame::{FrameHeader, OpCode, apply_mask};
use chinwag_core::{CloseCode, Config, Event, LocalError, SharedFrame, State};
use common::Pair;
use proptest::prelude::*;
use std::time::Duration;

#[derive(Debug, Clone)]
enum Op {
    /// A data message of `len` bytes from one side (`shared`: a server's shared frame).
    Send {
        client: bool,
        text: bool,
        len: usize,
        shared: bool,
    },
    Ping {
        client: bool,
    },
    /// `close()` with a code that may or may not be sendable.
    Close {
        client: bool,
        code: u16,
        reason_len: usize,
    },
    /// Both sides close before either hears of the other.
    CloseBoth,
    /// The cable is pulled: nothing more gets through, in either direction, and
    /// neither side is told.
    PullCable,
    /// One side's transport fails (a reset): that side is told, the other sees EOF.
    Reset {
        client: bool,
    },
    /// One side's writing half ends behind its connection's back.
    Eof {
        client: bool,
    },
    /// One side's driver stops or resumes reading.
    Reading {
        client: bool,
        on: bool,
    },
    /// Time passes, with everything that is due happening on the way.
    Advance {
        millis: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let side = any::<bool>();
    prop_oneof![
        6 => (side, any::<bool>(), 0usize..3000, any::<bool>())
            .prop_map(|(client, text, len, shared)| Op::Send { client, text, len, shared }),
        1 => side.prop_map(|client| Op::Ping { client }),
        2 => (side, prop_oneof![Just(1000u16), Just(1001), Just(1008), Just(4000), Just(1005), Just(1006), Just(999)], 0usize..130)
            .prop_map(|(client, code, reason_len)| Op::Close { client, code, reason_len }),
        1 => Just(Op::CloseBoth),
        1 => Just(Op::PullCable),
        1 => side.prop_map(|client| Op::Reset { client }),
        1 => side.prop_map(|client| Op::Eof { client }),
        2 => (side, any::<bool>()).prop_map(|(client, on)| Op::Reading { client, on }),
        6 => prop_oneof![0u64..50, 0u64..2_000, 0u64..60_000].prop_map(|millis| Op::Advance { millis }),
    ]
}

fn config() -> Config {
    Config {
        handshake_timeout: Some(Duration::from_secs(5)),
        keepalive_interval: Some(Duration::from_secs(10)),
        keepalive_timeout: Duration::from_secs(4),
        close_timeout: Duration::from_secs(3),
        backlog_high_water: 8 << 10,
        max_backlog: 16 << 10,
        ..Config::default()
    }
}

/// The frames in what one side wrote after its handshake head: (opcode, payload).
fn frames_written(wrote: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let head_end = wrote.windows(4).position(|w| w == b"\r\n\r\n").map_or(wrote.len(), |at| at + 4);
    let mut rest = &wrote[head_end..];
    let mut frames = Vec::new();
    while let Ok(Some((header, used))) = FrameHeader::decode(rest) {
        let len = header.payload_len as usize;
        assert!(rest.len() >= used + len, "a side wrote a partial frame");
        let mut payload = rest[used..used + len].to_vec();
        if let Some(mask) = header.mask {
            apply_mask(&mut payload, mask, 0);
        }
        frames.push((header.opcode, payload));
        rest = &rest[used + len..];
    }
    assert!(rest.is_empty(), "a side wrote a partial frame header");
    frames
}

/// The code and reason of the first close frame in `frames`, and its index.
fn first_close(frames: &[(u8, Vec<u8>)]) -> Option<(usize, CloseCode, String)> {
    frames.iter().position(|(op, _)| *op == OpCode::Close as u8).map(|at| {
        let payload = &frames[at].1;
        if payload.len() < 2 {
            (at, CloseCode::NO_STATUS, String::new())
        } else {
            let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
            (at, code, String::from_utf8(payload[2..].to_vec()).expect("close reasons we write are UTF-8"))
        }
    })
}

/// Applies one operation. A call the connection refuses must change nothing.
fn apply(p: &mut Pair, op: &Op) {
    match *op {
        Op::Send { client, text, len, shared } => {
            let now = p.now;
            let conn = if client { &mut p.client } else { &mut p.server };
            let before = conn.state();
            let result = if shared && !client {
                let frame = if text { SharedFrame::text(&"s".repeat(len)) } else { SharedFrame::binary(&vec![7; len]) };
                conn.send_shared(now, &frame)
            } else if text {
                conn.send_text(now, &"t".repeat(len))
            } else {
                conn.send_binary(now, &vec![9; len])
            };
            if let Err(e) = result {
                // A refused send changes nothing, but for a slow consumer, which
                // ends the connection (reported in Closed, not as the error).
                assert!(
                    conn.state() == before || (before == State::Open && e == LocalError::Closed),
                    "{e:?} changed the state from {before:?}"
                );
            }
        }
        Op::Ping { client } => {
            let now = p.now;
            let conn = if client { &mut p.client } else { &mut p.server };
            let before = (conn.state(), conn.buffered_amount());
            if conn.ping(now, b"ping").is_err() {
                assert_eq!((conn.state(), conn.buffered_amount()), before, "a refused ping changed something");
            }
        }
        Op::Close { client, code, reason_len } => {
            let now = p.now;
            let conn = if client { &mut p.client } else { &mut p.server };
            let before = (conn.state(), conn.buffered_amount(), conn.poll_timeout());
            let reason = "r".repeat(reason_len);
            if conn.close(now, CloseCode(code), &reason).is_err() {
                assert_eq!(
                    (conn.state(), conn.buffered_amount(), conn.poll_timeout()),
                    before,
                    "a refused close changed something"
                );
            }
        }
        Op::CloseBoth => {
            let now = p.now;
            let _ = p.client.close(now, CloseCode::NORMAL, "client");
            let _ = p.server.close(now, CloseCode::GOING_AWAY, "server");
        }
        Op::PullCable => {
            p.client_to_server = false;
            p.server_to_client = false;
        }
        Op::Reset { client } => {
            let now = p.now;
            if client {
                p.client.transport_lost(now);
            } else {
                p.server.transport_lost(now);
            }
            p.shut_down_writing(client);
        }
        Op::Eof { client } => p.shut_down_writing(client),
        Op::Reading { client, on } => {
            if client {
                p.client_reading = on;
            } else {
                p.server_reading = on;
            }
        }
        Op::Advance { millis } => {
            let until = p.now + Duration::from_millis(millis);
            p.drive_until(until);
        }
    }
    p.run();
}

/// Checks one side against what both sides wrote.
fn check_side(name: &str, events: &[Event], wrote: &[u8], peer_wrote: &[u8]) -> Result<(), TestCaseError> {
    let closes: Vec<usize> =
        events.iter().enumerate().filter(|(_, e)| matches!(e, Event::Closed(_))).map(|(i, _)| i).collect();
    prop_assert_eq!(closes.len(), 1, "{}: Closed reported {} times: {:?}", name, closes.len(), events);
    prop_assert_eq!(closes[0], events.len() - 1, "{}: events after Closed", name);
    let Some(Event::Closed(closed)) = events.last() else { unreachable!() };

    let frames = frames_written(wrote);
    let ours = first_close(&frames);
    if let Some((at, _, _)) = &ours {
        prop_assert_eq!(*at, frames.len() - 1, "{}: frames written after our close frame: {:?}", name, &frames[*at..]);
    }
    let sent = ours.as_ref().map(|(_, code, reason)| (*code, reason.clone()));
    prop_assert_eq!(
        closed.sent.as_ref().map(|f| (f.code, f.reason.clone())),
        sent,
        "{}: Closed::sent is not the close frame written",
        name
    );
    if closed.is_clean() {
        let (_, code, reason) = first_close(&frames_written(peer_wrote)).expect("a clean close received a close frame");
        prop_assert_eq!(
            (closed.code, closed.reason.clone()),
            (code, reason),
            "{}: a clean close reports the peer's code",
            name
        );
        prop_assert!(closed.sent.is_some(), "{}: a clean close sent a close frame", name);
    } else {
        prop_assert_eq!(closed.code, CloseCode::ABNORMAL, "{}: no close frame was received: {:?}", name, closed);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_life_cycle_holds_its_invariants(
        ops in proptest::collection::vec(op(), 0..40),
        latency_ms in 0u64..300,
    ) {
        let mut p = Pair::open_with_latency(config(), config(), Duration::from_millis(latency_ms));
        for op in &ops {
            apply(&mut p, op);
            for (name, events, conn) in [("client", &p.client_events, &p.client), ("server", &p.server_events, &p.server)] {
                let closed = events.iter().filter(|e| matches!(e, Event::Closed(_))).count();
                prop_assert!(closed <= 1, "{}: Closed twice", name);
                if closed == 1 {
                    prop_assert!(matches!(events.last(), Some(Event::Closed(_))), "{}: an event after Closed", name);
                    // What the event said stays available from the connection.
                    let Some(Event::Closed(reported)) = events.last() else { unreachable!() };
                    prop_assert_eq!(conn.closed(), Some(&**reported), "{}: closed() disagrees with the event", name);
                } else if !conn.has_events() {
                    prop_assert!(conn.closed().is_none(), "{}: closed() before the connection ended", name);
                }
            }
        }
        // Both applications close now. From here, each side must finish within
        // the timeouts: a close handshake or keepalive failure, then the linger.
        let closing_at = p.now;
        let _ = p.client.close(closing_at, CloseCode::NORMAL, "end");
        let _ = p.server.close(closing_at, CloseCode::NORMAL, "end");
        let c = config();
        let bound = c.keepalive_interval.unwrap() + c.keepalive_timeout + 2 * c.close_timeout + 2 * p.latency;
        p.drive_until(closing_at + bound);
        prop_assert!(p.client.is_finished(), "the client did not finish: {:?}", p.client);
        prop_assert!(p.server.is_finished(), "the server did not finish: {:?}", p.server);
        p.run();
        check_side("client", &p.client_events, &p.client_wrote, &p.server_wrote)?;
        check_side("server", &p.server_events, &p.server_wrote, &p.client_wrote)?;
    }
}

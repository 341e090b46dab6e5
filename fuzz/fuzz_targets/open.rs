//! `Connection::open` (the handshake was done elsewhere), in either role, fed
//! arbitrary bytes and hand-made frames as its peer, through time and the
//! application API. The same checks as `lifecycle` (see `common/checked.rs`): one
//! last event and nothing after it, well-formed output with sendable close codes and
//! nothing after the close frame, `LocalError` changes nothing, closing is bounded
//! in time; and at the end, after a close and a silent peer, the connection is
//! finished.
//!
//! The input is a script (see `Script`): a flags byte (1: client, 2: skip
//! oversized messages, 4: keepalive), a byte each for the keepalive interval, the
//! keepalive timeout and the close timeout (1 ms plus 12 ms a step), then ops: a
//! byte whose low four bits pick the op and whose bit 6 is a flag, followed by the
//! op's arguments (see `Op::read`).
#![no_main]

use chinwag_core::{Config, Connection, Message, Oversized, Role, SharedFrame, State};
use chinwag_fuzz::checked::Checked;
use chinwag_fuzz::wire::WireCheck;
use chinwag_fuzz::{RawFrame, Script, close_code};
use std::time::Duration;

#[derive(Debug)]
enum Op {
    /// Moves the clock (milliseconds).
    Advance(u16),
    Timeout,
    /// Bytes from the peer, as they are.
    Bytes(Vec<u8>),
    /// A frame from the peer, made by hand.
    Frame(RawFrame),
    Eof,
    Lost,
    Text(String),
    Binary(Vec<u8>),
    Big(u16, bool),
    Shared(bool, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(u16, bool, String),
    /// Writes up to this many bytes of output.
    Transmit(u16),
    Event,
    Events,
}

impl Op {
    /// Reads the next op, or `None` at the end of the script.
    fn read(script: &mut Script<'_>) -> Option<Op> {
        if script.is_empty() {
            return None;
        }
        let code = script.u8();
        let flag = code & 0x40 != 0;
        Some(match code & 0x0F {
            0 => Op::Advance(script.u16()),
            1 => Op::Timeout,
            2 => Op::Bytes(script.bytes().to_vec()),
            3 => Op::Frame(RawFrame::read(script)),
            4 => Op::Eof,
            5 => Op::Lost,
            6 => Op::Text(script.string()),
            7 => Op::Binary(script.bytes().to_vec()),
            8 => Op::Big(script.u16(), flag),
            9 => Op::Shared(flag, script.bytes().to_vec()),
            10 => Op::Ping(script.bytes().to_vec()),
            11 => Op::Pong(script.bytes().to_vec()),
            12 => Op::Close(script.u16(), flag, script.string()),
            13 => Op::Transmit(script.u16()),
            14 => Op::Event,
            _ => Op::Events,
        })
    }
}

/// 1 ms to about 3 s.
fn ms(n: u8) -> Duration {
    Duration::from_millis(1 + u64::from(n) * 12)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut script = Script::new(data);
    let flags = script.u8();
    let (keepalive, keepalive_timeout, close_timeout) = (script.u8(), script.u8(), script.u8());
    let config = Config {
        max_frame_size: 1024,
        max_message_size: 2048,
        oversized: if flags & 2 != 0 { Oversized::Skip } else { Oversized::Close },
        keepalive_interval: (flags & 4 != 0).then(|| ms(keepalive)),
        keepalive_timeout: ms(keepalive_timeout),
        close_timeout: ms(close_timeout),
        backlog_high_water: 512,
        max_backlog: 1024,
        ..Config::default()
    };
    let mut now = chinwag_fuzz::t0();
    let (role, masks) = if flags & 1 != 0 {
        let mut n = 0u32;
        let masks: Box<dyn chinwag_core::MaskSource> = Box::new(move || {
            n = n.wrapping_add(0x9E37_79B9);
            n.to_be_bytes()
        });
        (Role::Client, Some(masks))
    } else {
        (Role::Server, None)
    };
    let conn = Connection::open(role, masks, config, now);
    let mut side = Checked::new(conn, "open", now, true, WireCheck::frames(role));
    // After EOF or a lost transport, nothing more arrives.
    let mut ended = false;
    while let Some(op) = Op::read(&mut script) {
        if chinwag_fuzz::tracing() {
            eprintln!("{:?} {op:?}", now - chinwag_fuzz::t0());
        }
        match &op {
            Op::Advance(n) => now += Duration::from_millis(u64::from(*n)),
            Op::Timeout => side.tick(now),
            Op::Bytes(bytes) if !ended => side.receive(now, bytes),
            Op::Frame(frame) if !ended => side.receive(now, &frame.encode()),
            Op::Bytes(_) | Op::Frame(_) => {}
            Op::Eof => {
                side.receive_eof(now);
                ended = true;
            }
            Op::Lost => {
                side.transport_lost(now);
                ended = true;
            }
            Op::Text(text) => drop(side.api(now, "send_text", |c, now| c.send_text(now, text))),
            Op::Binary(data) => drop(side.api(now, "send_binary", |c, now| c.send_binary(now, data))),
            Op::Big(len, text) => {
                let len = usize::from(*len) % 9000;
                let message = if *text { Message::text("x".repeat(len)) } else { Message::binary(vec![1u8; len]) };
                drop(side.api(now, "send", |c, now| c.send(now, &message)));
            }
            Op::Shared(text, data) => {
                let frame =
                    if *text { SharedFrame::text(&String::from_utf8_lossy(data)) } else { SharedFrame::binary(data) };
                drop(side.api(now, "send_shared", |c, now| c.send_shared(now, &frame)));
            }
            Op::Ping(data) => drop(side.api(now, "ping", |c, now| c.ping(now, data))),
            Op::Pong(data) => drop(side.api(now, "pong", |c, now| c.pong(now, data))),
            Op::Close(code, near, reason) => {
                let code = close_code(*code, *near);
                drop(side.api(now, "close", |c, now| c.close(now, code, reason)));
            }
            Op::Transmit(n) => drop(side.transmit(usize::from(*n))),
            Op::Event => drop(side.poll_event(now)),
            Op::Events => while side.poll_event(now).is_some() {},
        }
        side.check();
    }
    // The end: close if open; the peer stays silent; time runs past the close
    // timeout and the linger while the transport takes everything.
    if side.conn.state() == State::Open {
        let _ = side.api(now, "close", |c, now| c.close(now, chinwag_core::CloseCode::NORMAL, ""));
    }
    let end = now + side.conn.config().close_timeout * 2 + Duration::from_millis(1);
    while now < end {
        now += Duration::from_millis(100).min(end - now);
        side.tick(now);
        side.transmit(usize::MAX);
        while side.poll_event(now).is_some() {}
        side.check();
    }
    assert!(side.conn.is_finished(), "not finished after closing with a silent peer: {:?}", side.conn);
    assert!(side.ended(), "finished without reporting Closed");
});

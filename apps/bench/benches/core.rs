//! Microbenchmarks of the core: frame decode + unmask + UTF-8 validation against a
//! plain copy of the same bytes, the handshake parse, encoding a broadcast frame,
//! and the echo of a pipelined burst.
// criterion's macros generate functions without documentation.
#![allow(missing_docs)]

use chinwag_core::{Accept, ClientRequest, Config, Connection, Event, SharedFrame};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Instant;

/// With `--features mimalloc`, the allocator the `chinwag` binary uses: the
/// core's costs depend on it where it allocates (a message's payload) or grows
/// buffers. (The binary calls it through its own `GlobalAlloc`, which skips the
/// aligned entry points for ordinary layouts: a few instructions less per
/// allocation than this crate's.)
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An open server connection that accepts frames up to 2 MiB, and the instant it
/// opened at (the benchmarks feed it that instant: virtual time stands still, so
/// no keepalive deadline falls inside a measurement).
fn open_server() -> (Connection, Instant) {
    let config = Config { max_frame_size: 2 << 20, max_message_size: 2 << 20, ..Config::default() };
    let now = Instant::now();
    let mut server = Connection::server(config, now);
    server.receive(
        now,
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    while server.poll_event(now).is_some() {}
    server.accept(now, Accept::new()).unwrap();
    while server.poll_event(now).is_some() {}
    while let Some(out) = server.poll_transmit() {
        let n = bytes::Buf::remaining(out);
        bytes::Buf::advance(out, n);
    }
    (server, now)
}

/// A masked frame with `opcode` carrying `payload`.
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode, 0x80 | 127];
    frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// `size` bytes of JSON-like ASCII text, as most WebSocket applications send.
fn ascii_text(size: usize) -> Vec<u8> {
    br#"{"type":"chat","payload":{"from":"ann","text":"hello, world"}} "#.iter().copied().cycle().take(size).collect()
}

/// `size` bytes of text, a third of its characters outside ASCII.
fn mixed_text(size: usize) -> String {
    let mut text = String::with_capacity(size);
    for c in "chinwag ✓ WebSocket ünïcödé — ".chars().cycle() {
        if text.len() + c.len_utf8() > size {
            break;
        }
        text.push(c);
    }
    while text.len() < size {
        text.push('.');
    }
    text
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode+unmask+validate vs memcpy");
    for size in [1 << 10, 64 << 10, 1 << 20] {
        let payloads = [
            ("binary", 2u8, (0..size).map(|i| i as u8).collect::<Vec<u8>>()),
            ("text, ASCII JSON", 1, ascii_text(size)),
            ("text, 1/3 non-ASCII", 1, mixed_text(size).into_bytes()),
        ];
        for (kind, opcode, payload) in payloads {
            let frame = masked_frame(opcode, &payload);
            group.throughput(Throughput::Bytes(frame.len() as u64));
            let (mut server, now) = open_server();
            group.bench_with_input(BenchmarkId::new(format!("chinwag, {kind}"), size), &frame, |b, frame| {
                b.iter(|| {
                    server.receive(now, black_box(frame));
                    match server.poll_event(now) {
                        Some(Event::Text(t)) => drop(black_box(t)),
                        Some(Event::Binary(d)) => drop(black_box(d)),
                        other => panic!("{other:?}"),
                    };
                })
            });
        }
        let frame = masked_frame(2, &vec![7u8; size]);
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_with_input(BenchmarkId::new("memcpy", size), &frame, |b, frame| {
            b.iter(|| black_box(black_box(&frame[..]).to_vec()))
        });
    }
    group.finish();
}

/// The passes of decoding, one at a time, on 1 MiB.
fn passes(c: &mut Criterion) {
    let mut group = c.benchmark_group("passes over 1 MiB");
    let size = 1 << 20;
    group.throughput(Throughput::Bytes(size as u64));
    let mixed = mixed_text(size).into_bytes();
    let ascii = ascii_text(size);
    let mut buf = mixed.clone();
    group.bench_function("unmask in place", |b| {
        b.iter(|| chinwag_core::frame::apply_mask(black_box(&mut buf), [1, 2, 3, 4], 0))
    });
    group.bench_function("validate mixed UTF-8", |b| {
        b.iter(|| chinwag_core::utf8::Utf8Validator::new().feed(black_box(&mixed)).is_ok())
    });
    let ascii_valid = String::from_utf8(ascii.clone()).is_ok();
    assert!(ascii_valid);
    group.bench_function("validate ASCII (JSON)", |b| {
        b.iter(|| chinwag_core::utf8::Utf8Validator::new().feed(black_box(&ascii)).is_ok())
    });
    group.finish();
}

fn handshake(c: &mut Criterion) {
    let request = ClientRequest::new("ws://localhost:9090/chat/ann?age=30").unwrap();
    let mut client =
        Connection::client(&request, [7; 16], Box::new(|| [1, 2, 3, 4]), Config::default(), Instant::now());
    let bytes = {
        let out = client.poll_transmit().unwrap();
        bytes::Buf::chunk(out).to_vec()
    };
    c.bench_function("handshake: parse and validate a request, accept", |b| {
        b.iter(|| {
            let now = Instant::now();
            let mut server = Connection::server(Config::default(), now);
            server.receive(now, black_box(&bytes));
            let Some(Event::UpgradeRequest(_)) = server.poll_event(now) else { panic!() };
            server.accept(now, Accept::new()).unwrap();
            black_box(server.poll_transmit().is_some());
        })
    });
}

fn broadcast_frame(c: &mut Criterion) {
    let line = "alice: hello everyone, this is a typical chat line of moderate length".repeat(2);
    c.bench_function("encode a broadcast frame (140-byte text)", |b| {
        b.iter(|| black_box(SharedFrame::text(black_box(&line))))
    });
}

/// What the core does for an echo of a pipelined burst that arrives in one read
/// (16 messages, as `chinwag-bench echo --in-flight 16` sends them): take every
/// message, queue its reply, and write everything out in one go. Natively timed,
/// since callgrind counts a large copy (glibc's `rep movsb`) byte by byte.
fn pipelined_echo(c: &mut Criterion) {
    let mut group = c.benchmark_group("echo a burst of 16 messages read at once");
    for size in [20usize, 1024] {
        let burst: Vec<u8> = (0..16).flat_map(|_| masked_frame(0x1, &ascii_text(size))).collect();
        let (mut server, now) = open_server();
        group.throughput(Throughput::Elements(16));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter(|| {
                server.receive(now, black_box(&burst));
                while let Some(event) = server.poll_event(now) {
                    let Event::Text(text) = event else { panic!("a text message") };
                    server.send_text(now, &text).unwrap();
                }
                while let Some(out) = server.poll_transmit() {
                    let n = bytes::Buf::remaining(out);
                    black_box(bytes::Buf::chunk(out));
                    bytes::Buf::advance(out, n);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode, passes, handshake, broadcast_frame, pipelined_echo);
criterion_main!(benches);

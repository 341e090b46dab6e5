//! Microbenchmarks of the core: frame decode + unmask + UTF-8 validation against a
//! plain copy of the same bytes, the handshake parse, and encoding a broadcast frame.
// criterion's macros generate functions without documentation.
#![allow(missing_docs)]

use chinwag_core::{Accept, ClientRequest, Config, Connection, Event, SharedFrame};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Instant;

/// An open server connection that accepts frames up to 2 MiB.
fn open_server() -> Connection {
    let config = Config { max_frame_size: 2 << 20, max_message_size: 2 << 20, ..Config::default() };
    let mut server = Connection::server(config, Instant::now());
    server.receive(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    while server.poll_event().is_some() {}
    server.accept(Accept::new()).unwrap();
    while server.poll_event().is_some() {}
    while let Some(out) = server.poll_transmit() {
        let n = bytes::Buf::remaining(out);
        bytes::Buf::advance(out, n);
    }
    server
}

/// A masked text frame of `size` bytes of mixed ASCII and multi-byte UTF-8.
fn text_frame(size: usize) -> Vec<u8> {
    let text: String = "chinwag ✓ WebSocket ünïcödé — ".chars().cycle().take(size).collect();
    let payload = &text.as_bytes()[..text.len().min(size)];
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode+unmask+validate vs memcpy");
    for size in [1 << 10, 64 << 10, 1 << 20] {
        let frame = text_frame(size);
        group.throughput(Throughput::Bytes(frame.len() as u64));
        let mut server = open_server();
        group.bench_with_input(BenchmarkId::new("chinwag", size), &frame, |b, frame| {
            b.iter(|| {
                server.receive(black_box(frame));
                match server.poll_event() {
                    Some(Event::Text(t)) => black_box(t),
                    other => panic!("{other:?}"),
                };
            })
        });
        group.bench_with_input(BenchmarkId::new("memcpy", size), &frame, |b, frame| {
            b.iter(|| black_box(black_box(&frame[..]).to_vec()))
        });
    }
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
            let mut server = Connection::server(Config::default(), Instant::now());
            server.receive(black_box(&bytes));
            let Some(Event::UpgradeRequest(_)) = server.poll_event() else { panic!() };
            server.accept(Accept::new()).unwrap();
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

criterion_group!(benches, decode, handshake, broadcast_frame);
criterion_main!(benches);

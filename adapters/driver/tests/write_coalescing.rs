//! The driver's I/O strategy, observed on an in-memory transport that counts system
//! calls: one vectored write answers a whole burst of pipelined messages.

use chinwag_core::Config;
use chinwag_driver::{Timer, Transport};
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

#[derive(Default)]
struct Wire {
    to_server: Vec<u8>,
    from_server: Vec<u8>,
    writes: usize,
}

/// A transport whose input is fixed up front and whose writes are counted.
struct Memory(Arc<Mutex<Wire>>);

impl Transport for Memory {
    fn poll_read(&mut self, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut wire = self.0.lock().unwrap();
        if wire.to_server.is_empty() {
            return Poll::Pending;
        }
        let n = buf.len().min(wire.to_server.len());
        buf[..n].copy_from_slice(&wire.to_server[..n]);
        wire.to_server.drain(..n);
        Poll::Ready(Ok(n))
    }
    fn poll_write_vectored(&mut self, _: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let mut wire = self.0.lock().unwrap();
        wire.writes += 1;
        let mut n = 0;
        for b in bufs {
            wire.from_server.extend_from_slice(b);
            n += b.len();
        }
        Poll::Ready(Ok(n))
    }
    fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

struct NeverTimer;
impl Timer for NeverTimer {
    fn unarmed() -> Self {
        NeverTimer
    }
    fn reset(&mut self, _: Instant) {}
    fn poll_elapsed(&mut self, _: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

fn poll_once<F: Future>(future: F) -> Poll<F::Output> {
    pin!(future).poll(&mut Context::from_waker(Waker::noop()))
}

fn masked_text(text: &str) -> Vec<u8> {
    let mut frame = vec![0x81, 0x80 | text.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(text.as_bytes());
    frame
}

#[test]
fn a_pipelined_burst_is_answered_with_one_write() {
    let wire = Arc::new(Mutex::new(Wire::default()));
    let request = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    wire.lock().unwrap().to_server.extend_from_slice(request.as_bytes());
    let Poll::Ready(Ok(mut ws)) =
        poll_once(chinwag_driver::accept::<_, NeverTimer>(Memory(wire.clone()), Config::default()))
    else {
        panic!("handshake")
    };
    assert_eq!(wire.lock().unwrap().writes, 1, "the 101 response");

    // Sixteen messages arrive in one read.
    let burst: Vec<u8> = (0..16).flat_map(|i| masked_text(&format!("m{i:02}"))).collect();
    wire.lock().unwrap().to_server.extend_from_slice(&burst);
    for i in 0..16 {
        let Poll::Ready(Some(message)) = poll_once(ws.recv()) else { panic!("message {i}") };
        assert!(poll_once(ws.feed(&message)).is_ready());
    }
    assert_eq!(wire.lock().unwrap().writes, 1, "nothing written while the burst is being read");
    // The next receive finds no input: it writes all sixteen replies, then waits.
    assert!(poll_once(ws.recv()).is_pending());
    let wire = wire.lock().unwrap();
    assert_eq!(wire.writes, 2, "one write for the whole burst");
    let replies: Vec<u8> = (0..16).flat_map(|i| [&[0x81, 3][..], format!("m{i:02}").as_bytes()].concat()).collect();
    assert!(wire.from_server.ends_with(&replies));
}

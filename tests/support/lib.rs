//! Helpers for the cross-runtime tests: a server on one runtime in its own thread,
//! timeouts and raw transport I/O that work on every runtime.

use chinwag_core::Config;
use chinwag_driver::{PendingRequest, Runtime, Transport, read_request};
use std::future::{Future, poll_fn};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

/// The pending request type of runtime `R`.
pub type Pending<R> = PendingRequest<<R as Runtime>::Io, <R as Runtime>::Timer>;

/// Starts a server on runtime `S` in a thread of its own; every connection's request
/// goes to `handler` in a task of its own. Returns the address it listens on.
pub fn start_server<S, F, Fut>(config: Config, handler: F) -> SocketAddr
where
    S: Runtime,
    F: Fn(Pending<S>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        S::block_on(async move {
            let listener = S::bind("127.0.0.1:0".parse().unwrap()).await.expect("bind");
            tx.send(S::local_addr(&listener).unwrap()).unwrap();
            let handler = Arc::new(handler);
            loop {
                let Ok((io, _)) = S::accept(&listener).await else { continue };
                let handler = handler.clone();
                let config = config.clone();
                S::spawn(async move {
                    if let Ok(pending) = read_request::<_, S::Timer>(io, config).await {
                        handler(pending).await;
                    }
                });
            }
        })
    });
    rx.recv().expect("server address")
}

/// `Some(output)` if `future` finishes within `limit` on runtime `R`.
pub async fn timeout<R: Runtime, T>(limit: Duration, future: impl Future<Output = T>) -> Option<T> {
    let mut future = pin!(future);
    let mut sleep = pin!(R::sleep(limit));
    poll_fn(|cx| {
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// Writes all of `bytes` to a raw transport.
pub async fn write_all<T: Transport>(io: &mut T, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let n = poll_fn(|cx| io.poll_write_vectored(cx, &[IoSlice::new(bytes)])).await?;
        bytes = &bytes[n..];
    }
    poll_fn(|cx| io.poll_flush(cx)).await
}

/// Reads whatever arrives next from a raw transport (empty at EOF).
pub async fn read_some<T: Transport>(io: &mut T) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0; 64 << 10];
    let n = poll_fn(|cx| io.poll_read(cx, &mut buf)).await?;
    buf.truncate(n);
    Ok(buf)
}

/// Reads until EOF from a raw transport.
pub async fn read_to_end<T: Transport>(io: &mut T) -> Vec<u8> {
    let mut all = Vec::new();
    while let Ok(chunk) = read_some(io).await {
        if chunk.is_empty() {
            break;
        }
        all.extend_from_slice(&chunk);
    }
    all
}

/// A valid upgrade request for `path` on `addr`.
pub fn upgrade_request(addr: SocketAddr, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A masked client text frame carrying `text` (for raw transports).
pub fn masked_text_frame(text: &str) -> Vec<u8> {
    let payload = text.as_bytes();
    assert!(payload.len() < 126, "short frames only");
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

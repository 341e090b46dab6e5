//! A WebSocket echo server on `std::net`: one thread per connection, blocking
//! reads and writes, and `chinwag_core::Connection` driven directly, with no
//! async runtime and no chinwag driver. It follows the core's one way to be
//! driven: time and bytes in, events and bytes out.
//!
//! Usage: `blocking-echo [ADDR]` (default `127.0.0.1:9002`). `tests/run.sh`
//! runs the Autobahn cases 1-10 against it.

use bytes::Buf;
use chinwag_core::http::StatusCode;
use chinwag_core::{Accept, Config, Connection, Event, HttpResponse, Message};
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// How long a write may block before the peer counts as gone: a peer that stops
/// reading must not hold its thread forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9002".into());
    let listener = TcpListener::bind(&addr)?;
    eprintln!("blocking echo server listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => drop(std::thread::spawn(move || serve(stream))),
            // Out of descriptors and the like: pause rather than spin.
            Err(e) => {
                eprintln!("accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    Ok(())
}

/// The echo server's limits: Autobahn sends messages of up to 16 MiB.
fn config() -> Config {
    Config { max_frame_size: 64 << 20, max_message_size: 64 << 20, ..Config::default() }
}

/// Serves one connection until the core says it is finished.
fn serve(mut stream: TcpStream) {
    if stream.set_nodelay(true).and_then(|()| stream.set_write_timeout(Some(WRITE_TIMEOUT))).is_err() {
        return;
    }
    // One reading of the clock per wake-up serves every call until the next.
    let mut now = Instant::now();
    let mut conn = Connection::server(config(), now);
    let mut buf = vec![0; 64 << 10];
    let mut read_timeout = None;
    loop {
        // Events out: answer the handshake, echo each message.
        while let Some(event) = conn.poll_event(now) {
            // A call the core refuses in the current state changes nothing.
            let _ = match event {
                Event::UpgradeRequest(_) => conn.accept(now, Accept::new()),
                Event::HttpRequest(_) => {
                    conn.respond(now, HttpResponse::new(StatusCode::OK, "text/plain", "a WebSocket echo server\n"))
                }
                Event::Text(text) => conn.send(now, &Message::Text(text)),
                Event::Binary(data) => conn.send(now, &Message::Binary(data)),
                _ => Ok(()),
            };
        }
        // Bytes out: every queued frame, in as few writes as the socket takes.
        if write_all(&mut stream, &mut conn).is_err() {
            conn.transport_lost(now);
            continue;
        }
        if conn.is_finished() {
            return; // dropping the stream closes it
        }
        if conn.wants_write_shutdown() {
            // A failed connection: FIN now, then read until the client's EOF.
            let _ = stream.shutdown(Shutdown::Write);
        }
        // Sleep until bytes arrive or the core's next deadline.
        let timeout = conn.poll_timeout().map(|at| at.saturating_duration_since(now));
        if timeout == Some(Duration::ZERO) {
            conn.handle_timeout(now);
            continue;
        }
        // Setting the read timeout is a system call: the one set stays while it
        // wakes us no later than the deadline and not much earlier (each message
        // moves the keepalive deadline a little later).
        let keep = match (read_timeout, timeout) {
            (Some(set), Some(wanted)) => set <= wanted && set >= wanted - wanted / 8,
            (set, wanted) => set == wanted,
        };
        if !keep {
            if stream.set_read_timeout(timeout).is_err() {
                conn.transport_lost(now);
                continue;
            }
            read_timeout = timeout;
        }
        // Bytes in (or the end of them, or the timer).
        let read = stream.read(&mut buf);
        now = Instant::now();
        match read {
            Ok(0) => conn.receive_eof(now),
            Ok(n) => conn.receive(now, &buf[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                conn.handle_timeout(now);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => conn.transport_lost(now),
        }
    }
}

/// Writes everything the connection has queued, with vectored writes.
fn write_all(stream: &mut TcpStream, conn: &mut Connection) -> io::Result<()> {
    while let Some(out) = conn.poll_transmit() {
        // Most writes are one buffer: spare them filling an array of slices.
        let written = if out.buffer_count() == 1 {
            stream.write(out.chunk())?
        } else {
            let mut slices = [IoSlice::new(&[]); 64];
            let count = out.chunks_vectored(&mut slices);
            stream.write_vectored(&slices[..count])?
        };
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        out.advance(written);
    }
    Ok(())
}

//! A WebSocket echo server on one `mio` event loop: one thread, many
//! connections, and `chinwag_core::Connection` driven directly, with no async
//! runtime and no chinwag driver. Its instructions per echo stand for what the
//! core costs without a runtime, so the loop is kept lean: connections in a slab
//! (no hashing per event), timers in one ordered set (a wake-up costs the
//! connections that woke), one read per readiness unless it filled the buffer.
//!
//! Usage: `event-loop-echo [ADDR]` (default `127.0.0.1:9003`). `tests/run.sh`
//! runs the Autobahn cases 1-10 against it.

use bytes::Buf;
use chinwag_core::http::StatusCode;
use chinwag_core::{Accept, Config, Connection, Event, HttpResponse, Message};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::collections::BTreeSet;
use std::io::{self, IoSlice, Read, Write};
use std::time::Instant;

const LISTENER: Token = Token(usize::MAX);

/// Every connection's filed deadline, earliest first.
type Timers = BTreeSet<(Instant, Token)>;

/// One connection: its socket, its state machine, and what the loop knows of it.
struct Client {
    stream: TcpStream,
    conn: Connection,
    /// The deadline filed for it in the loop's timer set, maybe earlier than the
    /// connection's: each message pushes the keepalive deadline later, and
    /// refiling it each time costs more than one wake-up for nothing.
    deadline: Option<Instant>,
    /// Whether it waits for the socket to be writable (bytes are queued).
    wants_write: bool,
}

fn main() -> io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9003".into());
    let mut listener = TcpListener::bind(addr.parse().map_err(io::Error::other)?)?;
    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    eprintln!("event-loop echo server listening on {}", listener.local_addr()?);
    let (mut clients, mut timers) = (Slab::<Client>::new(), Timers::new());
    let (mut events, mut buf) = (Events::with_capacity(1024), vec![0; 64 << 10]);
    loop {
        let timeout = timers.first().map(|(at, _)| at.saturating_duration_since(Instant::now()));
        match poll.poll(&mut events, timeout) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => result?,
        }
        let now = Instant::now(); // one reading per wake-up
        for event in &events {
            if event.token() == LISTENER {
                accept_all(&listener, &poll, &mut clients);
                continue;
            }
            let Some(client) = clients.get_mut(event.token().0) else { continue };
            let closed = event.is_read_closed() || event.is_error();
            if event.is_readable() || closed {
                read_all(client, &mut buf, now, closed);
            }
            drive(&poll, &mut clients, &mut timers, event.token(), now);
        }
        // Every timer due by now fires, in order.
        while let Some(&(at, token)) = timers.first().filter(|(at, _)| *at <= now) {
            timers.remove(&(at, token));
            if let Some(client) = clients.get_mut(token.0) {
                client.deadline = None;
                client.conn.handle_timeout(now);
                drive(&poll, &mut clients, &mut timers, token, now);
            }
        }
    }
}

/// The echo server's limits: Autobahn sends messages of up to 16 MiB.
fn config() -> Config {
    Config { max_frame_size: 64 << 20, max_message_size: 64 << 20, ..Config::default() }
}

/// Accepts every pending connection (the poll is edge-triggered).
fn accept_all(listener: &TcpListener, poll: &Poll, clients: &mut Slab<Client>) {
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let entry = clients.vacant_entry();
                let token = Token(entry.key());
                if stream.set_nodelay(true).is_err()
                    || poll.registry().register(&mut stream, token, Interest::READABLE).is_err()
                {
                    continue;
                }
                let conn = Connection::server(config(), Instant::now());
                entry.insert(Client { stream, conn, deadline: None, wants_write: false });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Out of descriptors and the like: the next wake-up tries again.
            Err(e) => return eprintln!("accept failed: {e}"),
        }
    }
}

/// Feeds the connection every byte its socket holds, or the end of them: until
/// `WouldBlock` (the poll is edge-triggered), or a read short of the buffer,
/// which emptied the socket (later bytes raise a new edge), unless the peer
/// `closed`: its end of stream may wait behind the bytes, with no edge to come.
fn read_all(client: &mut Client, buf: &mut [u8], now: Instant, closed: bool) {
    loop {
        match client.stream.read(buf) {
            Ok(0) => return client.conn.receive_eof(now),
            Ok(n) => {
                client.conn.receive(now, &buf[..n]);
                if n < buf.len() && !closed {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return client.conn.transport_lost(now),
        }
    }
}

/// Acts on the connection's events (echoes), writes what it queued, files its
/// next deadline, and drops it once the core says it is finished.
fn drive(poll: &Poll, clients: &mut Slab<Client>, timers: &mut Timers, token: Token, now: Instant) {
    let Some(client) = clients.get_mut(token.0) else { return };
    let conn = &mut client.conn;
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
    let blocked = match write_some(&mut client.stream, conn) {
        Ok(blocked) => blocked,
        Err(_) => {
            conn.transport_lost(now);
            false
        }
    };
    if conn.wants_write_shutdown() {
        // A failed connection: FIN now, then read until the client's EOF.
        let _ = client.stream.shutdown(std::net::Shutdown::Write);
    }
    if conn.is_finished() {
        client.deadline.map(|at| timers.remove(&(at, token)));
        let mut client = clients.remove(token.0);
        let _ = poll.registry().deregister(&mut client.stream);
        return; // dropping the stream closes it
    }
    if blocked != client.wants_write {
        let interest = if blocked { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        client.wants_write = blocked;
        if poll.registry().reregister(&mut client.stream, token, interest).is_err() {
            client.conn.transport_lost(now);
        }
    }
    // Filed anew only to fire earlier: one that comes too soon finds nothing
    // due, and the connection's deadline is filed then.
    if let Some(at) = client.conn.poll_timeout()
        && client.deadline.is_none_or(|filed| at < filed)
    {
        client.deadline.map(|filed| timers.remove(&(filed, token)));
        timers.insert((at, token));
        client.deadline = Some(at);
    }
}

/// Writes what the connection queued until done or the socket is full; returns
/// whether bytes are left for when it is writable again.
fn write_some(stream: &mut TcpStream, conn: &mut Connection) -> io::Result<bool> {
    while let Some(out) = conn.poll_transmit() {
        // Most writes are one buffer: spare them filling an array of slices.
        let written = if out.buffer_count() == 1 {
            stream.write(out.chunk())
        } else {
            let mut slices = [IoSlice::new(&[]); 64];
            let count = out.chunks_vectored(&mut slices);
            stream.write_vectored(&slices[..count])
        };
        match written {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => out.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

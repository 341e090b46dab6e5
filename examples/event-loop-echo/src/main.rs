//! A WebSocket echo server on one `mio` event loop: one thread, many
//! connections, and `chinwag_core::Connection` driven directly, with no async
//! runtime and no chinwag driver. Each connection's timer sits in one ordered
//! set, so a wake-up costs the connections that woke, not all of them.
//!
//! Usage: `event-loop-echo [ADDR]` (default `127.0.0.1:9003`). `tests/run.sh`
//! runs the Autobahn cases 1-10 against it.

use bytes::Buf;
use chinwag_core::http::StatusCode;
use chinwag_core::{Accept, Config, Connection, Event, HttpResponse, Message};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::collections::{BTreeSet, HashMap};
use std::io::{self, IoSlice, Read, Write};
use std::time::Instant;

const LISTENER: Token = Token(usize::MAX);

/// One connection: its socket, its state machine, and what the loop knows of it.
struct Client {
    stream: TcpStream,
    conn: Connection,
    /// The deadline filed for it in the loop's timer set.
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
    let mut clients: HashMap<Token, Client> = HashMap::new();
    let mut timers: BTreeSet<(Instant, Token)> = BTreeSet::new();
    let (mut events, mut buf, mut next) = (Events::with_capacity(1024), vec![0; 64 << 10], 0);
    loop {
        let timeout = timers.first().map(|(at, _)| at.saturating_duration_since(Instant::now()));
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let now = Instant::now(); // one reading per wake-up
        for event in &events {
            if event.token() == LISTENER {
                accept_all(&listener, &poll, &mut clients, &mut next);
                continue;
            }
            let Some(client) = clients.get_mut(&event.token()) else { continue };
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                read_all(client, &mut buf, now);
            }
            drive(&poll, &mut clients, &mut timers, event.token(), now);
        }
        // Every timer due by now fires, in order.
        while let Some(&(at, token)) = timers.first().filter(|(at, _)| *at <= now) {
            timers.remove(&(at, token));
            if let Some(client) = clients.get_mut(&token) {
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
fn accept_all(listener: &TcpListener, poll: &Poll, clients: &mut HashMap<Token, Client>, next: &mut usize) {
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let token = Token(*next);
                *next = next.wrapping_add(1) % usize::MAX;
                if stream.set_nodelay(true).is_err()
                    || poll.registry().register(&mut stream, token, Interest::READABLE).is_err()
                {
                    continue;
                }
                let conn = Connection::server(config(), Instant::now());
                clients.insert(token, Client { stream, conn, deadline: None, wants_write: false });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Out of descriptors and the like: the listener stays ready, and the
            // next wake-up tries again.
            Err(e) => return eprintln!("accept failed: {e}"),
        }
    }
}

/// Feeds the connection every byte its socket holds (edge-triggered: until
/// `WouldBlock`), or the end of them.
fn read_all(client: &mut Client, buf: &mut [u8], now: Instant) {
    loop {
        match client.stream.read(buf) {
            Ok(0) => return client.conn.receive_eof(now),
            Ok(n) => client.conn.receive(now, &buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return client.conn.transport_lost(now),
        }
    }
}

/// Acts on the connection's events (echoes), writes what it queued, files its
/// next deadline, and drops it once the core says it is finished.
fn drive(
    poll: &Poll,
    clients: &mut HashMap<Token, Client>,
    timers: &mut BTreeSet<(Instant, Token)>,
    token: Token,
    now: Instant,
) {
    let Some(client) = clients.get_mut(&token) else { return };
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
        if let Some(at) = client.deadline {
            timers.remove(&(at, token));
        }
        let mut client = clients.remove(&token).expect("present");
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
    let deadline = client.conn.poll_timeout();
    if deadline != client.deadline {
        if let Some(at) = client.deadline {
            timers.remove(&(at, token));
        }
        if let Some(at) = deadline {
            timers.insert((at, token));
        }
        client.deadline = deadline;
    }
}

/// Writes what the connection queued until done or the socket is full; returns
/// whether bytes are left for when it is writable again.
fn write_some(stream: &mut TcpStream, conn: &mut Connection) -> io::Result<bool> {
    while let Some(out) = conn.poll_transmit() {
        let mut slices = [IoSlice::new(&[]); 64];
        let count = out.chunks_vectored(&mut slices);
        match stream.write_vectored(&slices[..count]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => out.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

//! One thread's loop: its listener, its connections, their timers.

use bytes::Buf;
use chinwag_core::{CloseCode, Config, Connection, Event, State};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendAncillaryBuffer, SendFlags};
use slab::Slab;
use std::collections::BTreeSet;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Control;

/// How long a loop stops accepting after `accept` failed for something other
/// than an empty queue (out of descriptors, most often). The listener stays
/// readable while connections wait, and an edge-triggered poll reports that only
/// once: without a timer of its own the loop would not try again until another
/// client came; trying again at once would spin.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Reads one connection may make in one turn of the loop. A client that sends as
/// fast as it is read would otherwise keep the thread from every other
/// connection; past this, its turn ends and it is driven again on the next one.
pub const READS_PER_TURN: usize = 16;

/// Bytes read from a socket at once, into one buffer per loop: a read of a burst
/// of pipelined messages fills it, and the core parses them in place.
const READ_BUFFER: usize = 64 << 10;

/// Events a loop takes from the poll at once.
const EVENTS_PER_POLL: usize = 1024;

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);

/// What a server does with its connections' events: the loop calls it with the
/// connection that produced each one, and it answers through the core's own calls
/// ([`Connection::accept`], [`respond`](Connection::respond),
/// [`send`](Connection::send), [`close`](Connection::close), ...), which queue
/// bytes the loop writes once the handler returns. Each loop has a handler of its
/// own, so it needs no locks for what only its connections use.
///
/// Answer every [`Event::UpgradeRequest`] and [`Event::HttpRequest`]: a request
/// left unanswered holds its connection until the handshake timeout.
pub trait Handler {
    /// `event` happened on `conn` at `now`. A call the core refuses (a send on a
    /// connection that is closing) returns its error and changes nothing; the
    /// connection's own [`Event::Closed`] follows in due course.
    fn on_event(&mut self, now: Instant, conn: &mut Connection, event: Event);

    /// A connection from `peer` was accepted at `now` (before its request is read).
    fn on_accept(&mut self, now: Instant, peer: SocketAddr) {
        let _ = (now, peer);
    }

    /// `accept` failed at `now` with `error` (out of descriptors, say): the loop
    /// tries again after [`ACCEPT_RETRY`]. A server should log it, at a rate
    /// that a burst of failures does not turn into a flood of lines.
    fn on_accept_error(&mut self, now: Instant, error: &io::Error) {
        let _ = (now, error);
    }
}

/// How a loop ended, after a shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Connections still open when the grace period (the close timeout and a
    /// second) ran out: peers that never completed their close handshake, and
    /// handshakes that had not finished. Their sockets were closed.
    pub abandoned: usize,
}

/// Serves `listener` on the calling thread until `control` shuts it down: every
/// connection accepted is a server [`Connection`] with `config`, its events go to
/// `handler`. Returns once every connection has finished after the shutdown, or
/// when the close timeout and a second have passed since it began.
///
/// # Errors
/// When the poll cannot be created or the listener registered, before anything
/// is served; later, only if waiting on the poll fails (which takes a broken
/// system: connections' own failures end those connections, not the loop).
pub fn serve<H: Handler>(
    listener: std::net::TcpListener,
    config: Arc<Config>,
    handler: H,
    control: &Control,
) -> io::Result<Stopped> {
    listener.set_nonblocking(true)?;
    let poll = Poll::new()?;
    let mut listener = TcpListener::from_std(listener);
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let _registered = control.register(waker);
    let mut server = Loop {
        poll,
        listener: Some(listener),
        clients: Slab::new(),
        timers: BTreeSet::new(),
        handler,
        config,
        read_buffer: vec![0; READ_BUFFER].into_boxed_slice(),
        again: Vec::new(),
        accept_retry: None,
        stopping: None,
    };
    let mut events = Events::with_capacity(EVENTS_PER_POLL);
    let mut now = Instant::now();
    loop {
        match server.poll.poll(&mut events, server.wait(now)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => result?,
        }
        // One clock reading per wake-up serves every connection it woke.
        now = Instant::now();
        if server.stopping.is_none() && control.is_stopping() {
            server.stop(now, control.close_frame());
        }
        for event in &events {
            match event.token() {
                LISTENER => server.accept_all(now),
                WAKER => {}
                token => server.ready(token, event, now),
            }
        }
        server.drive_again(now);
        server.fire_timers(now);
        if server.accept_retry.is_some_and(|at| at <= now) {
            server.accept_retry = None;
            server.accept_all(now);
        }
        if let Some(stopping) = &server.stopping
            && (server.clients.is_empty() || now >= stopping.deadline)
        {
            return Ok(Stopped { abandoned: server.clients.len() });
        }
    }
}

/// One connection: its socket, its state machine, and what the loop knows of it.
struct Client {
    stream: TcpStream,
    conn: Connection,
    /// The deadline filed for it in the loop's timers, maybe earlier than the
    /// connection's: each message pushes the keepalive deadline later, and
    /// refiling it each time costs more than one wake-up for nothing.
    deadline: Option<Instant>,
    /// Whether the socket may hold bytes not read yet: it was reported readable
    /// and has not been read to the end since (reading stops while the connection
    /// does not want input, and resumes when it does, with no new readiness).
    unread: bool,
    /// Whether the peer's end of stream (or an error) was reported: the socket is
    /// read to its end, as no further readiness will come.
    peer_done: bool,
    /// Whether it waits for the socket to be writable (bytes are queued).
    wants_write: bool,
    /// Whether it is in the loop's list to be driven again next turn.
    queued_again: bool,
}

/// The shutdown under way.
struct Stopping {
    deadline: Instant,
    code: CloseCode,
    reason: String,
}

struct Loop<H> {
    poll: Poll,
    /// `None` once the loop stops accepting (shutdown).
    listener: Option<TcpListener>,
    clients: Slab<Client>,
    /// Every connection's filed deadline, earliest first.
    timers: BTreeSet<(Instant, Token)>,
    handler: H,
    config: Arc<Config>,
    read_buffer: Box<[u8]>,
    /// Connections whose turn ended before their socket was read to the end.
    again: Vec<Token>,
    /// When to try accepting again after a failure.
    accept_retry: Option<Instant>,
    stopping: Option<Stopping>,
}

impl<H: Handler> Loop<H> {
    /// How long the poll may wait: until the next timer, at most, counted from
    /// `now`, the time of the last wake-up (not read again: the timer may fire the
    /// few microseconds late that the last turn took, and every wake-up is
    /// spared a clock reading).
    fn wait(&self, now: Instant) -> Option<Duration> {
        if !self.again.is_empty() {
            return Some(Duration::ZERO);
        }
        let next =
            [self.timers.first().map(|&(at, _)| at), self.accept_retry, self.stopping.as_ref().map(|s| s.deadline)]
                .into_iter()
                .flatten()
                .min()?;
        Some(next.saturating_duration_since(now))
    }

    /// Accepts every pending connection (the poll is edge-triggered).
    fn accept_all(&mut self, now: Instant) {
        let Some(listener) = &self.listener else { return };
        loop {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    self.handler.on_accept(now, peer);
                    let entry = self.clients.vacant_entry();
                    let token = Token(entry.key());
                    // A socket that cannot be set up is dropped: closed at once.
                    if stream.set_nodelay(true).is_err()
                        || self.poll.registry().register(&mut stream, token, Interest::READABLE).is_err()
                    {
                        continue;
                    }
                    // Registered edge-triggered: bytes already there are reported.
                    let conn = Connection::server(self.config.clone(), now);
                    // The handshake timeout, filed now: a client that sends nothing
                    // is never driven otherwise.
                    let deadline = conn.poll_timeout();
                    if let Some(at) = deadline {
                        self.timers.insert((at, token));
                    }
                    entry.insert(Client {
                        stream,
                        conn,
                        deadline,
                        unread: false,
                        peer_done: false,
                        wants_write: false,
                        queued_again: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.handler.on_accept_error(now, &e);
                    self.accept_retry = Some(now + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    /// A connection's socket is ready.
    fn ready(&mut self, token: Token, event: &mio::event::Event, now: Instant) {
        let Some(client) = self.clients.get_mut(token.0) else { return };
        let peer_done = event.is_read_closed() || event.is_error();
        if event.is_readable() || peer_done {
            client.unread = true;
        }
        client.peer_done |= peer_done;
        self.drive(token, now);
    }

    /// Drives the connections whose last turn was cut short.
    fn drive_again(&mut self, now: Instant) {
        for token in std::mem::take(&mut self.again) {
            if let Some(client) = self.clients.get_mut(token.0) {
                client.queued_again = false;
                self.drive(token, now);
            }
        }
    }

    /// Fires every timer due by `now`, in order.
    fn fire_timers(&mut self, now: Instant) {
        while let Some(&(at, token)) = self.timers.first().filter(|(at, _)| *at <= now) {
            self.timers.remove(&(at, token));
            if let Some(client) = self.clients.get_mut(token.0) {
                client.deadline = None;
                client.conn.handle_timeout(now);
                self.drive(token, now);
            }
        }
    }

    /// Stops accepting and closes every open connection with the frame given; a
    /// connection still in its handshake is closed when it opens.
    fn stop(&mut self, now: Instant, (code, reason): (CloseCode, String)) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.accept_retry = None;
        let deadline = now + self.config.close_timeout + Duration::from_secs(1);
        self.stopping = Some(Stopping { deadline, code, reason });
        let tokens: Vec<Token> = self.clients.iter().map(|(key, _)| Token(key)).collect();
        for token in tokens {
            self.close_for_shutdown(token, now);
            self.drive(token, now);
        }
    }

    /// Closes an open connection with the shutdown's frame.
    fn close_for_shutdown(&mut self, token: Token, now: Instant) {
        let (Some(stopping), Some(client)) = (&self.stopping, self.clients.get_mut(token.0)) else { return };
        if client.conn.state() == State::Open {
            // Checked by `Control::shutdown`, and the connection is open.
            let _ = client.conn.close(now, stopping.code, &stopping.reason);
        }
    }

    /// Reads what the connection wants, hands its events to the handler while its
    /// output is under the backlog's high-water mark, writes what they queued,
    /// and again while the socket holds more and the connection wants it; then
    /// files its next deadline, or drops it once the core says it is finished.
    fn drive(&mut self, token: Token, now: Instant) {
        let Some(client) = self.clients.get_mut(token.0) else { return };
        let mut reads = 0;
        let mut opened = false;
        loop {
            let mut progressed = false;
            if client.unread && client.conn.wants_input() {
                if reads == READS_PER_TURN {
                    if !client.queued_again {
                        client.queued_again = true;
                        self.again.push(token);
                    }
                    break;
                }
                reads += 1;
                read_once(client, &mut self.read_buffer, now);
                progressed = true;
            }
            // Events wait while the replies queued are over the high-water mark:
            // the connection then wants no input either, until the peer reads.
            // (`has_events` first: the call that would find none costs about 60
            // instructions per message. A deadline due by `now` is not missed: the
            // reads above fired it, and a filed timer fires it later this turn.)
            while !client.conn.is_backlogged() && client.conn.has_events() {
                let Some(event) = client.conn.poll_event(now) else { break };
                opened |= matches!(event, Event::Open(_));
                self.handler.on_event(now, &mut client.conn, event);
                progressed = true;
            }
            let queued = client.conn.buffered_amount();
            let blocked = match write_queued(&mut client.stream, &mut client.conn) {
                Ok(blocked) => blocked,
                Err(_) => {
                    client.conn.transport_lost(now);
                    false
                }
            };
            if blocked != client.wants_write {
                let interest = if blocked { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
                client.wants_write = blocked;
                if self.poll.registry().reregister(&mut client.stream, token, interest).is_err() {
                    client.conn.transport_lost(now);
                }
            }
            progressed |= client.conn.buffered_amount() < queued;
            // Again while the socket holds bytes the connection wants, or events
            // wait that the write just made room for.
            let more_input = client.unread && client.conn.wants_input();
            let more_events = client.conn.has_events() && !client.conn.is_backlogged();
            // (A read always progresses: it takes bytes, or learns there are none.
            // Events are taken again only after something moved, so that a
            // connection whose state allows neither cannot spin.)
            if !(more_input || more_events && progressed) {
                break;
            }
        }
        if opened && self.stopping.is_some() {
            // Opened during the shutdown: closed as it opens, and driven again to
            // queue the close frame's bytes.
            self.close_for_shutdown(token, now);
            return self.drive(token, now);
        }
        let Some(client) = self.clients.get_mut(token.0) else { return };
        if client.conn.wants_write_shutdown() {
            // A failed connection: FIN now, then read until the client's EOF.
            let _ = client.stream.shutdown(std::net::Shutdown::Write);
        }
        if client.conn.is_finished() {
            // The last events (the `Closed` of a lost transport) go to the
            // handler before the connection does.
            while let Some(event) = client.conn.poll_event(now) {
                self.handler.on_event(now, &mut client.conn, event);
            }
            if let Some(at) = client.deadline {
                self.timers.remove(&(at, token));
            }
            let mut client = self.clients.remove(token.0);
            let _ = self.poll.registry().deregister(&mut client.stream);
            return; // dropping the stream closes it
        }
        self.file_timer(token);
    }

    /// Files the connection's next deadline, unless one at least as early is
    /// filed: one that comes too soon finds nothing due, and the connection's
    /// deadline is filed then.
    fn file_timer(&mut self, token: Token) {
        let Some(client) = self.clients.get_mut(token.0) else { return };
        // While a connection is open its deadlines only move later (each message
        // restarts the keepalive; a ping's answer is awaited from when it is
        // sent, which is when the filed timer fired): the one filed stays early
        // enough, and asking for the exact one (about 30 instructions) is spared.
        // Closing arms earlier ones (the close timeout, the linger).
        if client.deadline.is_some() && client.conn.state() == State::Open {
            return;
        }
        if let Some(at) = client.conn.poll_timeout()
            && client.deadline.is_none_or(|filed| at < filed)
        {
            if let Some(filed) = client.deadline {
                self.timers.remove(&(filed, token));
            }
            self.timers.insert((at, token));
            client.deadline = Some(at);
        }
    }
}

/// One read into `buffer`, handed to the connection. A read short of the buffer
/// emptied the socket (later bytes raise a new edge), unless the peer is done:
/// its end of stream may wait behind the bytes, with no edge to come.
fn read_once(client: &mut Client, buffer: &mut [u8], now: Instant) {
    match rustix::net::recv(&client.stream, &mut *buffer, RecvFlags::empty()) {
        Ok((0, _)) => {
            client.unread = false;
            client.conn.receive_eof(now);
        }
        Ok((n, _)) => {
            if n < buffer.len() && !client.peer_done {
                client.unread = false;
            }
            client.conn.receive(now, &buffer[..n]);
        }
        Err(Errno::AGAIN) => client.unread = false,
        Err(Errno::INTR) => {}
        Err(_) => {
            client.unread = false;
            client.conn.transport_lost(now);
        }
    }
}

/// Writes what the connection queued until done or the socket is full; returns
/// whether bytes are left for when it is writable again.
fn write_queued(stream: &mut TcpStream, conn: &mut Connection) -> io::Result<bool> {
    while let Some(out) = conn.poll_transmit() {
        // Most writes are one buffer: spare them filling an array of slices.
        // NOSIGNAL: a peer gone is an error here, not a SIGPIPE for a process
        // that embeds the loop without ignoring it.
        let written = if out.buffer_count() == 1 {
            rustix::net::send(&*stream, out.chunk(), SendFlags::NOSIGNAL)
        } else {
            let mut slices = [IoSlice::new(&[]); 64];
            let count = out.chunks_vectored(&mut slices);
            let mut no_control = SendAncillaryBuffer::default();
            rustix::net::sendmsg(&*stream, &slices[..count], &mut no_control, SendFlags::NOSIGNAL)
        };
        match written {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => out.advance(n),
            Err(Errno::AGAIN) => return Ok(true),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(false)
}

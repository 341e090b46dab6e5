//! The poll loop: moves bytes between a transport and a core connection, and time
//! from a timer into it, following the core's call-order contract.

use bytes::Buf;
use chinwag_core::{Connection, Event, HandshakeError};
use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use crate::{Timer, Transport};

/// Size of the per-thread read buffer.
const READ_BUF_SIZE: usize = 64 << 10;
/// At most this many buffers go into one vectored write (the rest follow in the
/// next one).
const MAX_IOVECS: usize = 64;
/// At most this many reads in one poll of a task, so that a peer streaming data
/// cannot keep a worker thread (and this connection's lock) to itself.
const READS_PER_POLL: u8 = 32;
/// [`Io::timer_polled`] when the timer was not polled with the shared waker since
/// it was last armed. A wake count whose low 32 bits equal it is never taken for
/// a recorded one (the timer is polled once more instead).
const NOT_POLLED: u32 = u32::MAX;

thread_local! {
    /// One read buffer per thread, borrowed only inside a poll: an idle connection
    /// holds no read buffer at all (the core keeps what a partial frame needs).
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_BUF_SIZE].into_boxed_slice());
}

/// A transport, the connection it carries and the timer that drives its deadlines.
pub(crate) struct Io<T, R> {
    pub(crate) transport: T,
    pub(crate) conn: Connection,
    /// Armed for the core's next deadline, or earlier (see [`poll_timer`](Self::poll_timer)).
    timer: R,
    /// The shared waker's wake count (its low 32 bits; see `wake.rs`) when the runtime timer was
    /// last polled with that waker and found not due, or [`NOT_POLLED`].
    timer_polled: u32,
    read_done: bool,
    shut_down: bool,
    /// Bytes were written and not yet flushed (a TLS or buffered transport).
    needs_flush: bool,
    /// Reads left in the current poll of the task.
    read_budget: u8,
}

impl<T: Transport, R: Timer> Io<T, R> {
    pub(crate) fn new(transport: T, conn: Connection) -> Self {
        Self {
            transport,
            conn,
            timer: R::unarmed(),
            timer_polled: NOT_POLLED,
            read_done: false,
            shut_down: false,
            needs_flush: false,
            read_budget: READS_PER_POLL,
        }
    }

    /// Starts a poll of the receiving task: reads the clock once (a poll lasts
    /// microseconds) and resets the read budget. That reading, which the
    /// connection keeps ([`Connection::now`]), serves everything the task does in
    /// this wake-up (in a [`Clocked`](crate::Clocked) task, the reading of the
    /// poll); calls from other tasks read the clock themselves.
    pub(crate) fn start_poll(&mut self) -> &mut Self {
        self.read_budget = READS_PER_POLL;
        self.conn.handle_timeout(crate::clock::now());
        self
    }

    /// Runs the contract's loop until the core has an event (returned), the
    /// connection is finished and the transport shut down (`None`), or everything
    /// waits on the transport or the timer (`Pending`). Reads wake `cx`; writes and
    /// the timer wake `write_cx`. When `write_cx` is the shared waker (see
    /// `wake.rs`), `wakes` is its wake count, read before this poll began, and
    /// lets an unchanged timer go unpolled (see [`poll_timer`](Self::poll_timer)).
    pub(crate) fn poll_event(
        &mut self,
        cx: &mut Context<'_>,
        write_cx: &mut Context<'_>,
        wakes: Option<u64>,
    ) -> Poll<Option<Event>> {
        loop {
            // `has_events` first: most turns of this loop find none, and asking
            // costs less than a call that also checks the deadlines.
            if self.conn.has_events()
                && let Some(event) = self.conn.poll_event(self.conn.now())
            {
                return Poll::Ready(Some(event));
            }
            if let Poll::Ready(Err(_)) = self.poll_write(write_cx) {
                continue; // the core now knows the transport is lost
            }
            if !self.shut_down && self.conn.wants_write_shutdown() {
                // A server lingering after failing the connection: the FIN now,
                // then reads (which the core discards) until the client's EOF.
                // Errors change nothing: a broken transport fails the reads too.
                let _ = ready!(self.transport.poll_close(write_cx));
                self.shut_down = true;
            }
            if self.conn.is_finished() {
                if !self.shut_down {
                    // Errors here change nothing: the transport is being dropped.
                    let _ = ready!(self.transport.poll_close(write_cx));
                    self.shut_down = true;
                }
                return Poll::Ready(None);
            }
            if !self.read_done && self.conn.wants_input() {
                if self.read_budget == 0 {
                    // Let other tasks run; carry on in the next poll.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                self.read_budget -= 1;
                match self.poll_read(cx) {
                    Poll::Ready(()) => continue,
                    Poll::Pending => {}
                }
            }
            if self.poll_timer(write_cx, wakes).is_ready() {
                continue;
            }
            return Poll::Pending;
        }
    }

    /// Reads once into the thread's buffer and tells the core what happened: bytes,
    /// the end of the stream, or a failed transport.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        READ_BUF.with_borrow_mut(|buf| match self.transport.poll_read(cx, buf) {
            Poll::Ready(Ok(0)) => {
                self.read_done = true;
                self.conn.receive_eof(self.conn.now());
                Poll::Ready(())
            }
            Poll::Ready(Ok(n)) => {
                self.conn.receive(self.conn.now(), &buf[..n]);
                Poll::Ready(())
            }
            Poll::Ready(Err(_)) => {
                self.read_done = true;
                self.conn.transport_lost(self.conn.now());
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        })
    }

    /// Writes and flushes everything queued, many frames per system call. On an
    /// error the core is told the transport is lost (it drops what was queued).
    /// Sending tasks call this too, so the error path reads the clock itself.
    pub(crate) fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = ready!(self.poll_write_inner(cx));
        if result.is_err() {
            self.read_done = true;
            self.conn.transport_lost(crate::clock::now());
        }
        Poll::Ready(result)
    }

    fn poll_write_inner(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(out) = self.conn.poll_transmit() {
            // Most writes are one buffer (frames encoded in place): skip filling a
            // large array of slices for them.
            let written = if out.buffer_count() == 1 {
                self.transport.poll_write_vectored(cx, &[IoSlice::new(bytes::Buf::chunk(out))])
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let n = out.chunks_vectored(&mut slices);
                self.transport.poll_write_vectored(cx, &slices[..n])
            };
            match ready!(written) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(written) => {
                    out.advance(written);
                    self.needs_flush = true;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        if self.needs_flush {
            ready!(self.transport.poll_flush(cx))?;
            self.needs_flush = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Waits for the core's next deadline. The runtime's timer is moved only to an
    /// earlier deadline: every message received pushes the keepalive deadline
    /// later, and moving a runtime timer costs a re-registration in its wheel
    /// (hundreds of instructions per message). A timer left earlier than the
    /// deadline fires once for nothing: the core finds nothing due, and the next
    /// call arms the deadline as it is then.
    ///
    /// Polling the runtime's timer costs a hundred-odd instructions, at every wait
    /// for input. With the shared waker (`wakes` is its count) that is done only
    /// when needed: a timer polled with it and left as it was cannot have fired
    /// unless the waker was woken since, which changes the count (and wakes the
    /// task to poll again).
    pub(crate) fn poll_timer(&mut self, cx: &mut Context<'_>, wakes: Option<u64>) -> Poll<()> {
        let Some(at) = self.conn.poll_timeout() else {
            self.timer.disarm();
            self.timer_polled = NOT_POLLED;
            return Poll::Pending;
        };
        let armed = match self.timer.deadline() {
            Some(armed) if armed <= at => armed,
            _ => {
                self.timer.reset(at);
                self.timer_polled = NOT_POLLED;
                at
            }
        };
        if let Some(wakes) = wakes {
            // The low 32 bits of the count are enough (and keep every connection 8
            // bytes smaller): a false match between two calls here would take
            // exactly a multiple of 2^32 wakes in between, each of which schedules
            // this task.
            let wakes = wakes as u32;
            if wakes != NOT_POLLED && self.timer_polled == wakes {
                return Poll::Pending;
            }
            if self.timer.poll_elapsed(cx).is_pending() {
                self.timer_polled = wakes;
                return Poll::Pending;
            }
        } else {
            self.timer_polled = NOT_POLLED;
            ready!(self.timer.poll_elapsed(cx));
        }
        // The timer disarmed itself as it fired.
        self.timer_polled = NOT_POLLED;
        // The runtime's clock may read a hair before the deadline it woke us for;
        // give the core at least that deadline so the loop makes progress.
        self.conn.handle_timeout(Instant::now().max(armed));
        Poll::Ready(())
    }

    /// While a request waits for its answer: reads what the client sends (the core
    /// keeps it, within its bound), and fires the handshake timer, until the
    /// request can no longer be answered; returns why. The core does not ask for
    /// input then ([`Connection::wants_input`]), since an answer usually comes at
    /// once; reading anyway is how a long wait learns that the client left.
    pub(crate) fn poll_deciding(&mut self, cx: &mut Context<'_>) -> Poll<HandshakeError> {
        loop {
            if let Some(event) = self.conn.poll_event(self.conn.now()) {
                // Nothing else happens to a request waiting for its answer.
                if let Event::HandshakeFailed(failed) = event {
                    return Poll::Ready(failed);
                }
                continue;
            }
            if self.read_budget == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.read_budget -= 1;
            if self.read_done || self.poll_read(cx).is_pending() {
                ready!(self.poll_timer(cx, None));
            }
        }
    }

    /// Drives the connection until it is finished, discarding events: used once
    /// nothing more can be delivered (a refused handshake, a closing connection).
    pub(crate) fn poll_finish(
        &mut self,
        cx: &mut Context<'_>,
        write_cx: &mut Context<'_>,
        wakes: Option<u64>,
    ) -> Poll<()> {
        while ready!(self.poll_event(cx, write_cx, wakes)).is_some() {}
        Poll::Ready(())
    }

    /// [`poll_event`](Self::poll_event) for a single task that owns the transport
    /// (the handshake): everything wakes `cx`.
    pub(crate) fn poll_event_alone(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let mut write_cx = Context::from_waker(cx.waker());
        self.poll_event(cx, &mut write_cx, None)
    }

    /// [`poll_finish`](Self::poll_finish) for a single task that owns the transport.
    pub(crate) fn poll_finish_alone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut write_cx = Context::from_waker(cx.waker());
        self.poll_finish(cx, &mut write_cx, None)
    }
}

//! The poll loop: moves bytes between a transport and a core connection, and time
//! from a timer into it, following the core's call-order contract.

use bytes::Buf;
use chinwag_core::{Closed, Connection, Event};
use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use crate::{Timer, Transport};

/// Size of the per-thread read buffer.
const READ_BUF_SIZE: usize = 64 << 10;
/// At most this many buffers go into one vectored write.
const MAX_IOVECS: usize = 64;

thread_local! {
    /// One read buffer per thread, borrowed only inside a poll: an idle connection
    /// holds no read buffer at all (the core keeps what a partial frame needs).
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_BUF_SIZE].into_boxed_slice());
}

/// A transport, the connection it carries and the timer that drives its deadlines.
pub(crate) struct Io<T, R> {
    pub(crate) transport: T,
    pub(crate) conn: Connection,
    timer: R,
    timer_at: Option<Instant>,
    read_done: bool,
    shut_down: bool,
    pub(crate) closed: Option<Closed>,
}

impl<T: Transport, R: Timer> Io<T, R> {
    pub(crate) fn new(transport: T, conn: Connection) -> Self {
        Self { transport, conn, timer: R::unarmed(), timer_at: None, read_done: false, shut_down: false, closed: None }
    }

    /// Runs the contract's loop until the core has an event (returned), the
    /// connection is finished and the transport shut down (`None`), or everything
    /// waits on the transport or the timer (`Pending`, woken through `cx`).
    pub(crate) fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        loop {
            self.conn.handle_timeout(Instant::now());
            if let Some(event) = self.conn.poll_event() {
                if let Event::Closed(closed) = &event {
                    self.closed = Some(closed.clone());
                }
                return Poll::Ready(Some(event));
            }
            if let Poll::Ready(Err(_)) = self.poll_write(cx) {
                // The peer can no longer receive: the connection is lost.
                self.conn.receive_eof();
                self.read_done = true;
                continue;
            }
            if self.conn.is_finished() {
                if !self.shut_down {
                    // Errors here change nothing: the transport is being dropped.
                    let _ = ready!(self.transport.poll_close(cx));
                    self.shut_down = true;
                }
                return Poll::Ready(None);
            }
            if !self.read_done {
                match self.poll_read(cx) {
                    Poll::Ready(true) => continue,
                    Poll::Ready(false) => {
                        self.read_done = true;
                        self.conn.receive_eof();
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
            if self.poll_timer(cx).is_ready() {
                continue;
            }
            return Poll::Pending;
        }
    }

    /// Reads once into the thread's buffer and feeds the core. `Ready(false)` at the
    /// end of the stream or on a read error.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        READ_BUF.with_borrow_mut(|buf| match self.transport.poll_read(cx, buf) {
            Poll::Ready(Ok(0) | Err(_)) => Poll::Ready(false),
            Poll::Ready(Ok(n)) => {
                self.conn.receive(&buf[..n]);
                Poll::Ready(true)
            }
            Poll::Pending => Poll::Pending,
        })
    }

    /// Writes everything queued, many frames per system call.
    pub(crate) fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut wrote = false;
        while let Some(out) = self.conn.poll_transmit() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let n = out.chunks_vectored(&mut slices);
            match ready!(self.transport.poll_write_vectored(cx, &slices[..n])) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(written) => {
                    out.advance(written);
                    wrote = true;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        if wrote {
            ready!(self.transport.poll_flush(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(at) = self.conn.poll_timeout() else {
            self.timer_at = None;
            return Poll::Pending;
        };
        if self.timer_at != Some(at) {
            self.timer.reset(at);
            self.timer_at = Some(at);
        }
        ready!(self.timer.poll_elapsed(cx));
        // The runtime's clock may read a hair before the deadline it woke us for;
        // give the core at least the deadline so the loop makes progress.
        self.conn.handle_timeout(Instant::now().max(at));
        self.timer_at = None;
        Poll::Ready(())
    }

    /// Drives the connection until it is finished, discarding events: used once
    /// nothing more can be delivered (a refused handshake, a closing connection).
    pub(crate) fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while ready!(self.poll_event(cx)).is_some() {}
        Poll::Ready(())
    }
}

//! The async handles of an open connection: [`WebSocket`], and its halves
//! [`Sender`] and [`Receiver`].

use chinwag_core::{CloseCode, Closed, Connection, Event, LocalError, Message, SharedFrame, SkippedMessage, State};
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::Instant;

use crate::io::Io;
use crate::wake::Wakers;
use crate::{Error, Timer, Transport};

pub(crate) struct Shared<T, R> {
    io: Mutex<Io<T, R>>,
    /// Woken through the shared waker, which is passed to the transport and
    /// timer (see [`Shared::io_waker`]).
    wakers: Arc<Wakers>,
}

impl<T: Transport, R: Timer> Shared<T, R> {
    pub(crate) fn new(io: Io<T, R>) -> Arc<Self> {
        Arc::new(Self { io: Mutex::new(io), wakers: Arc::default() })
    }

    /// The shared waker, which wakes every task registered in `wakers`. Borrowed
    /// from the `Arc`, not stored: it is the same waker every time (transports
    /// keep their registration), and every idle connection is 16 bytes smaller.
    fn io_waker(&self) -> futures_task::WakerRef<'_> {
        futures_task::waker_ref(&self.wakers)
    }

    fn lock(&self) -> MutexGuard<'_, Io<T, R>> {
        self.io.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` for the receiving task: it is recorded as the receiver, its
    /// waker serves reads, the shared waker serves writes and the timer. `f` is
    /// also given the shared waker's wake count, read once the receiver is
    /// recorded (any later wake reaches it).
    fn with_receiver<O>(
        &self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut Io<T, R>, &mut Context<'_>, &mut Context<'_>, Option<u64>) -> O,
    ) -> O {
        self.wakers.set_receiver(cx.waker());
        let wakes = self.wakers.wakes();
        let io_waker = self.io_waker();
        let mut write_cx = Context::from_waker(&io_waker);
        f(self.lock().start_poll(), cx, &mut write_cx, Some(wakes))
    }

    /// Polls `f` for a sending task, which writes with the shared waker. Most sends
    /// find room and finish at once, without registering anything (a registration
    /// per send cost a lock and a scan, and a list that grew with every fresh
    /// waker); one that must wait registers to be woken when the transport can
    /// take more.
    fn with_sender<O>(
        &self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut Io<T, R>, &mut Context<'_>) -> Poll<O>,
    ) -> Poll<O> {
        let before = self.wakers.wakes();
        let io_waker = self.io_waker();
        let mut write_cx = Context::from_waker(&io_waker);
        let polled = {
            let mut io = self.lock();
            let state = io.conn.state();
            let polled = f(&mut io, &mut write_cx);
            // A write that failed here ended the connection: the receiving task
            // must learn of it (its own reads may never fail, on a transport
            // whose read side stays quiet).
            if io.conn.state() != state {
                self.wakers.wake_receiver();
            }
            polled
        };
        if polled.is_pending() {
            self.wakers.wait_to_send(cx.waker(), before);
        }
        polled
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.with_receiver(cx, |io, cx, write_cx, wakes| Self::poll_message_in(io, cx, write_cx, wakes))
    }

    fn poll_incoming(&self, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        self.with_receiver(cx, |io, cx, write_cx, wakes| Self::poll_incoming_in(io, cx, write_cx, wakes))
    }

    /// [`poll_recv`](Self::poll_recv), but first waits (writing) while the
    /// outgoing backlog is over its bound, under the same lock.
    fn poll_recv_with_room(&self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.with_receiver(cx, |io, cx, write_cx, wakes| {
            // The writes are polled with the shared waker, which wakes this task
            // too. A failed write ends the connection and drops the backlog: the
            // loop below then reports the end. The deadlines still run meanwhile:
            // a peer that reads nothing must not hold the connection forever.
            while io.conn.is_backlogged() && io.poll_write(write_cx).is_pending() && io.conn.is_backlogged() {
                ready!(io.poll_timer(write_cx, wakes));
            }
            Self::poll_message_in(io, cx, write_cx, wakes)
        })
    }

    /// The next message, passing over skipped ones (see
    /// [`poll_incoming_in`](Self::poll_incoming_in)).
    fn poll_message_in(
        io: &mut Io<T, R>,
        cx: &mut Context<'_>,
        write_cx: &mut Context<'_>,
        wakes: Option<u64>,
    ) -> Poll<Option<Message>> {
        loop {
            match ready!(Self::poll_incoming_in(io, cx, write_cx, wakes)) {
                None => return Poll::Ready(None),
                Some(Incoming::Message(message)) => return Poll::Ready(Some(message)),
                Some(Incoming::Skipped(_)) => {}
            }
        }
    }

    fn poll_incoming_in(
        io: &mut Io<T, R>,
        cx: &mut Context<'_>,
        write_cx: &mut Context<'_>,
        wakes: Option<u64>,
    ) -> Poll<Option<Incoming>> {
        loop {
            match ready!(io.poll_event(cx, write_cx, wakes)) {
                None => return Poll::Ready(None),
                Some(Event::Text(text)) => return Poll::Ready(Some(Incoming::Message(Message::Text(text)))),
                Some(Event::Binary(data)) => return Poll::Ready(Some(Incoming::Message(Message::Binary(data)))),
                Some(Event::Skipped(skipped)) => return Poll::Ready(Some(Incoming::Skipped(skipped))),
                // Pongs are queued by the core; close details are kept in the core.
                Some(_) => {}
            }
        }
    }

    /// Waits, writing, while the outgoing backlog is over its bound.
    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.with_sender(cx, Self::poll_room_in)
    }

    /// [`poll_room`](Self::poll_room) under a lock already taken.
    fn poll_room_in(io: &mut Io<T, R>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        while io.conn.is_backlogged() {
            ready!(io.poll_write(cx)).map_err(Error::Io)?;
        }
        Poll::Ready(Ok(()))
    }

    /// Writes everything queued.
    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.with_sender(cx, |io, cx| ready!(io.poll_write(cx)).map_err(Error::Io).into())
    }

    /// Makes a call into the core from a task other than the connection's own (or
    /// from it, outside a poll): the clock is read at the call (or taken from the
    /// [`Clocked`](crate::Clocked) poll in progress), because a time cached by the
    /// receiving task may be long past (an idle connection's task sleeps).
    ///
    /// If the call changed the connection's state or produced events (a close
    /// armed its timer, a slow consumer was failed, a due deadline fired), the
    /// receiving task is woken to act on it. Events (or received bytes) that were
    /// already waiting need no wake: whatever left them there was the receiving
    /// task itself or woke it, so it knows. An echo answering pipelined messages
    /// from its receiving task would otherwise wake itself once per message.
    fn call(
        io: &mut Io<T, R>,
        wakers: &Wakers,
        f: impl FnOnce(&mut Connection, Instant) -> Result<(), LocalError>,
    ) -> Result<(), Error> {
        Self::call_at(io, wakers, crate::clock::now(), f)
    }

    /// [`call`](Self::call) with a clock reading the caller just took.
    fn call_at(
        io: &mut Io<T, R>,
        wakers: &Wakers,
        now: Instant,
        f: impl FnOnce(&mut Connection, Instant) -> Result<(), LocalError>,
    ) -> Result<(), Error> {
        let (before, waiting) = (io.conn.state(), io.conn.has_events());
        let out = f(&mut io.conn, now);
        let after = io.conn.state();
        if after != before || (!waiting && io.conn.has_events()) {
            wakers.wake_receiver();
        }
        match out {
            Err(LocalError::Closed)
                if before != State::Closed && io.conn.error() == Some(chinwag_core::ConnectionError::SlowConsumer) =>
            {
                Err(Error::SlowConsumer)
            }
            other => other.map_err(Error::Local),
        }
    }

    /// Waits while the outgoing backlog is over its bound, then queues `message`
    /// and, with `write`, writes everything queued: one lock and no waker
    /// registration when there is room, as there almost always is.
    fn poll_queue(
        &self,
        cx: &mut Context<'_>,
        message: &Message,
        queued: &mut bool,
        write: bool,
    ) -> Poll<Result<(), Error>> {
        self.with_sender(cx, |io, cx| {
            if !*queued {
                ready!(Self::poll_room_in(io, cx))?;
                Self::call(io, &self.wakers, |conn, now| conn.send(now, message))?;
                *queued = true;
            }
            if write {
                ready!(io.poll_write(cx)).map_err(Error::Io)?;
            }
            Poll::Ready(Ok(()))
        })
    }

    /// Makes a call into the core (see [`call`](Self::call)).
    fn queue(&self, f: impl FnOnce(&mut Connection, Instant) -> Result<(), LocalError>) -> Result<(), Error> {
        Self::call(&mut self.lock(), &self.wakers, f)
    }

    /// Queues without waiting and wakes the receiving task, which writes it.
    fn push(&self, f: impl FnOnce(&mut Connection, Instant) -> Result<(), LocalError>) -> Result<(), Error> {
        let queued = self.queue(f);
        self.wakers.wake_receiver();
        queued
    }

    fn push_message(&self, message: &Message) -> Result<(), Error> {
        self.push(|c, now| c.send(now, message))
    }

    fn push_shared_at(&self, now: Instant, frame: &SharedFrame) -> Result<(), Error> {
        let queued = Self::call_at(&mut self.lock(), &self.wakers, now, |c, now| c.send_shared(now, frame));
        // The receiving task writes what was queued.
        self.wakers.wake_receiver();
        queued
    }

    fn push_shared_waking_later(&self, now: Instant, frame: &SharedFrame, wake: &mut Vec<Waker>) -> Result<(), Error> {
        let queued = Self::call_at(&mut self.lock(), &self.wakers, now, |c, now| c.send_shared(now, frame));
        wake.extend(self.wakers.receiver());
        queued
    }

    fn push_close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.push(|c, now| c.close(now, code, reason))
    }

    fn buffered_amount(&self) -> usize {
        self.lock().conn.buffered_amount()
    }

    fn is_backlogged(&self) -> bool {
        self.lock().conn.is_backlogged()
    }

    // Plain functions returning the `poll_fn`, not `async fn`s: the future is
    // then three words, where an `async fn` around it doubles that, and an echo
    // task's size is set by the largest future it awaits.
    fn send<'a>(&'a self, message: &'a Message) -> impl Future<Output = Result<(), Error>> + 'a {
        let mut queued = false;
        poll_fn(move |cx| self.poll_queue(cx, message, &mut queued, true))
    }

    fn feed<'a>(&'a self, message: &'a Message) -> impl Future<Output = Result<(), Error>> + 'a {
        let mut queued = false;
        poll_fn(move |cx| self.poll_queue(cx, message, &mut queued, false))
    }

    async fn close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.queue(|c, now| c.close(now, code, reason))?;
        poll_fn(|cx| self.poll_flush(cx)).await
    }
}

/// An open WebSocket connection: receive with [`recv`](Self::recv), send with
/// [`send`](Self::send), or [`split`](Self::split) it for two tasks.
pub struct WebSocket<T, R> {
    shared: Arc<Shared<T, R>>,
}

impl<T, R> WebSocket<T, R> {
    /// The bytes of the one heap block that a connection's handles share (the
    /// transport, the core's [`Connection`], the timer and the driver's state),
    /// before the allocator rounds it up to its size class. With the runtime's
    /// own task and the transport's registration, it is most of what an idle
    /// connection costs; allocators such as mimalloc and jemalloc round 385 to
    /// 448 bytes, so the adapters' tests keep it at 384 or less.
    pub const SHARED_BLOCK_SIZE: usize = 2 * size_of::<usize>() + size_of::<Shared<T, R>>();
}

impl<T: Transport, R: Timer> WebSocket<T, R> {
    pub(crate) fn from_io(io: Io<T, R>) -> Self {
        Self { shared: Shared::new(io) }
    }

    /// The next message, or `None` once the connection is closed and the transport
    /// shut down ([`close_info`](Self::close_info) then says how it ended).
    ///
    /// Pings are answered and keepalive and close deadlines are kept while a task
    /// waits here, so keep one task receiving. Cancel-safe: bytes already read stay
    /// in the connection, and no message is lost if the future is dropped.
    pub async fn recv(&mut self) -> Option<Message> {
        poll_fn(|cx| self.shared.poll_recv(cx)).await
    }

    /// Like [`recv`](Self::recv), but also reports the messages skipped for their
    /// size (with [`Oversized::Skip`](chinwag_core::Oversized::Skip) in the
    /// connection's config), which `recv` passes over.
    pub async fn recv_incoming(&mut self) -> Option<Incoming> {
        poll_fn(|cx| self.shared.poll_incoming(cx)).await
    }

    /// Sends a message: waits while the outgoing backlog is over its bound, queues
    /// the message and writes everything queued.
    pub fn send<'a>(&'a self, message: &'a Message) -> impl Future<Output = Result<(), Error>> + 'a {
        self.shared.send(message)
    }

    /// Queues a message without writing it (waiting only while the backlog is over
    /// its bound). Queued messages are written by [`flush`](Self::flush), by the next
    /// `send`, or by [`recv`](Self::recv) before it waits for input. So an echo loop
    /// that feeds its replies (`while let Some(m) = ws.recv().await { ws.feed(&m).await? }`)
    /// answers a burst of pipelined messages with one write.
    pub fn feed<'a>(&'a self, message: &'a Message) -> impl Future<Output = Result<(), Error>> + 'a {
        self.shared.feed(message)
    }

    /// [`recv`](Self::recv) in poll form, for a future written by hand: a task
    /// that polls the connection itself keeps no `recv` future in its state, so
    /// an idle connection's task can be as small as the handle.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.shared.poll_recv(cx)
    }

    /// [`poll_recv`](Self::poll_recv) that first waits, writing, while the
    /// outgoing backlog is over its bound: for a task that answers what it
    /// receives (an echo, a relay), which then stops reading while its peer does
    /// not read the answers, and queues each answer at once with
    /// [`start_send`](Self::start_send). One lock per message, where
    /// [`poll_ready`](Self::poll_ready) and `poll_recv` take two.
    pub fn poll_recv_with_room(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.shared.poll_recv_with_room(cx)
    }

    /// The wait of [`feed`](Self::feed) in poll form: ready once the outgoing
    /// backlog is within its bound (writing meanwhile), as for a `Sink`. Then
    /// [`start_send`](Self::start_send) queues the next message.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared.poll_room(cx)
    }

    /// Queues a message at once, without waiting or writing: [`feed`](Self::feed)
    /// after [`poll_ready`](Self::poll_ready) (or
    /// [`poll_recv_with_room`](Self::poll_recv_with_room)), for a future written by hand, which
    /// then need not keep the message across a wait. The message is written by the
    /// next [`recv`](Self::recv) or `poll_recv` (before it waits for input), `send`
    /// or [`flush`](Self::flush). Without `poll_ready` first, the backlog can pass
    /// its bound; past [`Config::max_backlog`](chinwag_core::Config::max_backlog)
    /// the connection is failed as a slow consumer ([`Error::SlowConsumer`]).
    pub fn start_send(&self, message: &Message) -> Result<(), Error> {
        self.shared.queue(|c, now| c.send(now, message))
    }

    /// Writes everything queued.
    pub async fn flush(&self) -> Result<(), Error> {
        poll_fn(|cx| self.shared.poll_flush(cx)).await
    }

    /// Closes the connection: sends a close frame and waits until the peer answers
    /// (or the close timeout passes) and the transport is shut down. Messages that
    /// arrive meanwhile are discarded.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.shared.close(code, reason).await?;
        poll_fn(|cx| self.shared.with_receiver(cx, |io, cx, write_cx, wakes| io.poll_finish(cx, write_cx, wakes)))
            .await;
        Ok(())
    }

    /// The coarse state of the connection.
    pub fn state(&self) -> State {
        self.shared.lock().conn.state()
    }

    /// How the connection ended, once it has.
    pub fn close_info(&self) -> Option<Closed> {
        self.shared.lock().conn.closed().cloned()
    }

    /// The agreed subprotocol.
    pub fn subprotocol(&self) -> Option<String> {
        self.shared.lock().conn.subprotocol().map(str::to_owned)
    }

    /// The permessage-deflate parameters agreed, if the connection compresses
    /// (so that an application can log or report it).
    pub fn deflate(&self) -> Option<chinwag_core::deflate::DeflateParams> {
        self.shared.lock().conn.deflate().copied()
    }

    /// Splits into a receiving half and a sending half that can live in different
    /// tasks. The [`Sender`] can be cloned.
    pub fn split(self) -> (Sender<T, R>, Receiver<T, R>) {
        (Sender { shared: self.shared.clone() }, Receiver { shared: self.shared })
    }

    /// A sending handle for other tasks, while this handle keeps receiving.
    pub fn sender(&self) -> Sender<T, R> {
        Sender { shared: self.shared.clone() }
    }
}

impl<T: Transport, R: Timer> futures_core::Stream for WebSocket<T, R> {
    type Item = Message;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.shared.poll_recv(cx)
    }
}

/// What [`WebSocket::recv_incoming`] returns.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// A message.
    Message(Message),
    /// A message went by unread: it was over the size limits (see
    /// [`Oversized::Skip`](chinwag_core::Oversized::Skip)).
    Skipped(SkippedMessage),
}

/// The receiving half of a split [`WebSocket`]. It also drives keepalive, close
/// deadlines and the writing of frames pushed with [`Sender::push`].
pub struct Receiver<T, R> {
    shared: Arc<Shared<T, R>>,
}

impl<T: Transport, R: Timer> Receiver<T, R> {
    /// The next message; see [`WebSocket::recv`].
    pub async fn recv(&mut self) -> Option<Message> {
        poll_fn(|cx| self.shared.poll_recv(cx)).await
    }

    /// The next message or skipped message; see [`WebSocket::recv_incoming`].
    pub async fn recv_incoming(&mut self) -> Option<Incoming> {
        poll_fn(|cx| self.shared.poll_incoming(cx)).await
    }

    /// How the connection ended, once it has.
    pub fn close_info(&self) -> Option<Closed> {
        self.shared.lock().conn.closed().cloned()
    }
}

impl<T: Transport, R: Timer> futures_core::Stream for Receiver<T, R> {
    type Item = Message;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.shared.poll_recv(cx)
    }
}

/// What a connection's senders can do without waiting, whatever its transport and
/// timer: the operations behind [`AnySender`].
trait PushOnly: Send + Sync {
    fn push_message(&self, message: &Message) -> Result<(), Error>;
    fn push_shared_at(&self, now: Instant, frame: &SharedFrame) -> Result<(), Error>;
    fn push_shared_waking_later(&self, now: Instant, frame: &SharedFrame, wake: &mut Vec<Waker>) -> Result<(), Error>;
    fn push_close(&self, code: CloseCode, reason: &str) -> Result<(), Error>;
    fn buffered_amount(&self) -> usize;
    fn is_backlogged(&self) -> bool;
    fn state(&self) -> State;
}

impl<T: Transport + Send, R: Timer + Send> PushOnly for Shared<T, R> {
    fn push_message(&self, message: &Message) -> Result<(), Error> {
        Shared::push_message(self, message)
    }
    fn push_shared_at(&self, now: Instant, frame: &SharedFrame) -> Result<(), Error> {
        Shared::push_shared_at(self, now, frame)
    }
    fn push_shared_waking_later(&self, now: Instant, frame: &SharedFrame, wake: &mut Vec<Waker>) -> Result<(), Error> {
        Shared::push_shared_waking_later(self, now, frame, wake)
    }
    fn push_close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        Shared::push_close(self, code, reason)
    }
    fn buffered_amount(&self) -> usize {
        Shared::buffered_amount(self)
    }
    fn is_backlogged(&self) -> bool {
        Shared::is_backlogged(self)
    }
    fn state(&self) -> State {
        self.lock().conn.state()
    }
}

/// A [`Sender`] whose transport and timer types are erased
/// ([`Sender::into_any`]), for a registry of connections that should not be
/// generic over them (a server's hub, a shutdown list). It can do what does not
/// wait: push messages, shared frames and a close, and read the backlog. It is
/// the same pointer as the `Sender` it came from, without an allocation of its
/// own, where a boxed `Sender` would add one per connection.
#[derive(Clone)]
pub struct AnySender(Arc<dyn PushOnly>);

impl std::fmt::Debug for AnySender {
    // Without the connection's state: reading it takes the connection's lock,
    // which whoever formats this may hold.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnySender")
    }
}

impl AnySender {
    /// See [`Sender::push`].
    pub fn push(&self, message: &Message) -> Result<(), Error> {
        self.0.push_message(message)
    }

    /// See [`Sender::push_shared`].
    pub fn push_shared(&self, frame: &SharedFrame) -> Result<(), Error> {
        self.0.push_shared_at(crate::clock::now(), frame)
    }

    /// See [`Sender::push_shared_at`].
    pub fn push_shared_at(&self, now: Instant, frame: &SharedFrame) -> Result<(), Error> {
        self.0.push_shared_at(now, frame)
    }

    /// [`push_shared_at`](Self::push_shared_at), leaving the wake of the
    /// connection's task to the caller: its waker is added to `wake`, to be woken
    /// once the caller let go of its own locks. For fan-out under a lock: waking a
    /// task that runs on another thread is a system call (the other thread's
    /// runtime is unparked), and made under the lock for each recipient, it
    /// multiplied the time the lock was held (on two runtime threads, 96 µs per
    /// line to 100 recipients instead of 18 on one).
    pub fn push_shared_waking_later(
        &self,
        now: Instant,
        frame: &SharedFrame,
        wake: &mut Vec<Waker>,
    ) -> Result<(), Error> {
        self.0.push_shared_waking_later(now, frame, wake)
    }

    /// See [`Sender::push_close`].
    pub fn push_close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.0.push_close(code, reason)
    }

    /// See [`Sender::buffered_amount`].
    pub fn buffered_amount(&self) -> usize {
        self.0.buffered_amount()
    }

    /// See [`Sender::is_backlogged`].
    pub fn is_backlogged(&self) -> bool {
        self.0.is_backlogged()
    }

    /// See [`Sender::state`].
    pub fn state(&self) -> State {
        self.0.state()
    }
}

/// The sending half of a [`WebSocket`]; clone it to send from many tasks.
pub struct Sender<T, R> {
    shared: Arc<Shared<T, R>>,
}

impl<T, R> Clone for Sender<T, R> {
    fn clone(&self) -> Self {
        Self { shared: self.shared.clone() }
    }
}

impl<T: Transport + Send + 'static, R: Timer + Send + 'static> Sender<T, R> {
    /// This sender with its transport and timer types erased; see [`AnySender`].
    pub fn into_any(self) -> AnySender {
        AnySender(self.shared)
    }
}

impl<T: Transport, R: Timer> Sender<T, R> {
    /// Sends a message; see [`WebSocket::send`].
    pub async fn send(&self, message: &Message) -> Result<(), Error> {
        self.shared.send(message).await
    }

    /// Queues a message, waiting only while the outgoing backlog is over its bound
    /// (see [`WebSocket::feed`]), and wakes the receiving task, which writes it
    /// together with whatever else is queued by then: [`push`](Self::push) with
    /// backpressure, for a task that produces faster than the peer reads.
    pub async fn feed(&self, message: &Message) -> Result<(), Error> {
        let queued = self.shared.feed(message).await;
        // Also on an error, as for `push`: a refusal may have started the close.
        self.shared.wakers.wake_receiver();
        queued
    }

    /// Writes everything queued.
    pub async fn flush(&self) -> Result<(), Error> {
        poll_fn(|cx| self.shared.poll_flush(cx)).await
    }

    /// Queues a message and returns at once, without waiting for room or writing:
    /// the receiving task writes it, together with whatever else is queued by then.
    /// Meant for fan-out from other tasks; watch [`buffered_amount`](Self::buffered_amount)
    /// to bound the backlog.
    pub fn push(&self, message: &Message) -> Result<(), Error> {
        self.shared.push_message(message)
    }

    /// Queues a frame encoded once for many connections; see [`push`](Self::push).
    pub fn push_shared(&self, frame: &SharedFrame) -> Result<(), Error> {
        self.push_shared_at(crate::clock::now(), frame)
    }

    /// [`push_shared`](Self::push_shared) with a clock reading taken by the caller:
    /// for fan-out, one reading per broadcast instead of one per recipient. `now`
    /// must be read for this broadcast, just before it (a value kept from an
    /// earlier wake-up would arm deadlines in the past).
    pub fn push_shared_at(&self, now: Instant, frame: &SharedFrame) -> Result<(), Error> {
        self.shared.push_shared_at(now, frame)
    }

    /// [`push_shared_at`](Self::push_shared_at), leaving the wake of the
    /// connection's task to the caller (see [`AnySender::push_shared_waking_later`]).
    pub fn push_shared_waking_later(
        &self,
        now: Instant,
        frame: &SharedFrame,
        wake: &mut Vec<Waker>,
    ) -> Result<(), Error> {
        self.shared.push_shared_waking_later(now, frame, wake)
    }

    /// Queues a close frame and returns at once, like [`push`](Self::push): the
    /// receiving task writes it and completes the close handshake. For closing
    /// connections from other tasks (a server shutting down, say). The close
    /// timeout runs from the call.
    pub fn push_close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.shared.push_close(code, reason)
    }

    /// Sends a close frame and writes it. The receiving half reports the end of the
    /// connection once the peer answers.
    pub async fn close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.shared.close(code, reason).await
    }

    /// Bytes queued and not yet written.
    pub fn buffered_amount(&self) -> usize {
        self.shared.buffered_amount()
    }

    /// Whether the bytes queued are over
    /// [`Config::backlog_high_water`](chinwag_core::Config::backlog_high_water): the
    /// peer reads more slowly than it is sent to.
    pub fn is_backlogged(&self) -> bool {
        self.shared.is_backlogged()
    }

    /// The coarse state of the connection.
    pub fn state(&self) -> State {
        self.shared.lock().conn.state()
    }
}

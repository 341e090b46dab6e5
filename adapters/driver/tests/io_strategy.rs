//! The driver's I/O strategy, observed on an in-memory transport that counts system
//! calls and can fail on demand: one vectored write per pipelined burst, no spinning
//! on a broken transport, no lost flush, bounded memory under a ping flood.

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
    reads: usize,
    /// Writes fail with a broken pipe.
    broken: bool,
    /// Writes wait (the peer does not read).
    stalled: bool,
    /// The next flush waits once.
    flush_waits: bool,
    flushed: usize,
    /// Input that never runs out: this frame, again and again.
    endless: Option<Vec<u8>>,
    /// The wakers stalled writes were polled with, in order.
    write_wakers: Vec<Waker>,
    /// For each stalled write after the first: whether the waker it was polled
    /// with `will_wake` the one kept from the write before (what a transport
    /// compares to keep its registration instead of replacing it).
    same_write_waker: Vec<bool>,
}

/// A transport whose input is fixed up front and whose writes are counted.
struct Memory(Arc<Mutex<Wire>>);

impl Transport for Memory {
    fn poll_read(&mut self, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut wire = self.0.lock().unwrap();
        wire.reads += 1;
        if wire.to_server.is_empty() {
            if let Some(frame) = wire.endless.clone() {
                let n = buf.len() / frame.len() * frame.len();
                for chunk in buf[..n].chunks_mut(frame.len()) {
                    chunk.copy_from_slice(&frame);
                }
                return Poll::Ready(Ok(n));
            }
            return Poll::Pending;
        }
        let n = buf.len().min(wire.to_server.len());
        buf[..n].copy_from_slice(&wire.to_server[..n]);
        wire.to_server.drain(..n);
        Poll::Ready(Ok(n))
    }
    fn poll_write_vectored(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let mut wire = self.0.lock().unwrap();
        wire.writes += 1;
        if wire.broken {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if wire.stalled {
            if let Some(kept) = wire.write_wakers.last() {
                let same = kept.will_wake(cx.waker());
                wire.same_write_waker.push(same);
            }
            wire.write_wakers.push(cx.waker().clone());
            return Poll::Pending;
        }
        let mut n = 0;
        for b in bufs {
            wire.from_server.extend_from_slice(b);
            n += b.len();
        }
        Poll::Ready(Ok(n))
    }
    fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut wire = self.0.lock().unwrap();
        if std::mem::take(&mut wire.flush_waits) {
            return Poll::Pending;
        }
        wire.flushed += 1;
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
    fn deadline(&self) -> Option<Instant> {
        None
    }
    fn disarm(&mut self) {}
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

type Ws<Tm = NeverTimer> = chinwag_driver::WebSocket<Memory, Tm>;

/// An open server-side WebSocket over the in-memory wire.
fn open(config: Config) -> (Ws, Arc<Mutex<Wire>>) {
    open_with_timer(config)
}

/// [`open`] with a timer of the test's choice.
fn open_with_timer<Tm: Timer>(config: Config) -> (Ws<Tm>, Arc<Mutex<Wire>>) {
    let wire = Arc::new(Mutex::new(Wire::default()));
    let request = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    wire.lock().unwrap().to_server.extend_from_slice(request.as_bytes());
    let Poll::Ready(Ok(ws)) = poll_once(chinwag_driver::accept::<_, Tm>(Memory(wire.clone()), config)) else {
        panic!("handshake")
    };
    (ws, wire)
}

#[test]
fn a_pipelined_burst_is_answered_with_one_write() {
    let (mut ws, wire) = open(Config::default());
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

/// A waker that counts its wakes.
struct CountingWaker(std::sync::atomic::AtomicUsize);

impl CountingWaker {
    /// A counter and a waker that counts on it.
    fn new() -> (Arc<Self>, Waker) {
        let counter = Arc::new(CountingWaker(std::sync::atomic::AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        (counter, waker)
    }

    fn wakes(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl std::task::Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn answering_a_pipelined_burst_does_not_wake_the_receiving_task() {
    let (mut ws, wire) = open(Config::default());
    let (counter, waker) = CountingWaker::new();
    let mut cx = Context::from_waker(&waker);
    let burst: Vec<u8> = (0..16).flat_map(|i| masked_text(&format!("m{i:02}"))).collect();
    wire.lock().unwrap().to_server.extend_from_slice(&burst);
    // The receiving task itself answers each message while the rest of the burst
    // waits in the connection: it knows they are there, so nothing wakes it.
    for i in 0..16 {
        let Poll::Ready(Some(message)) = pin!(ws.recv()).poll(&mut cx) else { panic!("message {i}") };
        assert!(pin!(ws.feed(&message)).poll(&mut cx).is_ready());
    }
    assert!(pin!(ws.recv()).poll(&mut cx).is_pending());
    assert_eq!(counter.wakes(), 0, "woken by its own replies");
}

#[test]
fn a_send_whose_write_fails_wakes_the_receiving_task() {
    let (mut ws, wire) = open(Config::default());
    let (counter, waker) = CountingWaker::new();
    let mut cx = Context::from_waker(&waker);
    assert!(pin!(ws.recv()).poll(&mut cx).is_pending());
    // Another task's send finds the transport broken: the connection ends, and
    // the receiving task, waiting for input that will never come, is told.
    let sender = ws.sender();
    wire.lock().unwrap().broken = true;
    assert!(matches!(poll_once(sender.send(&chinwag_core::Message::text("x"))), Poll::Ready(Err(_))));
    assert!(counter.wakes() > 0, "the receiving task was not woken");
    assert!(matches!(pin!(ws.recv()).poll(&mut cx), Poll::Ready(None)));
}

#[test]
fn writes_are_polled_with_one_shared_waker_that_reaches_receiver_and_senders() {
    let (mut ws, wire) = open(Config::default());
    let (receiver, receiver_waker) = CountingWaker::new();
    assert!(pin!(ws.recv()).poll(&mut Context::from_waker(&receiver_waker)).is_pending());
    wire.lock().unwrap().stalled = true;
    // Two sending tasks find the transport full.
    let (sender, sender_waker) = CountingWaker::new();
    let message = chinwag_core::Message::text("x");
    let sender_handle = ws.sender();
    let mut first = Box::pin(sender_handle.send(&message));
    assert!(first.as_mut().poll(&mut Context::from_waker(&sender_waker)).is_pending());
    let mut second = Box::pin(sender_handle.send(&message));
    assert!(second.as_mut().poll(&mut Context::from_waker(&sender_waker)).is_pending());
    let wakers = std::mem::take(&mut wire.lock().unwrap().write_wakers);
    assert!(wakers.len() >= 2, "{} stalled writes", wakers.len());
    // The same waker each time, so a transport keeps its registration instead of
    // replacing it on every poll; and no task's own waker.
    let same = std::mem::take(&mut wire.lock().unwrap().same_write_waker);
    assert!(!same.is_empty() && same.iter().all(|&s| s), "a new write waker per poll: {same:?}");
    assert!(!wakers[0].will_wake(&sender_waker) && !wakers[0].will_wake(&receiver_waker));
    // The transport makes room and wakes it: both the receiving task and the
    // waiting sender hear of it.
    let (receiver_before, sender_before) = (receiver.wakes(), sender.wakes());
    wire.lock().unwrap().stalled = false;
    wakers[0].wake_by_ref();
    assert!(receiver.wakes() > receiver_before, "the receiving task was not woken");
    assert!(sender.wakes() > sender_before, "the waiting sender was not woken");
    // The waker outlives the connection harmlessly.
    drop((first, second));
    drop((sender_handle, ws));
    wakers[1].wake_by_ref();
}

#[test]
fn a_broken_transport_ends_the_connection_without_spinning() {
    let (mut ws, wire) = open(Config::default());
    wire.lock().unwrap().broken = true;
    let sent = poll_once(ws.send(&chinwag_core::Message::text("lost")));
    assert!(matches!(sent, Poll::Ready(Err(chinwag_driver::Error::Io(_)))), "the write error is reported");
    assert!(matches!(poll_once(ws.recv()), Poll::Ready(None)), "the connection is over");
    let closed = ws.close_info().expect("close info");
    assert_eq!(closed.error, Some(chinwag_core::ConnectionError::TransportClosed));
    assert!(wire.lock().unwrap().writes < 5, "no retry loop: {} writes", wire.lock().unwrap().writes);
}

#[test]
fn a_flush_that_waits_is_finished_before_send_returns() {
    let (ws, wire) = open(Config::default());
    wire.lock().unwrap().flush_waits = true;
    let flushed_before = wire.lock().unwrap().flushed;
    let message = chinwag_core::Message::text("x");
    let mut send = Box::pin(ws.send(&message));
    assert!(send.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_pending(), "waits for the flush");
    assert!(matches!(send.as_mut().poll(&mut Context::from_waker(Waker::noop())), Poll::Ready(Ok(()))));
    assert_eq!(wire.lock().unwrap().flushed, flushed_before + 1);
}

#[test]
fn a_ping_flood_from_a_peer_that_does_not_read_is_bounded() {
    let config = Config { backlog_high_water: 64 << 10, ..Config::default() };
    let (mut ws, wire) = open(config);
    let mut ping = vec![0x89, 0x80 | 125, 0, 0, 0, 0];
    ping.extend_from_slice(&[b'p'; 125]);
    {
        let mut wire = wire.lock().unwrap();
        wire.endless = Some(ping);
        wire.stalled = true;
    }
    // Each poll returns (no endless loop), and the backlog stays bounded.
    for _ in 0..50 {
        assert!(poll_once(ws.recv()).is_pending());
    }
    let sender = ws.sender();
    assert!(sender.buffered_amount() <= (64 << 10) + (64 << 10), "backlog {}", sender.buffered_amount());
    let reads = wire.lock().unwrap().reads;
    assert!(poll_once(ws.recv()).is_pending());
    assert_eq!(wire.lock().unwrap().reads, reads, "no more reading while the backlog is full");
}

/// A timer that records how often it was moved and polled, and is due once the
/// real clock passes its deadline (a thread wakes the waker it was polled with
/// then, as a runtime's timer would).
struct RecordingTimer {
    deadline: Option<Instant>,
}

thread_local! {
    // Per thread: each test polls its connection on its own thread, and tests
    // run in parallel.
    static RESETS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    static POLLS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Timer for RecordingTimer {
    fn unarmed() -> Self {
        RecordingTimer { deadline: None }
    }
    fn reset(&mut self, deadline: Instant) {
        RESETS.set(RESETS.get() + 1);
        self.deadline = Some(deadline);
    }
    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
    fn disarm(&mut self) {
        self.deadline = None;
    }
    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        POLLS.set(POLLS.get() + 1);
        match self.deadline {
            Some(at) if Instant::now() >= at => {
                self.deadline = None;
                Poll::Ready(())
            }
            Some(at) => {
                let waker = cx.waker().clone();
                std::thread::spawn(move || {
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    waker.wake();
                });
                Poll::Pending
            }
            None => Poll::Pending,
        }
    }
}

#[test]
fn messages_do_not_move_the_runtime_timer_and_keepalive_still_fires() {
    use std::time::Duration;
    let interval = Duration::from_millis(300);
    let (mut ws, wire) =
        open_with_timer::<RecordingTimer>(Config { keepalive_interval: Some(interval), ..Config::default() });
    assert!(poll_once(ws.recv()).is_pending(), "armed for the keepalive");
    let armed = RESETS.get();
    let polled = POLLS.get();
    // Every message pushes the keepalive deadline later; the runtime's timer is
    // not moved for that (it used to be, once per message).
    for i in 0..200 {
        wire.lock().unwrap().to_server.extend_from_slice(&masked_text(&format!("m{i}")));
        let Poll::Ready(Some(message)) = poll_once(ws.recv()) else { panic!("message {i}") };
        assert!(poll_once(ws.feed(&message)).is_ready());
        assert!(poll_once(ws.recv()).is_pending());
    }
    assert_eq!(RESETS.get(), armed, "no reset per message");
    // Nor is it polled again while it has not woken the task: it cannot have fired.
    assert_eq!(POLLS.get(), polled, "no timer poll per message");
    // Silence: the early timer fires for nothing, is moved to the real deadline,
    // and the ping goes out once the peer has been silent for the interval.
    let silent_since = Instant::now();
    let ping = [0x89, 0x00];
    while !wire.lock().unwrap().from_server.ends_with(&ping) {
        assert!(silent_since.elapsed() < interval * 10, "no keepalive ping");
        assert!(poll_once(ws.recv()).is_pending());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(silent_since.elapsed() >= interval - Duration::from_millis(50), "pinged a live peer early");
}

/// `poll_recv_with_room` reads nothing more while the replies queued are over the
/// backlog's bound and the peer does not take them, and carries on once it does:
/// an echo's client that stops reading is not read either.
#[test]
fn receiving_with_room_waits_while_the_peer_does_not_read_the_replies() {
    let config = Config { backlog_high_water: 100, ..Config::default() };
    let (mut ws, wire) = open(config);
    let (counter, waker) = CountingWaker::new();
    let mut cx = Context::from_waker(&waker);
    wire.lock().unwrap().stalled = true;
    let messages: Vec<String> = (0..8).map(|i| format!("{i:0>40}")).collect();
    let burst: Vec<u8> = messages.iter().flat_map(|m| masked_text(m)).collect();
    wire.lock().unwrap().to_server.extend_from_slice(&burst);
    let mut echoed = 0;
    while let Poll::Ready(Some(message)) = ws.poll_recv_with_room(&mut cx) {
        ws.start_send(&message).unwrap();
        echoed += 1;
    }
    // Three 42-byte replies pass the 100-byte bound: the fourth message waits.
    assert_eq!(echoed, 3, "received past the backlog's bound");
    assert!(ws.poll_recv_with_room(&mut cx).is_pending());
    let wakes = counter.wakes();
    // The peer reads again: the transport wakes the write waker it was polled
    // with, which reaches this task; the rest of the burst is answered.
    let stalled_writes = {
        let mut wire = wire.lock().unwrap();
        wire.stalled = false;
        std::mem::take(&mut wire.write_wakers)
    };
    stalled_writes.iter().for_each(Waker::wake_by_ref);
    assert!(counter.wakes() > wakes, "the receiving task is not woken when the writes can go on");
    while let Poll::Ready(Some(message)) = ws.poll_recv_with_room(&mut cx) {
        ws.start_send(&message).unwrap();
        echoed += 1;
    }
    assert_eq!(echoed, 8);
    let replies: Vec<u8> = messages.iter().flat_map(|m| [&[0x81, 40][..], m.as_bytes()].concat()).collect();
    assert!(wire.lock().unwrap().from_server.ends_with(&replies), "replies lost or out of order");
}

/// The sink-like pair: `poll_ready` waits (writing) while the backlog is over its
/// bound; `start_send` queues without writing, and the next receive writes.
#[test]
fn poll_ready_waits_for_room_and_start_send_queues_without_writing() {
    let config = Config { backlog_high_water: 10, ..Config::default() };
    let (mut ws, wire) = open(config);
    let mut cx = Context::from_waker(Waker::noop());
    let message = chinwag_core::Message::Text("hello, world".into());
    assert!(ws.poll_ready(&mut cx).is_ready());
    ws.start_send(&message).unwrap();
    assert_eq!(wire.lock().unwrap().writes, 1, "start_send wrote (only the 101 response was written)");
    wire.lock().unwrap().stalled = true;
    assert!(ws.poll_ready(&mut cx).is_pending(), "over the bound while the peer does not read");
    wire.lock().unwrap().stalled = false;
    assert!(matches!(ws.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    assert!(wire.lock().unwrap().from_server.ends_with(b"\x81\x0chello, world"));
    ws.start_send(&message).unwrap();
    assert!(ws.poll_recv(&mut cx).is_pending());
    assert!(wire.lock().unwrap().from_server.ends_with(b"\x81\x0chello, world\x81\x0chello, world"));
}

/// While `poll_recv_with_room` waits for a peer that reads nothing, the deadlines
/// still run: the keepalive ping cannot be written, its answer never comes, and
/// the connection ends at the keepalive timeout instead of waiting forever.
#[test]
fn a_peer_that_reads_nothing_is_timed_out_while_receiving_waits_for_room() {
    use std::time::Duration;
    let config = Config {
        backlog_high_water: 10,
        keepalive_interval: Some(Duration::from_millis(50)),
        keepalive_timeout: Duration::from_millis(50),
        close_timeout: Duration::from_millis(50),
        ..Config::default()
    };
    let (mut ws, wire) = open_with_timer::<RecordingTimer>(config);
    let (counter, waker) = CountingWaker::new();
    let mut cx = Context::from_waker(&waker);
    wire.lock().unwrap().stalled = true;
    wire.lock().unwrap().to_server.extend_from_slice(&masked_text("hello, world"));
    let Poll::Ready(Some(message)) = ws.poll_recv_with_room(&mut cx) else { panic!("the message") };
    ws.start_send(&message).unwrap();
    let started = Instant::now();
    // Polled only when woken, as an executor would: the timer must wake the task.
    let mut seen = usize::MAX;
    loop {
        if counter.wakes() != seen {
            seen = counter.wakes();
            match ws.poll_recv_with_room(&mut cx) {
                Poll::Ready(None) => break,
                Poll::Ready(Some(_)) => panic!("received past the backlog's bound"),
                Poll::Pending => {}
            }
        }
        assert!(started.elapsed() < Duration::from_secs(5), "still waiting for a peer that reads nothing");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(ws.close_info().is_some(), "ended without saying how");
}

/// A frame pushed for a later wake is queued at once, leaves the receiving
/// task's waker with the caller, and wakes nothing itself: the caller (a hub
/// fanning out under its lock) wakes every recipient once it let go.
#[test]
fn a_frame_pushed_to_wake_later_hands_over_the_receivers_waker_and_wakes_nothing() {
    let (mut ws, wire) = open(Config::default());
    let (counter, waker) = CountingWaker::new();
    let mut cx = Context::from_waker(&waker);
    assert!(pin!(ws.recv()).poll(&mut cx).is_pending());
    let sender = ws.sender().into_any();
    let frame = chinwag_core::SharedFrame::new(&chinwag_core::Message::text("to everyone"));
    let mut wake = Vec::new();
    sender.push_shared_waking_later(Instant::now(), &frame, &mut wake).unwrap();
    assert_eq!(counter.wakes(), 0, "woken while the caller holds its lock");
    assert_eq!(wake.len(), 1);
    assert!(wake[0].will_wake(&waker), "not the receiving task's waker");
    let written = wire.lock().unwrap().from_server.len();
    for waker in wake.drain(..) {
        waker.wake();
    }
    assert_eq!(counter.wakes(), 1);
    // Woken, the receiving task writes the frame.
    assert!(pin!(ws.recv()).poll(&mut cx).is_pending());
    let wire = wire.lock().unwrap();
    assert_eq!(&wire.from_server[written..], b"\x81\x0bto everyone");
}

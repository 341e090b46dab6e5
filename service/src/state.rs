//! The state every connection task of a server shares: the hub, and how to reach
//! each open connection.

use chinwag_core::CloseCode;
use chinwag_core::chat::{ConnId, Delivery, Hub};
use chinwag_driver::AnySender;
use std::cell::RefCell;
use std::mem::take;
use std::task::Waker;
use std::time::Instant;

use crate::admission::Admission;
use crate::limits::Counters;
use crate::ops::ServerMetrics;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

pub(crate) struct State {
    pub(crate) hub: Hub,
    /// How to reach each open connection, whatever its runtime: a type-erased
    /// `Sender`, the same pointer as the connection's own (no box per connection).
    outlets: HashMap<ConnId, AnySender>,
    counters: Arc<Counters>,
    metrics: ServerMetrics,
    /// How the lock around this state has been taken, counted under it (no
    /// atomics on the hot path).
    pub(crate) lock_stats: LockStats,
}

/// How often the hub's lock was taken, how often a thread found it held and
/// waited, and how long the waits took in all. Every runtime thread takes this
/// one lock to reach the hub, so these say whether it limits how a server
/// scales with cores.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LockStats {
    /// Times the lock was taken.
    pub(crate) acquisitions: u64,
    /// Times a thread found it held by another and waited.
    pub(crate) contended: u64,
    /// The time those threads waited, in nanoseconds, all together.
    pub(crate) wait_nanos: u64,
    /// The time the lock was held, in nanoseconds, all together: its rate is
    /// the share of time the hub was busy, which more cores cannot raise past 1.
    pub(crate) held_nanos: u64,
}

thread_local! {
    /// The tasks of the connections a dispatch queued frames for, woken once the
    /// hub's lock is let go ([`HubGuard`]'s drop, on the same thread). Waking a
    /// task that runs on another runtime thread unparks that thread, a system
    /// call: made under the lock for each recipient, it kept every other thread
    /// waiting (on two threads, the lock was held 96 µs per line to 100
    /// recipients instead of 18 on one). Kept per thread so that its capacity
    /// serves every broadcast without an allocation.
    static WAKE_AFTER_UNLOCK: RefCell<Vec<Waker>> = const { RefCell::new(Vec::new()) };
}

/// Above this many, the wakers' buffer is not kept after a broadcast: a broadcast
/// to a hundred thousand connections must not leave each thread holding its
/// buffer.
const KEEP_WAKERS: usize = 4096;

/// The hub's state, locked: [`Shared::lock`]'s guard, which adds the time it was
/// held to [`LockStats`] when it is dropped, and then, the lock let go, wakes
/// the tasks a dispatch queued frames for.
pub(crate) struct HubGuard<'a> {
    /// Always `Some` until the drop.
    state: Option<MutexGuard<'a, State>>,
    since: Instant,
}

impl std::ops::Deref for HubGuard<'_> {
    type Target = State;

    fn deref(&self) -> &State {
        self.state.as_ref().expect("locked until dropped")
    }
}

impl std::ops::DerefMut for HubGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.state.as_mut().expect("locked until dropped")
    }
}

impl Drop for HubGuard<'_> {
    fn drop(&mut self) {
        if let Some(mut state) = self.state.take() {
            let held = nanos(self.since.elapsed());
            let stats = &mut state.lock_stats;
            stats.held_nanos = stats.held_nanos.saturating_add(held);
        }
        // The lock is let go; now the wakes. The buffer is taken out first: a
        // waker may run anything (a runtime's), even code that locks the hub.
        let Some(mut wakes) = WAKE_AFTER_UNLOCK.with_borrow_mut(|wake| (!wake.is_empty()).then(|| take(wake))) else {
            return;
        };
        for waker in wakes.drain(..) {
            waker.wake();
        }
        if wakes.capacity() <= KEEP_WAKERS {
            WAKE_AFTER_UNLOCK.with_borrow_mut(|wake| {
                if wake.capacity() == 0 {
                    *wake = wakes;
                }
            });
        }
    }
}

fn nanos(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl State {
    pub(crate) fn attach(&mut self, conn: ConnId, outlet: AnySender) {
        self.outlets.insert(conn, outlet);
    }

    pub(crate) fn detach(&mut self, conn: ConnId) {
        self.outlets.remove(&conn);
    }

    /// Carries out what the hub queued: each frame goes to every recipient's queue
    /// by reference, and their tasks write it.
    pub(crate) fn dispatch(&mut self) {
        // One clock reading for the whole dispatch: it is one moment for every
        // recipient, and is read here, not cached from a connection's task.
        let mut now = None;
        let (mut messages, mut bytes) = (0u64, 0u64);
        while let Some(delivery) = self.hub.poll_delivery() {
            match delivery {
                Delivery::Frame { to, frame } => {
                    let now = *now.get_or_insert_with(Instant::now);
                    let mut queued = 0u64;
                    // The recipients' tasks are woken once the hub's lock is let go
                    // (see `WAKE_AFTER_UNLOCK`).
                    WAKE_AFTER_UNLOCK.with_borrow_mut(|wake| {
                        for conn in &to {
                            if let Some(outlet) = self.outlets.get(conn) {
                                // A connection that is closing takes no more frames; that
                                // is not an error. A slow consumer's is, once per
                                // connection.
                                let pushed = outlet.push_shared_waking_later(now, &frame, wake);
                                if !matches!(pushed, Err(chinwag_driver::Error::SlowConsumer)) {
                                    queued += 1;
                                } else {
                                    Counters::bump(&self.counters.closed_slow);
                                    tracing::warn!(%conn, "closed a connection that reads too slowly (outgoing backlog over the limit)");
                                }
                            }
                        }
                    });
                    messages += queued;
                    bytes += queued * frame.as_bytes().len() as u64;
                    if to.len() > 1 {
                        // A broadcast: how long it took to reach every member's queue.
                        self.metrics.broadcast_seconds.observe(now.elapsed().as_secs_f64());
                    }
                }
                Delivery::Close { conn, code, reason } => {
                    if let Some(outlet) = self.outlets.get(&conn) {
                        let _ = outlet.push_close(code, &reason);
                    }
                }
            }
        }
        // One add per dispatch, not per recipient.
        if messages > 0 {
            self.metrics.messages_sent.inc_by(messages);
            self.metrics.sent_bytes.inc_by(bytes);
        }
    }

    /// The bytes queued for all connections, and how many are backlogged.
    pub(crate) fn backlog(&self) -> (usize, usize) {
        self.outlets.values().fold((0, 0), |(bytes, backlogged), outlet| {
            (bytes + outlet.buffered_amount(), backlogged + usize::from(outlet.is_backlogged()))
        })
    }

    /// Starts closing one connection: it stays in the hub (names, groups) until its
    /// close handshake ends and `on_close` runs.
    pub(crate) fn close(&self, conn: ConnId, code: CloseCode, reason: &str) {
        if let Some(outlet) = self.outlets.get(&conn) {
            let _ = outlet.push_close(code, reason);
        }
    }

    /// Closes every open connection.
    pub(crate) fn close_all(&mut self, code: CloseCode, reason: &str) {
        for outlet in self.outlets.values() {
            let _ = outlet.push_close(code, reason);
        }
    }
}

/// What a server's tasks and handles share.
pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) shutting_down: AtomicBool,
    pub(crate) shutdown: event_listener::Event,
    /// Connection tasks still running.
    pub(crate) live: AtomicUsize,
    pub(crate) all_done: event_listener::Event,
    /// Open connections per client address.
    pub(crate) admission: Admission,
    /// Connections over a limit being told so.
    pub(crate) refusing: AtomicUsize,
    /// How often each limit acted.
    pub(crate) counters: Arc<Counters>,
    /// The metrics' handles.
    pub(crate) metrics: ServerMetrics,
    /// Set when the server starts draining: `/ready` turns 503.
    pub(crate) draining: AtomicBool,
    /// Failed accepts, on every thread that accepts.
    pub(crate) accept_failures: crate::accept::AcceptFailures,
}

impl Shared {
    pub(crate) fn new(metrics: ServerMetrics) -> Self {
        let counters = Arc::new(Counters::default());
        Self {
            state: Mutex::new(State {
                hub: Hub::new(),
                outlets: HashMap::new(),
                counters: counters.clone(),
                metrics: metrics.clone(),
                lock_stats: LockStats::default(),
            }),
            shutting_down: AtomicBool::new(false),
            shutdown: event_listener::Event::new(),
            live: AtomicUsize::new(0),
            all_done: event_listener::Event::new(),
            admission: Admission::default(),
            refusing: AtomicUsize::new(0),
            counters,
            metrics,
            draining: AtomicBool::new(false),
            accept_failures: crate::accept::AcceptFailures::default(),
        }
    }

    /// Takes the hub's lock, counting it in [`LockStats`]: the first attempt is
    /// the one a plain `lock` makes, and only a thread that must wait also times
    /// its wait. The clock is read once more as the lock is taken, so that the
    /// guard can add how long it was held (two readings per acquisition, tens of
    /// nanoseconds against the hub's work for a message).
    pub(crate) fn lock(&self) -> HubGuard<'_> {
        let mut state = match self.state.try_lock() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return self.lock_contended(),
        };
        state.lock_stats.acquisitions += 1;
        HubGuard { state: Some(state), since: Instant::now() }
    }

    #[cold]
    #[inline(never)]
    fn lock_contended(&self) -> HubGuard<'_> {
        let started = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let since = Instant::now();
        let stats = &mut state.lock_stats;
        stats.acquisitions += 1;
        stats.contended += 1;
        stats.wait_nanos = stats.wait_nanos.saturating_add(nanos(since - started));
        HubGuard { state: Some(state), since }
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// A connection task starts.
    pub(crate) fn task_started(&self) {
        self.live.fetch_add(1, Ordering::AcqRel);
    }

    /// A connection task ends.
    pub(crate) fn task_ended(&self) {
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_done.notify(usize::MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Records whether the hub's lock was free when it was woken.
    struct Probe {
        shared: Arc<Shared>,
        woken_unlocked: std::sync::Mutex<Vec<bool>>,
    }

    impl std::task::Wake for Probe {
        fn wake(self: Arc<Self>) {
            let free = self.shared.state.try_lock().is_ok();
            self.woken_unlocked.lock().unwrap().push(free);
        }
    }

    /// The wakes a dispatch leaves (see `WAKE_AFTER_UNLOCK`) happen when the
    /// guard is dropped, once the lock is free, and all of them; the next guard
    /// has none left to wake.
    #[test]
    fn tasks_queued_for_a_wake_are_woken_after_the_hubs_lock_is_let_go() {
        let shared = Arc::new(Shared::new(crate::ops::Metrics::new().server().clone()));
        let probe = Arc::new(Probe { shared: shared.clone(), woken_unlocked: Default::default() });
        {
            let _state = shared.lock();
            WAKE_AFTER_UNLOCK.with_borrow_mut(|wake| {
                wake.push(Waker::from(probe.clone()));
                wake.push(Waker::from(probe.clone()));
            });
            assert!(probe.woken_unlocked.lock().unwrap().is_empty(), "woken under the lock");
        }
        assert_eq!(*probe.woken_unlocked.lock().unwrap(), [true, true]);
        drop(shared.lock());
        assert_eq!(probe.woken_unlocked.lock().unwrap().len(), 2, "woken twice");
        assert!(WAKE_AFTER_UNLOCK.with_borrow(|wake| wake.is_empty() && wake.capacity() >= 2), "buffer not kept");
    }

    /// A thread that finds the lock held waits, and that wait is counted; a
    /// lock taken while free is counted as taken and nothing else.
    #[test]
    fn a_wait_for_the_hubs_lock_is_counted_and_timed() {
        let shared = Arc::new(Shared::new(crate::ops::Metrics::new().server().clone()));
        drop(shared.lock());
        let stats = shared.lock().lock_stats;
        assert_eq!((stats.acquisitions, stats.contended, stats.wait_nanos), (2, 0, 0));

        let held = shared.lock();
        let (taken_tx, taken_rx) = std::sync::mpsc::channel();
        let waiter = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let _state = shared.lock();
                taken_tx.send(()).unwrap();
            })
        };
        // The other thread is blocked on the lock as long as it is held here.
        std::thread::sleep(Duration::from_millis(60));
        let held_before = held.lock_stats.held_nanos;
        assert!(taken_rx.try_recv().is_err(), "the lock was taken while held");
        drop(held);
        taken_rx.recv().unwrap();
        waiter.join().unwrap();
        let stats = shared.lock().lock_stats;
        assert_eq!((stats.acquisitions, stats.contended), (5, 1));
        assert!(stats.wait_nanos >= 50_000_000, "waited {} ns", stats.wait_nanos);
        // The 60 ms it was held here were added as it was released.
        assert!(stats.held_nanos - held_before >= 60_000_000, "held {} ns", stats.held_nanos - held_before);
    }
}

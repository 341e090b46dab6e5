//! The state every connection task of a server shares: the hub, and how to reach
//! each open connection.

use chinwag_core::CloseCode;
use chinwag_core::chat::{ConnId, Delivery, Hub};
use chinwag_driver::AnySender;
use std::time::Instant;

use crate::admission::Admission;
use crate::limits::Counters;
use crate::ops::ServerMetrics;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

pub(crate) struct State {
    pub(crate) hub: Hub,
    /// How to reach each open connection, whatever its runtime: a type-erased
    /// `Sender`, the same pointer as the connection's own (no box per connection).
    outlets: HashMap<ConnId, AnySender>,
    counters: Arc<Counters>,
    metrics: ServerMetrics,
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
                    for conn in &to {
                        if let Some(outlet) = self.outlets.get(conn) {
                            // A connection that is closing takes no more frames; that is
                            // not an error. A slow consumer's is, once per connection.
                            let pushed = outlet.push_shared_at(now, &frame);
                            if !matches!(pushed, Err(chinwag_driver::Error::SlowConsumer)) {
                                queued += 1;
                            } else {
                                Counters::bump(&self.counters.closed_slow);
                                tracing::warn!(%conn, "closed a connection that reads too slowly (outgoing backlog over the limit)");
                            }
                        }
                    }
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

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
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

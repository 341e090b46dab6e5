//! A handle on a running service for the rest of the program.

use chinwag_core::chat::{ConnId, Hub, HubError};
use chinwag_core::{CloseCode, Message};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::Stats;
use crate::state::Shared;

/// A cloneable handle on a running service, for other tasks and threads of the
/// program (the connector document's "any other service"): push to stored names and
/// groups, broadcast, shut down. Every method is quick and never waits for a socket.
#[derive(Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

impl Handle {
    /// Sends a message to every connection; returns how many.
    pub fn broadcast(&self, message: &Message) -> usize {
        self.with_hub(|hub| hub.broadcast(message))
    }

    /// Sends a message to one connection.
    pub fn push(&self, conn: ConnId, message: &Message) -> Result<(), HubError> {
        self.with_hub(|hub| hub.push(conn, message))
    }

    /// Sends a message to the connection stored under `name`.
    pub fn push_to_name(&self, name: &str, message: &Message) -> Result<ConnId, HubError> {
        self.with_hub(|hub| hub.push_to_name(name, message))
    }

    /// Sends a message to every member of a group; returns how many.
    pub fn push_to_group(&self, group: &str, message: &Message) -> Result<usize, HubError> {
        self.with_hub(|hub| hub.push_to_group(group, message))
    }

    /// Runs `f` on the hub (under its lock), then carries out what it queued.
    pub fn with_hub<T>(&self, f: impl FnOnce(&mut Hub) -> T) -> T {
        let mut state = self.shared.lock();
        let out = f(&mut state.hub);
        state.dispatch();
        out
    }

    /// How many connections are open.
    pub fn connection_count(&self) -> usize {
        self.shared.lock().hub.len()
    }

    /// How often the server's limits acted so far.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Starts draining: `/ready` answers 503 from now on, so that load balancers
    /// stop sending new clients, while the server keeps serving (new connections
    /// included). Call [`shutdown`](Self::shutdown) when the drain delay is over.
    pub fn drain(&self) {
        self.shared.draining.store(true, Ordering::Release);
        self.shared.metrics.draining.set(1);
    }

    /// Whether [`drain`](Self::drain) was called.
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::Acquire)
    }

    /// Stops accepting connections and closes every open one with 1001 (going
    /// away); `serve` returns once their close handshakes are done (or their close
    /// timeout passed). Messages queued before the close are written first.
    pub fn shutdown(&self) {
        if self.shared.shutting_down.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.shutdown.notify(usize::MAX);
        self.shared.lock().close_all(CloseCode::GOING_AWAY, "server shutting down");
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.is_shutting_down()
    }
}

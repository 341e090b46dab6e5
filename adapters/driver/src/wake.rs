//! One waker for the transport and timer, shared by every task that uses a
//! connection.
//!
//! A split connection has a reader task and writer tasks polling the same transport.
//! Most transports remember one waker per direction, so a reader that flushes a pong
//! would silently replace a blocked writer's registration. Instead, every poll of the
//! transport or the timer passes this one waker, and each task registers its own
//! waker here; readiness wakes them all, and each re-checks its own condition.

use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Wake, Waker};

#[derive(Default)]
pub(crate) struct Wakers {
    waiting: Mutex<Vec<Waker>>,
}

impl Wakers {
    /// Adds the waker of a task about to wait on the connection.
    pub(crate) fn register(&self, waker: &Waker) {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if !waiting.iter().any(|w| w.will_wake(waker)) {
            waiting.push(waker.clone());
        }
    }
}

impl Wake for Wakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Drained in place: the list keeps its capacity, so registering costs no
        // allocation. Waking only schedules tasks, so holding the lock is brief.
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        for waker in waiting.drain(..) {
            waker.wake();
        }
    }
}

//! What the threads of a server share: whether it shuts down, and how each loop
//! is woken to find out.

use chinwag_core::{CloseCode, LocalError};
use mio::Waker;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The longest close reason a close frame carries (RFC 6455 §5.5: a control
/// frame's payload is at most 125 bytes, two of them the code).
const MAX_CLOSE_REASON: usize = 123;

/// The handle that stops a server's loops: clone it into every thread that runs
/// [`serve`](crate::serve) and wherever the shutdown is decided (a signal
/// handler's thread, say). Nothing in it is touched per message: a loop reads one
/// atomic flag per wake-up.
#[derive(Clone, Default)]
pub struct Control(Arc<Shared>);

#[derive(Default)]
struct Shared {
    stopping: AtomicBool,
    /// The close frame every open connection gets; set before `stopping`.
    close: Mutex<Option<(CloseCode, String)>>,
    /// Each running loop's waker, to wake it out of its wait.
    wakers: Mutex<Vec<Arc<Waker>>>,
}

impl Control {
    /// A control for loops that have not started yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Shuts every loop down: each closes its listener (new clients are refused at
    /// once), closes every open connection with `code` and `reason`, and returns
    /// once they are finished. A loop that starts later stops at once. A second
    /// call changes nothing.
    ///
    /// # Errors
    /// What [`Connection::close`](chinwag_core::Connection::close) refuses, checked
    /// here before anything stops: a code that may not be sent
    /// ([`LocalError::InvalidCloseCode`]) or a reason over 123 bytes
    /// ([`LocalError::CloseReasonTooLong`]).
    pub fn shutdown(&self, code: CloseCode, reason: &str) -> Result<(), LocalError> {
        if !code.is_sendable() {
            return Err(LocalError::InvalidCloseCode(code.0));
        }
        if reason.len() > MAX_CLOSE_REASON {
            return Err(LocalError::CloseReasonTooLong);
        }
        {
            let mut close = lock(&self.0.close);
            if close.is_some() {
                return Ok(());
            }
            *close = Some((code, reason.to_owned()));
        }
        self.0.stopping.store(true, Ordering::Release);
        for waker in lock(&self.0.wakers).iter() {
            // A loop whose waker fails has ended (its poll is gone).
            let _ = waker.wake();
        }
        Ok(())
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_stopping(&self) -> bool {
        self.0.stopping.load(Ordering::Acquire)
    }

    /// The close frame [`shutdown`](Self::shutdown) asked for.
    pub(crate) fn close_frame(&self) -> (CloseCode, String) {
        lock(&self.0.close).clone().unwrap_or((CloseCode::GOING_AWAY, String::new()))
    }

    /// Lets [`shutdown`](Self::shutdown) wake a loop, until the guard is dropped.
    /// Wakes it at once if the shutdown already began, so that a loop that starts
    /// late does not wait for a wake-up that came before it.
    pub(crate) fn register(&self, waker: Arc<Waker>) -> Registration<'_> {
        lock(&self.0.wakers).push(waker.clone());
        if self.is_stopping() {
            let _ = waker.wake();
        }
        Registration { control: self, waker }
    }
}

/// A loop's registered waker, removed when the loop returns.
pub(crate) struct Registration<'a> {
    control: &'a Control,
    waker: Arc<Waker>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        lock(&self.control.0.wakers).retain(|w| !Arc::ptr_eq(w, &self.waker));
    }
}

/// Nothing holding these locks can leave their data half-changed.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

//! One clock reading per poll of a connection's task: see [`Clocked`].

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

thread_local! {
    /// The reading lent by the [`Clocked`] future being polled on this thread.
    static LENT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The time now: the reading of the [`Clocked`] future being polled, or a fresh
/// one outside any.
pub(crate) fn now() -> Instant {
    LENT.get().unwrap_or_else(Instant::now)
}

pin_project_lite::pin_project! {
    /// Wraps a connection's task so that the driver reads the clock once per poll
    /// of it, instead of at every call into the core: spawn the task as
    /// `spawn(Clocked::new(task))`.
    ///
    /// Reading the clock costs about a hundred instructions, and a task touches
    /// the core several times per wake-up (an echo receives, sends, and waits for
    /// the next message). The reading taken when a poll starts serves every call
    /// the driver makes until the poll ends; outside a `Clocked` poll, and in
    /// other tasks, the driver reads the clock at each call. A lent reading is
    /// therefore stale by at most the length of one poll, so only wrap a task
    /// whose polls are short, as every async task's should be (a deadline armed
    /// from a reading taken earlier in the poll fires that much early).
    #[derive(Debug)]
    pub struct Clocked<F> {
        #[pin]
        inner: F,
    }
}

impl<F: Future> Clocked<F> {
    /// Wraps `inner`.
    pub fn new(inner: F) -> Self {
        Self { inner }
    }
}

/// Restores the reading of an enclosing `Clocked` (or none) when a poll ends,
/// also when it panics.
struct Restore(Option<Instant>);

impl Drop for Restore {
    fn drop(&mut self) {
        LENT.set(self.0);
    }
}

impl<F: Future> Future for Clocked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _restore = Restore(LENT.replace(Some(Instant::now())));
        self.project().inner.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;
    use std::time::Duration;

    #[test]
    fn lends_one_reading_per_poll_and_none_outside() {
        let mut readings = Vec::new();
        let mut polls = 0;
        let mut task = std::pin::pin!(Clocked::new(std::future::poll_fn(|cx| {
            readings.push((now(), now()));
            polls += 1;
            if polls < 2 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(())
        })));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(task.as_mut().poll(&mut cx).is_pending());
        std::thread::sleep(Duration::from_millis(2));
        assert!(task.as_mut().poll(&mut cx).is_ready());
        // Within a poll every call gets the same reading; a new poll takes a new one.
        assert_eq!(readings[0].0, readings[0].1);
        assert_eq!(readings[1].0, readings[1].1);
        assert!(readings[1].0 >= readings[0].0 + Duration::from_millis(2));
        // Outside a poll nothing is lent: the clock is read at each call.
        assert_eq!(LENT.get(), None);
        let before = now();
        std::thread::sleep(Duration::from_millis(1));
        assert!(now() > before);
    }

    #[test]
    fn a_nested_poll_restores_the_outer_reading() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut outer = std::pin::pin!(Clocked::new(std::future::poll_fn(|cx| {
            let outer = now();
            std::thread::sleep(Duration::from_millis(1));
            let mut inner = std::pin::pin!(Clocked::new(std::future::poll_fn(|_| Poll::Ready(now()))));
            let Poll::Ready(inner) = inner.as_mut().poll(cx) else { unreachable!() };
            assert!(inner > outer);
            assert_eq!(now(), outer);
            Poll::Ready(())
        })));
        assert!(outer.as_mut().poll(&mut cx).is_ready());
        assert_eq!(LENT.get(), None);
    }

    #[test]
    fn a_panicking_poll_lends_nothing_afterwards() {
        let caught = std::panic::catch_unwind(|| {
            let mut cx = Context::from_waker(Waker::noop());
            let mut task = std::pin::pin!(Clocked::new(std::future::poll_fn(|_| -> Poll<()> { panic!("boom") })));
            let _ = task.as_mut().poll(&mut cx);
        });
        assert!(caught.is_err());
        assert_eq!(LENT.get(), None);
    }
}

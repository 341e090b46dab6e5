//! A panic in one of the service's hooks costs one connection, not the server.
//!
//! Hooks are the application's code, and a bug there may panic. Unchecked, the
//! panic would unwind through the connection's task while it holds the hub's
//! lock: the hub would keep a connection that no task serves (its name taken,
//! its groups still sending to it), `on_close` would never run, and on a runtime
//! whose executor does not catch task panics the thread that runs every task
//! would go down. So every hook call is made through [`catch`] (or
//! [`poll_caught`] for the async hooks): a panic is stopped inside the lock's
//! scope (the lock is not poisoned), logged with the connection's span, counted
//! (`chinwag_hook_panics_total{hook}` and [`Stats::hook_panics`]), and answered:
//! a request with 500, an open connection with a 1011 close (its later messages
//! reach no hook), a metrics scrape without the service's own metrics, a
//! readiness check with "not ready".
//!
//! [`Stats::hook_panics`]: crate::Stats::hook_panics

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use chinwag_core::chat::ConnId;
use chinwag_core::http::StatusCode;
use chinwag_core::{CloseCode, Rejection};

use crate::limits::Counters;
use crate::state::{Shared, State};

/// Every hook, as named in the logs and the metric's `hook` label (each is
/// exported at 0 from the start).
pub(crate) const HOOKS: [&str; 12] = [
    "admit",
    "on_http",
    "on_upgrade",
    "on_open",
    "on_text",
    "on_binary",
    "on_skipped",
    "on_rate_limited",
    "ready",
    "on_close",
    "scrape",
    "readiness",
];

/// The reason sent with the 1011 close (and the 500's body) after a hook panicked.
pub(crate) const INTERNAL_ERROR: &str = "internal server error";

/// The answer to a request whose hook panicked: 500.
pub(crate) fn rejection() -> Rejection {
    Rejection::new(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_ERROR)
}

/// Closes open connection `conn` whose hook panicked: 1011.
pub(crate) fn close(state: &State, conn: ConnId) {
    state.close(conn, CloseCode::INTERNAL_ERROR, INTERNAL_ERROR);
}

/// Runs hook `hook` (`f`); `None` if it panicked (logged and counted).
pub(crate) fn catch<T>(shared: &Shared, hook: &'static str, f: impl FnOnce() -> T) -> Option<T> {
    // The hook's state may be half updated when it panics; what the server
    // touches afterwards (the hub) is only changed through whole operations, so
    // unwind safety is asserted rather than required of every service.
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| panicked(shared, hook, &*payload)).ok()
}

/// Polls the future of async hook `hook`: `Ready(None)` if it panicked (logged
/// and counted, as by [`catch`]).
pub(crate) fn poll_caught<F: Future>(
    shared: &Shared,
    hook: &'static str,
    future: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<Option<F::Output>> {
    match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
        Ok(Poll::Ready(output)) => Poll::Ready(Some(output)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(payload) => {
            panicked(shared, hook, &*payload);
            Poll::Ready(None)
        }
    }
}

fn panicked(shared: &Shared, hook: &'static str, payload: &(dyn Any + Send)) {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic payload that is not a string)");
    tracing::error!(hook, panic = message, "a hook panicked: its connection is answered with an internal error");
    Counters::bump(&shared.counters.hook_panics);
    shared.metrics.hook_panicked(hook);
}

//! What an accept loop does when `accept` fails.
//!
//! Failures such as EMFILE (out of file descriptors) leave the pending connection
//! queued and the listener ready, so retrying at once would spin a core until a
//! descriptor is freed, and logging each failure would write thousands of lines a
//! second. An accept loop pauses for [`ACCEPT_BACKOFF`] after a failure and reports
//! a run of failures with [`AcceptFailures`]: once when it starts, once when it is
//! over.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

/// How long to wait before accepting again after `accept` failed. The connections
/// already open carry on meanwhile.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How long accepts must go without failing before a run of failures counts as
/// over. At the descriptor limit, each connection that ends frees one descriptor
/// and lets one accept through before the next fails: those successes do not end
/// the trouble, and must not log a line each.
pub const ACCEPT_RECOVERED_AFTER: Duration = Duration::from_secs(1);

/// Tracks a run of failed accepts, logging it once when it starts and once when
/// it ends. Shared by every thread accepting from one listener (they all fail
/// together when the process is out of descriptors), so that a run is one line,
/// not one per thread.
#[derive(Debug, Default)]
pub struct AcceptFailures {
    /// Whether `run` is `Some`: lets a successful accept skip the lock.
    trouble: AtomicBool,
    run: Mutex<Option<Run>>,
}

#[derive(Debug)]
struct Run {
    started: Instant,
    last_failure: Instant,
    failures: u64,
}

impl AcceptFailures {
    fn run(&self) -> MutexGuard<'_, Option<Run>> {
        self.run.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `accept` failed at `now`: warns if this starts a run of failures. Sleep
    /// [`ACCEPT_BACKOFF`] before accepting again.
    pub fn failed(&self, error: &std::io::Error, now: Instant) {
        let mut run = self.run();
        match &mut *run {
            Some(run) => {
                run.failures += 1;
                run.last_failure = run.last_failure.max(now);
            }
            None => {
                tracing::warn!(%error, "accept failed; retrying every {ACCEPT_BACKOFF:?} (logged once until it works)");
                *run = Some(Run { started: now, last_failure: now, failures: 1 });
                self.trouble.store(true, Ordering::Release);
            }
        }
    }

    /// `accept` succeeded at `now`: ends the run of failures (logged) if the last
    /// one was at least [`ACCEPT_RECOVERED_AFTER`] ago.
    pub fn accepted(&self, now: Instant) {
        if !self.trouble.load(Ordering::Acquire) {
            return;
        }
        let mut run = self.run();
        if let Some(run) = run.take_if(|run| now.saturating_duration_since(run.last_failure) >= ACCEPT_RECOVERED_AFTER)
        {
            self.trouble.store(false, Ordering::Release);
            let lasted = run.last_failure - run.started;
            tracing::info!(failures = run.failures, ?lasted, "accepting connections again");
        }
    }

    /// Whether a run of failures is under way.
    pub fn in_trouble(&self) -> bool {
        self.trouble.load(Ordering::Acquire)
    }
}

/// `Some` with the output of `accept` (or any first future), or `None` if `stop`
/// finished first: an accept loop's way to end when the server stops.
pub async fn race<A: Future, B: Future>(accept: A, stop: B) -> Option<A::Output> {
    let (mut accept, mut stop) = (pin!(accept), pin!(stop));
    poll_fn(|cx| {
        if let Poll::Ready(out) = accept.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_ends_only_after_a_quiet_spell() {
        let error = std::io::Error::from_raw_os_error(24); // EMFILE
        let t = Instant::now();
        let failures = AcceptFailures::default();
        failures.failed(&error, t);
        failures.accepted(t + Duration::from_millis(60)); // one descriptor freed
        failures.failed(&error, t + Duration::from_millis(70));
        assert!(failures.in_trouble(), "a success between failures does not end the run");
        failures.accepted(t + Duration::from_millis(70) + ACCEPT_RECOVERED_AFTER);
        assert!(!failures.in_trouble());
    }
}

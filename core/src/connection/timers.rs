//! The deadlines of a connection. Time only moves when the driver says so: every
//! call that can arm, check or fire a deadline takes `now`.

use std::time::{Duration, Instant};

/// What the keepalive timer asks for at the current time.
pub(super) enum Keepalive {
    /// Nothing to do.
    Idle,
    /// The peer has been silent for the interval: ping it.
    SendPing,
    /// The peer stayed silent through the timeout after a ping.
    Dead,
}

#[derive(Debug)]
pub(super) struct Timers {
    now: Instant,
    handshake: Option<Instant>,
    /// The keepalive interval, once open (if keepalive is on).
    keepalive: Option<Duration>,
    last_activity: Instant,
    /// When the outstanding keepalive ping expires.
    pong_deadline: Option<Instant>,
    /// The close handshake deadline, or (once closed) the linger for queued output
    /// and a client's wait for the server's EOF.
    close: Option<Instant>,
    /// No deadline falls before this instant (`None`: none is armed). A lower bound,
    /// kept so that the common call, with nothing due, costs one comparison:
    /// receiving data moves the keepalive deadline later without touching it.
    due: Option<Instant>,
}

/// `at + after`, or `None` (never) if that is past what `Instant` can hold: a
/// configuration of a hundred years must not panic.
fn deadline(at: Instant, after: Duration) -> Option<Instant> {
    at.checked_add(after)
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Timers {
    pub(super) fn new(now: Instant, handshake_timeout: Option<Duration>) -> Self {
        let handshake = handshake_timeout.and_then(|t| deadline(now, t));
        Self { now, handshake, keepalive: None, last_activity: now, pong_deadline: None, close: None, due: handshake }
    }

    /// Moves the clock to `now` (never backwards) and says whether a deadline may
    /// be due.
    #[inline(always)]
    pub(super) fn advance(&mut self, now: Instant) -> bool {
        if now > self.now {
            self.now = now;
        }
        // Also at an unchanged time: a deadline armed for `now` itself (a zero
        // timeout) is due.
        self.due.is_some_and(|due| self.now >= due)
    }

    /// Recomputes the lower bound after deadlines were handled.
    pub(super) fn refresh_due(&mut self) {
        self.due = self.next_deadline();
    }

    fn arm(&mut self, at: Option<Instant>) {
        self.due = earliest(self.due, at);
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let keepalive = match (self.pong_deadline, self.keepalive) {
            (Some(deadline), _) => Some(deadline),
            (None, Some(interval)) => deadline(self.last_activity, interval),
            (None, None) => None,
        };
        earliest(earliest(self.handshake, keepalive), self.close)
    }

    pub(super) fn opened(&mut self, keepalive: Option<Duration>) {
        self.handshake = None;
        self.keepalive = keepalive;
        self.last_activity = self.now;
        self.refresh_due();
    }

    /// Bytes arrived: the peer is alive.
    pub(super) fn activity(&mut self) {
        self.last_activity = self.now;
        self.pong_deadline = None;
    }

    pub(super) fn keepalive_due(&self) -> Keepalive {
        match (self.pong_deadline, self.keepalive) {
            (Some(deadline), _) if self.now >= deadline => Keepalive::Dead,
            (None, Some(interval)) if deadline(self.last_activity, interval).is_some_and(|d| self.now >= d) => {
                Keepalive::SendPing
            }
            _ => Keepalive::Idle,
        }
    }

    pub(super) fn ping_sent(&mut self, timeout: Duration) {
        self.pong_deadline = deadline(self.now, timeout);
        if self.pong_deadline.is_none() {
            // A timeout too long to represent never expires; keep pinging no more.
            self.keepalive = None;
        }
        self.arm(self.pong_deadline);
    }

    pub(super) fn handshake_expired(&self) -> bool {
        self.handshake.is_some_and(|d| self.now >= d)
    }

    pub(super) fn clear_handshake(&mut self) {
        self.handshake = None;
    }

    /// Our close frame is queued: wait for the answer up to `timeout`; keepalive
    /// stops (nothing may be sent after a close frame).
    pub(super) fn arm_close(&mut self, timeout: Duration) {
        self.close = deadline(self.now, timeout);
        self.keepalive = None;
        self.pong_deadline = None;
        self.arm(self.close);
    }

    pub(super) fn close_expired(&self) -> bool {
        self.close.is_some_and(|d| self.now >= d)
    }

    pub(super) fn clear_close(&mut self) {
        self.close = None;
    }

    /// The connection is over: only the linger (queued output, a client's wait for
    /// the server's EOF) may remain.
    pub(super) fn closed(&mut self, linger: Option<Duration>) {
        self.handshake = None;
        self.keepalive = None;
        self.pong_deadline = None;
        self.close = linger.and_then(|t| deadline(self.now, t));
        self.arm(self.close);
    }
}

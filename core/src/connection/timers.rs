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

/// Which deadline [`Timers::deadline`] is. A connection has at most one at a
/// time: the handshake's before it opens; while open, the pong's once a keepalive
/// ping is out; once closing, the close handshake's (or, once closed, the linger
/// for queued output and a client's wait for the server's EOF). Closing clears
/// keepalive, and opening the handshake's, so one field holds them all: every idle
/// connection carries these timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Handshake,
    Pong,
    Close,
}

#[derive(Debug)]
pub(super) struct Timers {
    now: Instant,
    /// Keepalive runs: the connection is open (and the configured interval, which
    /// every call that needs it passes in, is on). A flag rather than a copy of
    /// the interval: every idle connection carries these timers.
    keepalive: bool,
    last_activity: Instant,
    /// The deadline of the phase (see [`Kind`]).
    deadline: Option<Instant>,
    kind: Kind,
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
        Self { now, keepalive: false, last_activity: now, deadline: handshake, kind: Kind::Handshake, due: handshake }
    }

    /// The phase's deadline, if it is of `kind`.
    fn get(&self, kind: Kind) -> Option<Instant> {
        if self.kind == kind { self.deadline } else { None }
    }

    /// Clears the phase's deadline, if it is of `kind`.
    fn clear(&mut self, kind: Kind) {
        if self.kind == kind {
            self.deadline = None;
        }
    }

    /// Makes `at` the phase's deadline, replacing any other.
    fn set(&mut self, kind: Kind, at: Option<Instant>) {
        self.kind = kind;
        self.deadline = at;
        self.arm(at);
    }

    /// The latest time given.
    pub(super) fn now(&self) -> Instant {
        self.now
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
    pub(super) fn refresh_due(&mut self, interval: Option<Duration>) {
        self.due = self.next_deadline(interval);
    }

    /// The keepalive interval, if keepalive runs.
    fn keepalive(&self, interval: Option<Duration>) -> Option<Duration> {
        interval.filter(|_| self.keepalive)
    }

    fn arm(&mut self, at: Option<Instant>) {
        self.due = earliest(self.due, at);
    }

    pub(super) fn next_deadline(&self, interval: Option<Duration>) -> Option<Instant> {
        // A pong's deadline stands in for the keepalive interval's.
        let keepalive = match (self.get(Kind::Pong), self.keepalive(interval)) {
            (None, Some(interval)) => deadline(self.last_activity, interval),
            _ => None,
        };
        earliest(self.deadline, keepalive)
    }

    pub(super) fn opened(&mut self, interval: Option<Duration>) {
        self.clear(Kind::Handshake);
        self.keepalive = true;
        self.last_activity = self.now;
        self.refresh_due(interval);
    }

    /// Bytes arrived: the peer is alive.
    pub(super) fn activity(&mut self) {
        self.last_activity = self.now;
        self.clear(Kind::Pong);
    }

    pub(super) fn keepalive_due(&self, interval: Option<Duration>) -> Keepalive {
        match (self.get(Kind::Pong), self.keepalive(interval)) {
            (Some(deadline), _) if self.now >= deadline => Keepalive::Dead,
            (None, Some(interval)) if deadline(self.last_activity, interval).is_some_and(|d| self.now >= d) => {
                Keepalive::SendPing
            }
            _ => Keepalive::Idle,
        }
    }

    pub(super) fn ping_sent(&mut self, timeout: Duration) {
        let pong = deadline(self.now, timeout);
        if pong.is_none() {
            // A timeout too long to represent never expires; keep pinging no more.
            self.keepalive = false;
        }
        self.set(Kind::Pong, pong);
    }

    pub(super) fn handshake_expired(&self) -> bool {
        self.get(Kind::Handshake).is_some_and(|d| self.now >= d)
    }

    pub(super) fn clear_handshake(&mut self) {
        self.clear(Kind::Handshake);
    }

    /// Our close frame is queued: wait for the answer up to `timeout`; keepalive
    /// stops (nothing may be sent after a close frame).
    pub(super) fn arm_close(&mut self, timeout: Duration) {
        self.keepalive = false;
        self.set(Kind::Close, deadline(self.now, timeout));
    }

    pub(super) fn close_expired(&self) -> bool {
        self.get(Kind::Close).is_some_and(|d| self.now >= d)
    }

    pub(super) fn clear_close(&mut self) {
        self.clear(Kind::Close);
    }

    /// The connection is over: only the linger (queued output, a client's wait for
    /// the server's EOF) may remain.
    pub(super) fn closed(&mut self, linger: Option<Duration>) {
        self.keepalive = false;
        self.set(Kind::Close, linger.and_then(|t| deadline(self.now, t)));
    }
}

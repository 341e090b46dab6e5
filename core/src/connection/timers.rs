//! The deadlines of a connection. Time only moves when the driver says so.

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
    /// The close handshake deadline, or (client) the wait for the server's EOF.
    close: Option<Instant>,
}

impl Timers {
    pub(super) fn new(now: Instant, handshake_timeout: Option<Duration>) -> Self {
        Self {
            now,
            handshake: handshake_timeout.map(|t| now + t),
            keepalive: None,
            last_activity: now,
            pong_deadline: None,
            close: None,
        }
    }

    pub(super) fn now(&self) -> Instant {
        self.now
    }

    pub(super) fn set_now(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let keepalive = match (self.pong_deadline, self.keepalive) {
            (Some(deadline), _) => Some(deadline),
            (None, Some(interval)) => Some(self.last_activity + interval),
            (None, None) => None,
        };
        [self.handshake, keepalive, self.close].into_iter().flatten().min()
    }

    pub(super) fn opened(&mut self, now: Instant, keepalive: Option<Duration>) {
        self.handshake = None;
        self.keepalive = keepalive;
        self.last_activity = now;
    }

    /// Bytes arrived: the peer is alive.
    pub(super) fn activity(&mut self) {
        self.last_activity = self.now;
        self.pong_deadline = None;
    }

    pub(super) fn keepalive_due(&self) -> Keepalive {
        match (self.pong_deadline, self.keepalive) {
            (Some(deadline), _) if self.now >= deadline => Keepalive::Dead,
            (None, Some(interval)) if self.now >= self.last_activity + interval => Keepalive::SendPing,
            _ => Keepalive::Idle,
        }
    }

    pub(super) fn ping_sent(&mut self, timeout: Duration) {
        self.pong_deadline = Some(self.now + timeout);
    }

    pub(super) fn handshake_expired(&self) -> bool {
        self.handshake.is_some_and(|d| self.now >= d)
    }

    pub(super) fn clear_handshake(&mut self) {
        self.handshake = None;
    }

    pub(super) fn arm_close(&mut self, timeout: Duration) {
        self.close = Some(self.now + timeout);
        self.keepalive = None;
        self.pong_deadline = None;
    }

    pub(super) fn close_expired(&self) -> bool {
        self.close.is_some_and(|d| self.now >= d)
    }

    pub(super) fn clear_close(&mut self) {
        self.close = None;
    }

    /// The connection is over: only the wait for the server's EOF may remain.
    pub(super) fn closed(&mut self, linger: Option<Duration>) {
        self.handshake = None;
        self.keepalive = None;
        self.pong_deadline = None;
        self.close = linger.map(|t| self.now + t);
    }
}

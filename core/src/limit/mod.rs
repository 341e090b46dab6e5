//! Limits a server applies to each peer, as pure state machines fed with time.
//!
//! - [`MessageRate`]: a token bucket on incoming messages that warns a peer sending
//!   too fast, drops what is over the rate, and closes a peer that keeps flooding.
//!
//! The other limits live where they act: sizes and the handshake timeout in
//! [`Config`](crate::Config), the outgoing backlog bound in
//! [`Config::max_backlog`](crate::Config::max_backlog), the Origin check in
//! [`handshake::OriginPolicy`](crate::handshake::OriginPolicy).

use std::time::Instant;

use crate::CloseCode;

/// The reason sent with the 1008 that closes a peer that kept flooding.
pub const FLOOD_REASON: &str = "too many messages";

/// The allowed rate of incoming messages: `per_second` on average, with bursts of up
/// to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Messages per second allowed on average.
    pub per_second: f64,
    /// Messages allowed at once after a quiet spell (the bucket's size); also how
    /// many over-rate messages a peer may send after its warning before it is
    /// closed.
    pub burst: u32,
}

impl RateLimit {
    /// `per_second` on average, bursts of `burst`.
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst }
    }
}

/// What to do with one incoming message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the rate: handle it.
    Allow,
    /// Over the rate: do not handle it. `warn` is true for the first message of a
    /// flood: tell the peer its messages are being dropped (once, not per message).
    Drop {
        /// Whether to warn the peer now.
        warn: bool,
    },
    /// The peer kept flooding after its warning: close the connection with
    /// [`MessageRate::CLOSE_CODE`] and [`FLOOD_REASON`]. Drop this message and any
    /// that follow.
    Close,
}

/// A token bucket for one connection's incoming messages.
///
/// Every message takes a token; tokens come back at `per_second` up to `burst`. A
/// message that finds no token is dropped; the first of a flood gets a warning;
/// after `burst` dropped messages in one flood the verdict is [`Verdict::Close`]. A
/// message that finds a token again ends the flood, so a peer that slows down
/// after its warning carries on normally.
#[derive(Debug, Clone)]
pub struct MessageRate {
    limit: RateLimit,
    tokens: f64,
    updated: Instant,
    dropped_in_flood: u32,
    closed: bool,
}

impl MessageRate {
    /// The close code for a peer that kept flooding: 1008, policy violation.
    pub const CLOSE_CODE: CloseCode = CloseCode::POLICY_VIOLATION;

    /// A full bucket at `now`.
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        Self { limit, tokens: f64::from(limit.burst), updated: now, dropped_in_flood: 0, closed: false }
    }

    /// The verdict on a message that arrived at `now`. Time that goes backwards
    /// counts as no time.
    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.closed {
            return Verdict::Close;
        }
        let elapsed = now.saturating_duration_since(self.updated);
        self.updated = self.updated.max(now);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.limit.per_second).min(f64::from(self.limit.burst));
        // The epsilon absorbs rounding: a peer sending exactly at the rate must not
        // find 0.999… tokens.
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            self.dropped_in_flood = 0;
            return Verdict::Allow;
        }
        self.dropped_in_flood += 1;
        if self.dropped_in_flood > self.limit.burst.max(1) {
            self.closed = true;
            return Verdict::Close;
        }
        Verdict::Drop { warn: self.dropped_in_flood == 1 }
    }
}

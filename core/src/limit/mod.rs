//! Limits a server applies to each peer, as pure state machines fed with time.
//!
//! - [`MessageRate`]: a token bucket on incoming messages that warns a peer sending
//!   too fast, drops what is over the rate, and closes a peer that keeps flooding.
//!
//! The other limits live where they act: sizes and the handshake timeout in
//! [`Config`](crate::Config), the outgoing backlog bound in
//! [`Config::max_backlog`](crate::Config::max_backlog), the Origin check in
//! [`handshake::OriginPolicy`](crate::handshake::OriginPolicy).

use std::time::{Duration, Instant};

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

    /// How long until the next message would be allowed (zero if now).
    pub fn wait_time(&self) -> Duration {
        if self.tokens >= 1.0 || self.limit.per_second <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - self.tokens) / self.limit.per_second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut rate = MessageRate::new(RateLimit::new(10.0, 3), t0);
        for _ in 0..3 {
            assert_eq!(rate.check(t0), Verdict::Allow);
        }
        assert_eq!(rate.check(t0), Verdict::Drop { warn: true });
        assert_eq!(rate.check(t0), Verdict::Drop { warn: false });
        // 100 ms later one token is back, and the flood is over.
        assert_eq!(rate.check(t0 + ms(100)), Verdict::Allow);
        assert_eq!(rate.check(t0 + ms(100)), Verdict::Drop { warn: true });
    }

    #[test]
    fn a_peer_that_keeps_flooding_after_the_warning_is_closed() {
        let t0 = Instant::now();
        let mut rate = MessageRate::new(RateLimit::new(1.0, 2), t0);
        assert_eq!(rate.check(t0), Verdict::Allow);
        assert_eq!(rate.check(t0), Verdict::Allow);
        assert_eq!(rate.check(t0), Verdict::Drop { warn: true });
        assert_eq!(rate.check(t0), Verdict::Drop { warn: false });
        assert_eq!(rate.check(t0), Verdict::Close);
        // Once closed, always closed, even after a pause.
        assert_eq!(rate.check(t0 + Duration::from_secs(60)), Verdict::Close);
    }

    #[test]
    fn wait_time_says_when_a_token_is_back() {
        let t0 = Instant::now();
        let mut rate = MessageRate::new(RateLimit::new(4.0, 1), t0);
        assert_eq!(rate.wait_time(), Duration::ZERO);
        assert_eq!(rate.check(t0), Verdict::Allow);
        assert_eq!(rate.wait_time(), ms(250));
    }

    proptest! {
        /// Over any window, the messages allowed never exceed burst + rate × window,
        /// and a peer that sends at no more than the rate is never dropped.
        #[test]
        fn allowed_messages_respect_the_bucket(
            per_second in 1u32..50,
            burst in 1u32..20,
            gaps_ms in proptest::collection::vec(0u64..200, 1..200),
        ) {
            let t0 = Instant::now();
            let mut rate = MessageRate::new(RateLimit::new(f64::from(per_second), burst), t0);
            let mut now = t0;
            let mut allowed = 0u64;
            let mut closed = false;
            for gap in &gaps_ms {
                now += ms(*gap);
                match rate.check(now) {
                    Verdict::Allow => { prop_assert!(!closed); allowed += 1 }
                    Verdict::Close => closed = true,
                    Verdict::Drop { .. } => prop_assert!(!closed),
                }
                let window = now.duration_since(t0).as_secs_f64();
                prop_assert!(allowed as f64 <= f64::from(burst) + window * f64::from(per_second) + 1e-6);
            }
        }

        #[test]
        fn a_peer_within_the_rate_is_never_dropped(per_second in 1u32..50, burst in 1u32..20, n in 1usize..200) {
            let t0 = Instant::now();
            let mut rate = MessageRate::new(RateLimit::new(f64::from(per_second), burst), t0);
            // Rounded up to the nanosecond: a gap rounded down would be a little
            // faster than the rate.
            let gap = Duration::from_nanos(1_000_000_000u64.div_ceil(u64::from(per_second)));
            for i in 0..n {
                prop_assert_eq!(rate.check(t0 + gap * i as u32), Verdict::Allow);
            }
        }
    }
}

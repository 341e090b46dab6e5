//! The incoming message rate limiter: bursts, the rate, the warning, the close.

use chinwag_core::limit::{MessageRate, RateLimit, Verdict};
use proptest::prelude::*;
use std::time::{Duration, Instant};

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

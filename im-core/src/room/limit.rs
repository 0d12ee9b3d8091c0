//! Send limits: a token bucket per room and per user (seed 003: "rate limit
//! and answer with a friendly hint"). Pure: time is passed in.

use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket. A `rate` of 0 means unlimited.
    pub fn new(rate: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: None,
        }
    }

    /// True if this bucket never refuses.
    pub fn is_unlimited(&self) -> bool {
        self.rate == 0.0
    }

    /// Takes one token at `now`, or says how long until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        if self.is_unlimited() {
            return Ok(());
        }
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }

    /// True if the bucket is full at `now` (it may be forgotten).
    pub fn is_full(&self, now: Instant) -> bool {
        match self.last {
            None => true,
            Some(last) => {
                self.is_unlimited()
                    || self.tokens + now.saturating_duration_since(last).as_secs_f64() * self.rate
                        >= self.burst
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5);
        assert!((0..5).all(|_| b.try_take(t0).is_ok()));
        let wait = b.try_take(t0).expect_err("empty");
        assert!(wait <= Duration::from_millis(100));
        assert!(b.try_take(t0 + Duration::from_millis(100)).is_ok());
        assert!(TokenBucket::new(0, 0).try_take(t0).is_ok());
    }

    proptest! {
        #[test]
        fn never_admits_more_than_burst_plus_rate_times_time(
            rate in 1u32..1000, burst in 1u32..100,
            gaps in proptest::collection::vec(0u64..50_000, 1..300),
        ) {
            let t0 = Instant::now();
            let mut b = TokenBucket::new(rate, burst);
            let mut now = t0;
            let mut admitted = 0u64;
            for g in gaps {
                now += Duration::from_micros(g);
                if b.try_take(now).is_ok() { admitted += 1; }
            }
            let bound = f64::from(burst) + now.duration_since(t0).as_secs_f64() * f64::from(rate);
            prop_assert!(admitted as f64 <= bound + 1e-6);
        }
    }
}

//! Rate limits for log lines a peer can trigger at will (accept failures at
//! the descriptor limit, slow consumers, refused input): a flood of them
//! must not fill the disk or take a core.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Lets one kind of log line through at most `burst` times per `period`.
/// The first line after a quiet spell reports how many were held back.
///
/// ```
/// use im_core::log_limit::LogLimit;
///
/// static ACCEPT_FAILED: LogLimit = LogLimit::per_second(5);
/// if let Some(suppressed) = ACCEPT_FAILED.allow() {
///     eprintln!("accept failed ({suppressed} similar lines suppressed)");
/// }
/// ```
#[derive(Debug)]
pub struct LogLimit {
    burst: u32,
    period: Duration,
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Option<Instant>,
    passed: u32,
    suppressed: u64,
}

impl LogLimit {
    /// At most `burst` lines per second.
    pub const fn per_second(burst: u32) -> Self {
        Self::new(burst, Duration::from_secs(1))
    }

    /// At most `burst` lines per `period`.
    pub const fn new(burst: u32, period: Duration) -> Self {
        Self {
            burst,
            period,
            state: parking_lot::const_mutex(Window {
                started: None,
                passed: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` if this line may be logged, `n` being how many were held
    /// back since the last one logged; `None` if it must be dropped.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    /// [`LogLimit::allow`] at a given time.
    pub fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut w = self.state.lock();
        let expired = w
            .started
            .is_none_or(|start| now.saturating_duration_since(start) >= self.period);
        if expired {
            w.started = Some(now);
            w.passed = 0;
        }
        if w.passed >= self.burst {
            w.suppressed += 1;
            return None;
        }
        w.passed += 1;
        Some(std::mem::take(&mut w.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_burst_and_the_next_window_says_how_many_were_dropped() {
        let limit = LogLimit::new(3, Duration::from_secs(1));
        let t0 = Instant::now();
        let first: Vec<Option<u64>> = (0..1000).map(|_| limit.allow_at(t0)).collect();
        assert_eq!(first.iter().filter(|a| a.is_some()).count(), 3);
        assert_eq!(limit.allow_at(t0 + Duration::from_millis(999)), None);
        assert_eq!(limit.allow_at(t0 + Duration::from_secs(1)), Some(998));
        assert_eq!(limit.allow_at(t0 + Duration::from_secs(1)), Some(0));
    }
}

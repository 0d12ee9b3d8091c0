//! The tiered batch window (seeds 002 and 003).
//!
//! A quiet room sends each message at once. As the message rate grows the
//! window widens in tiers, so more messages share one encoded frame (one
//! write per member instead of many). A batch is flushed when it reaches
//! `max_count` messages or when its window (never longer than `max_delay`)
//! has passed since its first message arrived. Order is kept.
//!
//! Time is passed in; the caller arms a timer for [`Batcher::deadline`] and
//! calls [`Batcher::poll`] when it fires.

use std::time::{Duration, Instant};

/// From `min_rate` messages per second on, batches wait up to `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchTier {
    /// Messages per second (over about the last second) where this tier starts.
    pub min_rate: u32,
    /// How long the first message of a batch may wait for more.
    pub window: Duration,
}

/// Batch window settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most messages in one batch (at least 1).
    pub max_count: usize,
    /// Longest any message waits, whatever the tiers say.
    pub max_delay: Duration,
    /// Tiers by rate, in increasing `min_rate`. Below the first tier (or
    /// with no tiers) messages go out at once.
    pub tiers: Vec<BatchTier>,
}

impl Default for BatchConfig {
    /// 10 messages or 1 s at most (vivo, seed 003); at once below 20 msg/s,
    /// then 50 ms, 200 ms, 500 ms and 1 s windows as the rate climbs.
    fn default() -> Self {
        Self {
            max_count: 10,
            max_delay: Duration::from_secs(1),
            tiers: vec![
                BatchTier {
                    min_rate: 20,
                    window: Duration::from_millis(50),
                },
                BatchTier {
                    min_rate: 200,
                    window: Duration::from_millis(200),
                },
                BatchTier {
                    min_rate: 1000,
                    window: Duration::from_millis(500),
                },
                BatchTier {
                    min_rate: 5000,
                    window: Duration::from_secs(1),
                },
            ],
        }
    }
}

impl BatchConfig {
    /// The window for a rate: the highest tier reached, capped at `max_delay`.
    pub fn window_for(&self, rate: u32) -> Duration {
        self.tiers
            .iter()
            .take_while(|t| t.min_rate <= rate)
            .last()
            .map_or(Duration::ZERO, |t| t.window)
            .min(self.max_delay)
    }
}

/// Messages per second, over a sliding second (two one-second buckets,
/// the older one weighted by how much of it still overlaps the window).
#[derive(Debug, Clone, Copy)]
struct RateMeter {
    start: Option<Instant>,
    current: u32,
    previous: u32,
}

impl RateMeter {
    const BUCKET: Duration = Duration::from_secs(1);

    fn roll(&mut self, now: Instant) {
        let Some(start) = self.start else {
            self.start = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(start);
        if elapsed < Self::BUCKET {
            return;
        }
        if elapsed < Self::BUCKET * 2 {
            self.previous = self.current;
            self.start = Some(start + Self::BUCKET);
        } else {
            self.previous = 0;
            self.start = Some(now);
        }
        self.current = 0;
    }

    fn record(&mut self, now: Instant) {
        self.roll(now);
        self.current = self.current.saturating_add(1);
    }

    fn rate(&self, now: Instant) -> u32 {
        let Some(start) = self.start else {
            return 0;
        };
        let into = now.saturating_duration_since(start).min(Self::BUCKET);
        let left = 1.0 - into.as_secs_f64() / Self::BUCKET.as_secs_f64();
        self.current
            .saturating_add((f64::from(self.previous) * left) as u32)
    }
}

/// One stream's batch window. Pure: no IO, time passed in.
#[derive(Debug, Clone)]
pub struct Batcher<T> {
    config: BatchConfig,
    pending: Vec<T>,
    deadline: Option<Instant>,
    meter: RateMeter,
}

impl<T> Batcher<T> {
    /// An empty batcher.
    pub fn new(config: BatchConfig) -> Self {
        let config = BatchConfig {
            max_count: config.max_count.max(1),
            ..config
        };
        Self {
            pending: Vec::with_capacity(config.max_count),
            config,
            deadline: None,
            meter: RateMeter {
                start: None,
                current: 0,
                previous: 0,
            },
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// Adds a message arriving at `now`; returns a batch if one is due now
    /// (this message included).
    pub fn push(&mut self, now: Instant, item: T) -> Option<Vec<T>> {
        self.meter.record(now);
        let window = self.config.window_for(self.meter.rate(now));
        self.pending.push(item);
        let deadline = *self.deadline.get_or_insert(now + window);
        if self.pending.len() >= self.config.max_count || now >= deadline {
            return self.flush();
        }
        None
    }

    /// Returns the waiting batch if its deadline has passed.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<T>> {
        match self.deadline {
            Some(d) if now >= d => self.flush(),
            _ => None,
        }
    }

    /// When the waiting batch is due, if one is waiting.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Returns whatever is waiting, due or not.
    pub fn flush(&mut self) -> Option<Vec<T>> {
        self.deadline = None;
        if self.pending.is_empty() {
            return None;
        }
        let cap = self.config.max_count;
        Some(std::mem::replace(
            &mut self.pending,
            Vec::with_capacity(cap),
        ))
    }

    /// Messages waiting.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The measured rate at `now`, in messages per second.
    pub fn rate(&self, now: Instant) -> u32 {
        self.meter.rate(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_quiet_room_flushes_each_message_at_once() {
        let t0 = Instant::now();
        let mut b = Batcher::new(BatchConfig::default());
        for i in 0..5u64 {
            let now = t0 + Duration::from_secs(i);
            assert_eq!(b.push(now, i), Some(vec![i]));
            assert_eq!(b.deadline(), None);
        }
    }

    #[test]
    fn a_busy_room_merges_up_to_the_max_count() {
        let t0 = Instant::now();
        let mut b = Batcher::new(BatchConfig::default());
        let mut batches = Vec::new();
        // 2000 msg/s for one second: one every 500 µs.
        for i in 0..2000u32 {
            let now = t0 + Duration::from_micros(500 * u64::from(i));
            if let Some(d) = b.deadline()
                && d <= now
            {
                batches.extend(b.poll(d));
            }
            batches.extend(b.push(now, i));
        }
        batches.extend(b.flush());
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert!(sizes.iter().all(|n| *n <= 10));
        // Once the rate is up, batches are full.
        assert!(
            sizes[sizes.len() / 2..sizes.len() - 1]
                .iter()
                .all(|n| *n == 10),
            "{sizes:?}"
        );
        let flat: Vec<u32> = batches.into_iter().flatten().collect();
        assert_eq!(flat, (0..2000).collect::<Vec<_>>());
    }

    #[test]
    fn the_window_follows_the_tiers() {
        let c = BatchConfig::default();
        assert_eq!(c.window_for(0), Duration::ZERO);
        assert_eq!(c.window_for(19), Duration::ZERO);
        assert_eq!(c.window_for(20), Duration::from_millis(50));
        assert_eq!(c.window_for(999), Duration::from_millis(200));
        assert_eq!(c.window_for(1_000_000), Duration::from_secs(1));
    }

    fn config() -> impl Strategy<Value = BatchConfig> {
        (
            1usize..20,
            1u64..2000,
            proptest::collection::vec((1u32..5000, 0u64..3000), 0..5),
        )
            .prop_map(|(max_count, max_delay_ms, mut tiers)| {
                tiers.sort();
                BatchConfig {
                    max_count,
                    max_delay: Duration::from_millis(max_delay_ms),
                    tiers: tiers
                        .into_iter()
                        .map(|(r, w)| BatchTier {
                            min_rate: r,
                            window: Duration::from_millis(w),
                        })
                        .collect(),
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Driven as the engine drives it (a timer fires at each deadline):
        /// no batch passes the max count, no message waits past the max
        /// delay, and messages come out once each, in order.
        #[test]
        fn bounded_count_bounded_delay_order_kept(
            c in config(),
            gaps in proptest::collection::vec(0u64..300_000, 0..400),
        ) {
            let t0 = Instant::now();
            let max_count = c.max_count;
            let max_delay = c.max_delay;
            let mut b = Batcher::new(c);
            let mut out: Vec<(Instant, Vec<(u32, Instant)>)> = Vec::new();
            let mut now = t0;
            for (i, gap) in gaps.iter().enumerate() {
                now += Duration::from_micros(*gap);
                while let Some(d) = b.deadline() {
                    if d > now { break; }
                    match b.poll(d) {
                        Some(batch) => out.push((d, batch)),
                        None => break,
                    }
                }
                if let Some(batch) = b.push(now, (i as u32, now)) {
                    out.push((now, batch));
                }
            }
            if let Some(d) = b.deadline()
                && let Some(batch) = b.poll(d) {
                    out.push((d, batch));
                }
            prop_assert_eq!(b.pending(), 0);
            let mut next = 0u32;
            for (at, batch) in &out {
                prop_assert!(!batch.is_empty());
                prop_assert!(batch.len() <= max_count);
                for (i, arrived) in batch {
                    prop_assert_eq!(*i, next);
                    next += 1;
                    prop_assert!(at.duration_since(*arrived) <= max_delay);
                }
            }
            prop_assert_eq!(next as usize, gaps.len());
        }
    }
}

//! Send limits of rooms: one token bucket per user over all rooms, checked
//! first, and one per room that all its senders share.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use crate::error::EngineError;
use crate::ids::UserId;
use crate::room::TokenBucket;

use super::Room;

/// Per-user limiters kept before full (idle) ones are forgotten.
const USER_LIMITERS_MAX: usize = 100_000;

/// The users' room send limits.
pub(super) struct UserLimits {
    /// (rate, burst) of each user; a rate of 0 is unlimited.
    rate: (u32, u32),
    /// Each user's bucket, created on the user's first room send.
    users: Mutex<HashMap<UserId, TokenBucket>>,
    /// Size of `users` after its last sweep of idle buckets.
    users_swept_at: AtomicUsize,
}

impl UserLimits {
    /// Limits of `rate` (rate, burst) per user.
    pub(super) fn new(rate: (u32, u32)) -> Self {
        Self {
            rate,
            users: Mutex::new(HashMap::new()),
            users_swept_at: AtomicUsize::new(0),
        }
    }

    /// Takes a token from the user's limit.
    pub(super) fn check(&self, user: &UserId, now: Instant) -> Result<(), EngineError> {
        let (rate, burst) = self.rate;
        if rate == 0 {
            return Ok(());
        }
        let mut users = self.users.lock();
        if users.len() >= USER_LIMITERS_MAX
            && users.len() >= 2 * self.users_swept_at.load(Ordering::Relaxed)
        {
            // Sweep idle (full) buckets only when the map has doubled since
            // the last sweep, so the cost stays amortized O(1) per send.
            users.retain(|_, b| !b.is_full(now));
            self.users_swept_at
                .store(users.len().max(1), Ordering::Relaxed);
        }
        let bucket = users
            .entry(user.clone())
            .or_insert_with(|| TokenBucket::new(rate, burst));
        if let Err(wait) = bucket.try_take(now) {
            metrics::counter!("im_rate_limited_total", "limit" => "user").increment(1);
            return Err(EngineError::RateLimited(format!(
                "you are sending to rooms too fast; retry in {} ms",
                wait.as_millis().max(1)
            )));
        }
        Ok(())
    }
}

impl<M> Room<M> {
    /// Takes a token from the room's own limit.
    pub(super) fn check_send(&self, now: Instant) -> Result<(), EngineError> {
        if let Err(wait) = self.limiter.lock().try_take(now) {
            metrics::counter!("im_rate_limited_total", "limit" => "room").increment(1);
            return Err(EngineError::RateLimited(format!(
                "room {} is over its send rate; retry in {} ms",
                self.id,
                wait.as_millis().max(1)
            )));
        }
        Ok(())
    }
}

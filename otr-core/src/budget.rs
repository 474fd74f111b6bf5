//! Token buckets that bound the work unauthenticated input can make a session do per unit of
//! time (key exchanges started by queries and forged D-H Commits: each costs a modular
//! exponentiation, and some a signature).

use crate::event::Timestamp;

/// A token bucket: `capacity` tokens, one more every `every_ms` milliseconds.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    tokens: u32,
    capacity: u32,
    every_ms: u64,
    /// When the last token was earned (or the bucket was last seen full).
    since: Timestamp,
}

impl Budget {
    /// A full bucket.
    pub(crate) const fn new(capacity: u32, every_ms: u64) -> Self {
        Self { tokens: capacity, capacity, every_ms, since: Timestamp(0) }
    }

    /// Takes one token if there is one; `false` means the work must not be done.
    pub(crate) fn take(&mut self, now: Timestamp) -> bool {
        self.refill(now);
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    fn refill(&mut self, now: Timestamp) {
        if self.tokens >= self.capacity || now < self.since {
            // Full (nothing accrues beyond the capacity), or the caller's clock went back.
            self.since = now;
            return;
        }
        let earned = (now.0 - self.since.0) / self.every_ms;
        if earned > 0 {
            let earned32 = u32::try_from(earned).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(earned32).min(self.capacity);
            self.since = self.since.plus_millis(earned.saturating_mul(self.every_ms));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spends_the_burst_then_earns_at_the_rate() {
        let mut b = Budget::new(3, 100);
        let t = Timestamp(1_000);
        assert!((0..3).all(|_| b.take(t)));
        assert!(!b.take(t));
        assert!(!b.take(Timestamp(1_099)));
        assert!(b.take(Timestamp(1_100)));
        assert!(!b.take(Timestamp(1_150)));
        // A long pause refills to the capacity, not beyond.
        let later = Timestamp(100_000);
        assert!((0..3).all(|_| b.take(later)));
        assert!(!b.take(later));
        // A clock that goes back earns nothing and does not panic.
        assert!(!b.take(Timestamp(5)));
    }
}

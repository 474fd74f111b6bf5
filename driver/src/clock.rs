//! Real (or accelerated) time as the engine's [`Timestamp`]s, for adapters that own timers.
//!
//! The driver never reads a clock; adapters do, through this one type, so that every runtime
//! maps time the same way and a conversation carries its clock across reconnects.

use std::time::{Duration, Instant};

use otr_core::Timestamp;

/// Monotonic milliseconds since the clock was made, as the engine's [`Timestamp`]s, and the
/// real instants at which it reaches a given timestamp (for the adapter's timers).
///
/// [`Clock::new`] runs at real speed. [`Clock::accelerated`] runs `speed` times faster, so a
/// test or a demo sees a 60-second heartbeat after 60 ms of real time while every timer is
/// still a real one.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    speed: u32,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock at real speed, starting at 0 now.
    pub fn new() -> Self {
        Self { origin: Instant::now(), speed: 1 }
    }

    /// A clock that runs `speed` times faster than real time (at least 1); for tests and
    /// demos of time-driven behaviour (heartbeats, fragment expiry).
    pub fn accelerated(speed: u32) -> Self {
        Self { origin: Instant::now(), speed: speed.max(1) }
    }

    /// The current time in (possibly accelerated) milliseconds.
    pub fn now(&self) -> Timestamp {
        let real = self.origin.elapsed().as_millis().saturating_mul(u128::from(self.speed));
        Timestamp(u64::try_from(real).unwrap_or(u64::MAX))
    }

    /// The real instant at which this clock reads `t` (rounded up, so a timer set for it
    /// never fires before the clock reaches `t`).
    pub fn instant_of(&self, t: Timestamp) -> Instant {
        let speed = u64::from(self.speed);
        let real_ms = t.0.div_ceil(speed);
        self.origin.checked_add(Duration::from_millis(real_ms)).unwrap_or_else(far_future)
    }
}

/// An instant no timer reaches in practice (about 30 years ahead).
fn far_future() -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_secs(30 * 365 * 24 * 3600)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accelerated_clock_maps_back_to_real_time() {
        let c = Clock::accelerated(1000);
        // 60 s of clock time is 60 ms of real time.
        let at = c.instant_of(Timestamp(60_000));
        let real = at.duration_since(c.origin);
        assert_eq!(real, Duration::from_millis(60));
        // Rounded up: 1 clock ms is 1 real ms, never 0.
        assert_eq!(c.instant_of(Timestamp(1)).duration_since(c.origin), Duration::from_millis(1));
        assert!(c.now() < Timestamp(60_000));
    }
}

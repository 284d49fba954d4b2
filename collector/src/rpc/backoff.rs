//! Reconnect delays: exponential backoff with "equal jitter" (half the delay fixed, half
//! random), capped, so a fleet of agents reconnecting after a collector restart spreads
//! out instead of arriving in lockstep, yet no agent retries in a tight loop.
use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    time::Duration,
};

/// Delay cap for reconnects.
pub const MAX_DELAY: Duration = Duration::from_secs(30);

/// Backoff state.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
    random: RandomState,
    counter: u64,
}

impl Backoff {
    /// Starts at `initial`, doubling per attempt up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            attempt: 0,
            random: RandomState::new(),
            counter: 0,
        }
    }

    /// Back to the initial delay (after a session made progress).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay, drawing the jitter from the process's random hasher keys.
    pub fn next_delay(&mut self) -> Duration {
        self.counter = self.counter.wrapping_add(1);
        let mut h = self.random.build_hasher();
        h.write_u64(self.counter);
        // 53 random bits make a uniform f64 in [0, 1).
        let unit = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
        self.next_with(unit)
    }

    /// The next delay for a given uniform draw `unit` in `[0, 1)`.
    pub fn next_with(&mut self, unit: f64) -> Duration {
        let exp = self.initial.saturating_mul(1u32 << self.attempt.min(20));
        let ceiling = exp.min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_initial_and_stays_within_half_to_full_of_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), MAX_DELAY);
        // With the largest draw the delay is the full exponential step: 100, 200, 400 ms.
        assert_eq!(b.next_with(1.0), Duration::from_millis(100));
        assert_eq!(b.next_with(1.0), Duration::from_millis(200));
        // With the smallest draw it is half of it.
        assert_eq!(b.next_with(0.0), Duration::from_millis(200));
        for _ in 0..40 {
            let d = b.next_delay();
            assert!(d <= MAX_DELAY, "{d:?}");
        }
        // Far past the cap: within [15 s, 30 s].
        assert_eq!(b.next_with(0.0), Duration::from_secs(15));
        assert_eq!(b.next_with(1.0), Duration::from_secs(30));
        b.reset();
        assert_eq!(b.next_with(1.0), Duration::from_millis(100));
    }
}

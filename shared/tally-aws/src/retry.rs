//! Bounded exponential backoff with full jitter.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base_ms: u64,
    pub cap_ms: u64,
    pub attempts_max: u32,
}

impl Backoff {
    pub const DEFAULT: Backoff = Backoff {
        base_ms: 50,
        cap_ms: 5_000,
        attempts_max: 8,
    };

    /// Delay before retry number `attempt` (1-based): uniform in
    /// `[0, min(cap, base · 2^attempt))` ("full jitter").
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base_ms
            .saturating_mul(1u64 << attempt.min(20))
            .min(self.cap_ms);
        Duration::from_millis(rand::random::<u64>() % ceiling.max(1))
    }

    pub async fn sleep(&self, attempt: u32) {
        tokio::time::sleep(self.delay(attempt)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_the_growing_ceiling_and_the_cap() {
        let b = Backoff {
            base_ms: 10,
            cap_ms: 100,
            attempts_max: 5,
        };
        for attempt in 1..10 {
            let ceiling = (10u64 << attempt).min(100);
            for _ in 0..200 {
                assert!(b.delay(attempt) < Duration::from_millis(ceiling));
            }
        }
    }
}

//! Fly's Machines API rate limits: per action, per machine, a token bucket
//! refilled at `per_second` holding at most `burst` requests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl RateLimit {
    /// Fly's documented limit for every action but Get Machine: 1 req/s, bursts of 3.
    pub const FLY_ACTION: RateLimit = RateLimit {
        per_second: 1.0,
        burst: 3,
    };
    /// Fly's documented limit for Get Machine: 5 req/s, bursts of 10.
    pub const FLY_GET: RateLimit = RateLimit {
        per_second: 5.0,
        burst: 10,
    };

    /// No limit.
    pub const fn unlimited() -> RateLimit {
        RateLimit {
            per_second: f64::INFINITY,
            burst: u32::MAX,
        }
    }

    fn is_unlimited(&self) -> bool {
        self.per_second.is_infinite()
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<(String, String), Bucket>>,
}

impl Limiter {
    /// Takes a token from the bucket of `key`; when there is none, how long until there is.
    pub fn take(&self, key: (String, String), limit: RateLimit) -> Result<(), Duration> {
        if limit.is_unlimited() {
            return Ok(());
        }
        let burst = f64::from(limit.burst.max(1));
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = buckets.entry(key).or_insert(Bucket { tokens: burst, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * limit.per_second).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        if limit.per_second <= 0.0 {
            return Err(Duration::from_secs(3600));
        }
        Err(Duration::from_secs_f64((1.0 - b.tokens) / limit.per_second))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let l = Limiter::default();
        let key = || ("POST /stop".to_string(), "m1".to_string());
        let limit = RateLimit {
            per_second: 20.0,
            burst: 3,
        };
        for _ in 0..3 {
            assert!(l.take(key(), limit).is_ok());
        }
        let wait = l.take(key(), limit).unwrap_err();
        assert!(wait <= Duration::from_millis(50), "{wait:?}");
        // Another machine has its own bucket.
        assert!(l.take(("POST /stop".into(), "m2".into()), limit).is_ok());
        std::thread::sleep(Duration::from_millis(60));
        assert!(l.take(key(), limit).is_ok());
        assert!(l.take(key(), RateLimit::unlimited()).is_ok());
    }
}

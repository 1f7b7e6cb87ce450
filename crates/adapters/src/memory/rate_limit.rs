//! Token buckets in this process: the limiter without Redis, and Redis's fallback while it
//! is unreachable (each replica then enforces the limit on its own).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tenantd_domain::RepoError;
use tenantd_domain::ports::{Admission, RateLimit, RateLimiter};

/// Most buckets kept; beyond it, full (idle) ones are forgotten first.
const MAX_BUCKETS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// In-process token buckets.
#[derive(Debug, Default)]
pub struct LocalRateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl LocalRateLimiter {
    /// Takes a token from `key`'s bucket as of `now`.
    pub fn admit_at(&self, key: &str, limit: RateLimit, now: Instant) -> Admission {
        let rate = f64::from(limit.per_second.max(1));
        let burst = f64::from(limit.burst.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            buckets.retain(|_, b| now.duration_since(b.at).as_secs_f64() * rate < burst);
            if buckets.len() >= MAX_BUCKETS {
                buckets.clear();
            }
        }
        // Looked up before inserted: a known key costs no allocation.
        if !buckets.contains_key(key) {
            buckets.insert(
                key.to_owned(),
                Bucket {
                    tokens: burst,
                    at: now,
                },
            );
        }
        let Some(bucket) = buckets.get_mut(key) else {
            return Admission::Allowed;
        };
        let refilled = bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate;
        bucket.tokens = refilled.min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Admission::Allowed
        } else {
            Admission::Denied {
                retry_after: Duration::from_secs_f64((1.0 - bucket.tokens) / rate),
            }
        }
    }
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn admit(&self, key: &str, limit: RateLimit) -> Result<Admission, RepoError> {
        Ok(self.admit_at(key, limit, Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        per_second: 4,
        burst: 2,
    };

    #[test]
    fn a_burst_passes_then_requests_wait_for_the_refill() {
        let limiter = LocalRateLimiter::default();
        let t0 = Instant::now();
        assert_eq!(limiter.admit_at("a", LIMIT, t0), Admission::Allowed);
        assert_eq!(limiter.admit_at("a", LIMIT, t0), Admission::Allowed);
        let Admission::Denied { retry_after } = limiter.admit_at("a", LIMIT, t0) else {
            panic!("the third request of a burst of 2 must be denied");
        };
        assert_eq!(retry_after, Duration::from_millis(250));
        // Another key has its own bucket.
        assert_eq!(limiter.admit_at("b", LIMIT, t0), Admission::Allowed);
        // A quarter second refills one token, and no more than the burst ever.
        let later = t0 + Duration::from_millis(250);
        assert_eq!(limiter.admit_at("a", LIMIT, later), Admission::Allowed);
        assert!(matches!(
            limiter.admit_at("a", LIMIT, later),
            Admission::Denied { .. }
        ));
        let much_later = t0 + Duration::from_mins(1);
        assert_eq!(limiter.admit_at("a", LIMIT, much_later), Admission::Allowed);
        assert_eq!(limiter.admit_at("a", LIMIT, much_later), Admission::Allowed);
        assert!(matches!(
            limiter.admit_at("a", LIMIT, much_later),
            Admission::Denied { .. }
        ));
    }
}

//! The shared rate limiter: one token bucket per principal in Redis, taken from by an
//! atomic Lua script that reads Redis's own clock (replicas' clocks never matter). While
//! Redis cannot answer, each replica limits on its own with the fallback limiter it was
//! given (in-process buckets).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis::Script;
use tenantd_domain::RepoError;
use tenantd_domain::ports::{Admission, RateLimit, RateLimiter};

use super::{Redis, RedisError};

/// `KEYS[1]`: the bucket (a hash of tokens and the time they were counted, in µs);
/// `ARGV[1]`: tokens per second; `ARGV[2]`: burst. Returns {admitted, wait in µs}.
const TAKE: &str = r"
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1])
local at = tonumber(bucket[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now_us
end
tokens = math.min(burst, tokens + math.max(0, now_us - at) * rate / 1000000)
local admitted = 0
local wait_us = 0
if tokens >= 1 then
  tokens = tokens - 1
  admitted = 1
else
  wait_us = math.ceil((1 - tokens) * 1000000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'at', string.format('%d', now_us))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {admitted, wait_us}";

/// Token buckets in Redis, with a fallback for when Redis cannot answer.
pub struct RedisRateLimiter {
    redis: Arc<Redis>,
    take: Script,
    fallback: Arc<dyn RateLimiter>,
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimiter").finish_non_exhaustive()
    }
}

impl RedisRateLimiter {
    /// Buckets in `redis`; `fallback` decides while Redis cannot.
    pub fn new(redis: Arc<Redis>, fallback: Arc<dyn RateLimiter>) -> Self {
        Self {
            redis,
            take: Script::new(TAKE),
            fallback,
        }
    }

    async fn shared(&self, key: &str, limit: RateLimit) -> Result<Admission, RedisError> {
        let bucket = self.redis.key(&format!("rate:{key}"));
        let rate = limit.per_second.max(1).to_string();
        let burst = limit.burst.max(1).to_string();
        let (admitted, wait_us): (i64, i64) = self
            .redis
            .eval(&self.take, &[&bucket], &[rate.as_bytes(), burst.as_bytes()])
            .await?;
        Ok(if admitted == 1 {
            Admission::Allowed
        } else {
            Admission::Denied {
                retry_after: Duration::from_micros(u64::try_from(wait_us).unwrap_or(0).max(1)),
            }
        })
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn admit(&self, key: &str, limit: RateLimit) -> Result<Admission, RepoError> {
        match self.shared(key, limit).await {
            Ok(admission) => Ok(admission),
            Err(_) => self.fallback.admit(key, limit).await,
        }
    }
}

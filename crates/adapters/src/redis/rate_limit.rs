//! The shared rate limiter: one token bucket per principal in Redis, taken from by an
//! atomic Lua script that reads Redis's own clock (replicas' clocks never matter). While
//! Redis cannot answer, each replica limits on its own with the fallback limiter it was
//! given (in-process buckets).
//!
//! A replica does not ask Redis for every token. For a rate high enough that a hundredth
//! of a second's worth is more than one token, it takes a *lease*: that many tokens at
//! once, spends them locally and takes the next lease in the background when half is
//! spent, so most calls make no round trip. A refusal is remembered until the bucket's next
//! token is due, so refused callers make none either. Leased tokens come out of the shared
//! bucket, so every replica together never admits more than the limit; what a replica
//! holds and does not use within [`LEASE_TTL`] is given up (the others may be refused up to
//! one lease early meanwhile). Rates below 200 per second take one token per call, exactly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deadpool_redis::redis::Script;
use tenantd_domain::RepoError;
use tenantd_domain::ports::{Admission, RateLimit, RateLimiter};

use super::{Redis, RedisError};

/// `KEYS[1]`: the bucket (a hash of tokens and the time they were counted, in µs);
/// `ARGV[1]`: tokens per second; `ARGV[2]`: burst; `ARGV[3]`: tokens wanted. Takes as many
/// whole tokens as there are, up to the number wanted. Returns {taken, wait in µs until a
/// token is due when none was taken}.
const TAKE: &str = r"
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3] or '1')
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1])
local at = tonumber(bucket[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now_us
end
tokens = math.min(burst, tokens + math.max(0, now_us - at) * rate / 1000000)
local taken = math.min(wanted, math.floor(tokens))
local wait_us = 0
if taken >= 1 then
  tokens = tokens - taken
else
  taken = 0
  wait_us = math.ceil((1 - tokens) * 1000000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'at', string.format('%d', now_us))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {taken, wait_us}";

/// A lease is this many milliseconds' worth of the rate...
const LEASE_WINDOW_MS: u64 = 10;
/// ...but at most this many tokens...
const MAX_LEASE: u32 = 256;
/// ...and at most this share of the burst (1/4).
const LEASE_SHARE_OF_BURST: u32 = 4;
/// Leased tokens not spent within this long are given up.
pub const LEASE_TTL: Duration = Duration::from_millis(500);
/// Most principals with a lease or a remembered refusal; beyond it, stale ones go first.
const MAX_LEASES: usize = 100_000;

/// How many tokens a replica takes at once for `limit` (1: every call asks Redis).
fn lease_size(limit: RateLimit) -> u32 {
    let window = u64::from(limit.per_second) * LEASE_WINDOW_MS / 1000;
    let window = u32::try_from(window).unwrap_or(u32::MAX);
    window
        .min(MAX_LEASE)
        .min(limit.burst / LEASE_SHARE_OF_BURST)
        .max(1)
}

/// One principal's tokens on this replica.
#[derive(Debug, Clone, Copy)]
struct Lease {
    /// Tokens left to spend.
    tokens: u32,
    /// When the tokens were taken (they are given up [`LEASE_TTL`] later).
    taken_at: Instant,
    /// A lease is being taken (in the background or by a caller).
    refilling: bool,
    /// Refused until then without asking Redis.
    denied_until: Option<Instant>,
}

impl Lease {
    fn new(now: Instant) -> Self {
        Self {
            tokens: 0,
            taken_at: now,
            refilling: false,
            denied_until: None,
        }
    }

    /// Nothing left to decide locally with: spent, expired, and no refusal pending.
    fn stale(&self, now: Instant) -> bool {
        let spent = self.tokens == 0 || now.duration_since(self.taken_at) >= LEASE_TTL;
        spent && !self.refilling && self.denied_until.is_none_or(|until| until <= now)
    }
}

/// What this replica decided without Redis, or what it must ask.
enum Local {
    Decided(Admission),
    /// Take a lease of this many tokens (1: a single token, another caller is taking the lease).
    Take(u32),
}

/// Token buckets in Redis, with a fallback for when Redis cannot answer.
pub struct RedisRateLimiter {
    shared: Arc<Shared>,
    fallback: Arc<dyn RateLimiter>,
}

/// What the background refills need too.
struct Shared {
    redis: Arc<Redis>,
    take: Script,
    leases: Mutex<HashMap<String, Lease>>,
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimiter").finish_non_exhaustive()
    }
}

/// Redis's answer to a take.
enum Taken {
    Tokens(u32),
    Wait(Duration),
}

impl Shared {
    fn leases(&self) -> MutexGuard<'_, HashMap<String, Lease>> {
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn take(&self, key: &str, limit: RateLimit, wanted: u32) -> Result<Taken, RedisError> {
        let bucket = self.redis.key(&format!("rate:{key}"));
        let rate = limit.per_second.max(1).to_string();
        let burst = limit.burst.max(1).to_string();
        let wanted = wanted.to_string();
        let (taken, wait_us): (i64, i64) = self
            .redis
            .eval(
                &self.take,
                &[&bucket],
                &[rate.as_bytes(), burst.as_bytes(), wanted.as_bytes()],
            )
            .await?;
        Ok(match u32::try_from(taken) {
            Ok(taken) if taken >= 1 => Taken::Tokens(taken),
            _ => Taken::Wait(Duration::from_micros(
                u64::try_from(wait_us).unwrap_or(0).max(1),
            )),
        })
    }

    /// Spends a local token, or says what to ask Redis for.
    fn local(self: &Arc<Self>, key: &str, limit: RateLimit, lease: u32, now: Instant) -> Local {
        let mut leases = self.leases();
        if leases.len() >= MAX_LEASES && !leases.contains_key(key) {
            leases.retain(|_, l| !l.stale(now));
            if leases.len() >= MAX_LEASES {
                leases.clear();
            }
        }
        // Looked up before inserted: a known key costs no allocation.
        if !leases.contains_key(key) {
            leases.insert(key.to_owned(), Lease::new(now));
        }
        let Some(entry) = leases.get_mut(key) else {
            return Local::Take(1);
        };
        if let Some(until) = entry.denied_until {
            if until > now {
                return Local::Decided(Admission::Denied {
                    retry_after: until - now,
                });
            }
            entry.denied_until = None;
        }
        if now.duration_since(entry.taken_at) >= LEASE_TTL {
            entry.tokens = 0;
        }
        if entry.tokens == 0 {
            if entry.refilling {
                return Local::Take(1);
            }
            entry.refilling = true;
            return Local::Take(lease);
        }
        entry.tokens -= 1;
        if entry.tokens <= lease / 2 && !entry.refilling {
            entry.refilling = true;
            let shared = Arc::clone(self);
            let key = key.to_owned();
            tokio::spawn(async move { shared.refill(&key, limit, lease).await });
        }
        Local::Decided(Admission::Allowed)
    }

    /// Takes the next lease ahead of need.
    async fn refill(&self, key: &str, limit: RateLimit, lease: u32) {
        let taken = self.take(key, limit, lease).await;
        let now = Instant::now();
        let mut leases = self.leases();
        let entry = leases
            .entry(key.to_owned())
            .or_insert_with(|| Lease::new(now));
        entry.refilling = false;
        if let Ok(Taken::Tokens(tokens)) = taken {
            entry.denied_until = None;
            entry.tokens = if now.duration_since(entry.taken_at) >= LEASE_TTL {
                tokens
            } else {
                entry.tokens.saturating_add(tokens)
            };
            entry.taken_at = now;
        }
    }

    /// Keeps what a caller's own take brought beyond its one token, or remembers the
    /// refusal; `None` when Redis did not answer.
    fn settle(&self, key: &str, wanted: u32, taken: Option<&Taken>) {
        let now = Instant::now();
        let mut leases = self.leases();
        let entry = leases
            .entry(key.to_owned())
            .or_insert_with(|| Lease::new(now));
        if wanted > 1 {
            entry.refilling = false;
        }
        match taken {
            Some(Taken::Tokens(tokens)) if *tokens > 1 => {
                entry.tokens = entry.tokens.saturating_add(tokens - 1);
                entry.taken_at = now;
            }
            Some(Taken::Wait(wait)) => entry.denied_until = Some(now + *wait),
            Some(Taken::Tokens(_)) | None => {}
        }
    }
}

impl RedisRateLimiter {
    /// Buckets in `redis`; `fallback` decides while Redis cannot.
    pub fn new(redis: Arc<Redis>, fallback: Arc<dyn RateLimiter>) -> Self {
        Self {
            shared: Arc::new(Shared {
                redis,
                take: Script::new(TAKE),
                leases: Mutex::default(),
            }),
            fallback,
        }
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn admit(&self, key: &str, limit: RateLimit) -> Result<Admission, RepoError> {
        let lease = lease_size(limit);
        let wanted = if lease == 1 {
            1
        } else {
            match self.shared.local(key, limit, lease, Instant::now()) {
                Local::Decided(admission) => return Ok(admission),
                Local::Take(wanted) => wanted,
            }
        };
        let taken = self.shared.take(key, limit, wanted).await;
        if lease > 1 {
            self.shared.settle(key, wanted, taken.as_ref().ok());
        }
        match taken {
            Ok(Taken::Tokens(_)) => Ok(Admission::Allowed),
            Ok(Taken::Wait(retry_after)) => Ok(Admission::Denied { retry_after }),
            Err(_) => self.fallback.admit(key, limit).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: u32, burst: u32) -> RateLimit {
        RateLimit { per_second, burst }
    }

    #[test]
    fn leases_are_a_hundredth_of_a_second_bounded_by_the_burst_and_a_maximum() {
        assert_eq!(lease_size(limit(1, 1)), 1);
        assert_eq!(
            lease_size(limit(199, 199)),
            1,
            "below 200/s: a token per call"
        );
        assert_eq!(lease_size(limit(1_000, 1_000)), 10);
        assert_eq!(lease_size(limit(1_000, 20)), 5, "a quarter of the burst");
        assert_eq!(lease_size(limit(1_000, 2)), 1);
        assert_eq!(lease_size(limit(100_000_000, 100_000_000)), MAX_LEASE);
        assert_eq!(lease_size(limit(u32::MAX, u32::MAX)), MAX_LEASE);
    }

    use crate::redis::RedisSettings;
    use crate::redis::testing::{test_redis_url, unique_prefix};

    async fn limiter() -> RedisRateLimiter {
        let redis = Redis::new(
            &test_redis_url().await,
            RedisSettings {
                key_prefix: unique_prefix(),
                ..RedisSettings::default()
            },
        )
        .unwrap();
        RedisRateLimiter::new(redis, Arc::new(crate::memory::LocalRateLimiter::default()))
    }

    /// The bucket's `at` field: it changes with every take from Redis.
    async fn taken_at(limiter: &RedisRateLimiter, key: &str) -> Option<String> {
        let bucket = limiter.shared.redis.key(&format!("rate:{key}"));
        limiter
            .shared
            .redis
            .query(deadpool_redis::redis::cmd("HGET").arg(bucket).arg("at"))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_lease_is_spent_without_asking_redis_and_renewed_before_it_runs_out() {
        let limiter = limiter().await;
        let limit = limit(1_000, 1_000);
        assert_eq!(lease_size(limit), 10);
        assert_eq!(
            limiter.admit("admin", limit).await.unwrap(),
            Admission::Allowed
        );
        let first = taken_at(&limiter, "admin").await;
        assert!(first.is_some(), "the first call took a lease from Redis");
        // Tokens 9 -> 6: all local.
        for _ in 0..3 {
            assert_eq!(
                limiter.admit("admin", limit).await.unwrap(),
                Admission::Allowed
            );
        }
        assert_eq!(
            taken_at(&limiter, "admin").await,
            first,
            "no call reached Redis"
        );
        // Half spent (5 left): the next lease is taken in the background.
        assert_eq!(
            limiter.admit("admin", limit).await.unwrap(),
            Admission::Allowed
        );
        let deadline = Instant::now() + Duration::from_secs(2);
        while taken_at(&limiter, "admin").await == first {
            assert!(Instant::now() < deadline, "the next lease was never taken");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let tokens = limiter.shared.leases().get("admin").unwrap().tokens;
        assert_eq!(tokens, 15, "5 left plus a lease of 10");
    }

    #[tokio::test]
    async fn a_refusal_is_remembered_until_the_next_token_is_due() {
        let limiter = limiter().await;
        let limit = limit(200, 8);
        let lease = lease_size(limit);
        assert_eq!(lease, 2);
        let mut admitted = 0;
        let (retry_after, until) = loop {
            let retry_after = match limiter.admit("svc", limit).await.unwrap() {
                Admission::Allowed => {
                    admitted += 1;
                    assert!(admitted <= 20, "a burst of 8 at 200/s ran on: {admitted}");
                    continue;
                }
                Admission::Denied { retry_after } => retry_after,
            };
            // A background lease may still be on its way (and bring a token that just came due).
            while limiter.shared.leases()["svc"].refilling {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if let Some(until) = limiter.shared.leases()["svc"].denied_until {
                break (retry_after, until);
            }
        };
        assert!(admitted >= 8 - lease, "{admitted} of a burst of 8");
        assert!(retry_after <= Duration::from_millis(5), "{retry_after:?}");
        let asked = taken_at(&limiter, "svc").await;
        let just_before = until.checked_sub(Duration::from_micros(1)).unwrap();
        let Local::Decided(Admission::Denied { retry_after }) =
            limiter.shared.local("svc", limit, lease, just_before)
        else {
            panic!("refused locally until the token is due");
        };
        assert_eq!(retry_after, Duration::from_micros(1));
        assert_eq!(
            taken_at(&limiter, "svc").await,
            asked,
            "no call reached Redis"
        );
        // Once it is due, the replica asks Redis again.
        assert!(matches!(
            limiter.shared.local("svc", limit, lease, until),
            Local::Take(_)
        ));
    }
}

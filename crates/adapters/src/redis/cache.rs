//! Cache-aside for the reads other services make on every request: a tenant by id and an
//! API key by id. Decorators over the repository ports read through [`RedisCache`] and
//! invalidate after every write to what they cache, so a suspension or a revocation is
//! seen by the very next call, in every replica.
//!
//! **What is stored.** Entries of the cache's own format (`entries.rs`): a tenant with its
//! contact email still an AES-GCM envelope bound to the tenant (opened on the way out), a
//! key with the SHA-256 of its secret, never the secret. An entry's key carries the id it
//! was read by, and a decoded entry whose id differs is ignored, so one tenant's entry can
//! never answer for another.
//!
//! **No stale refill.** Each entry has a generation counter. A reader that misses notes
//! the generation, reads the database, and stores what it read only if the generation is
//! unchanged (one Lua script); a writer, after its commit, deletes the entry and bumps the
//! generation. So a read that raced a write can never put the old value back.
//!
//! **Redis trouble.** Reads that cannot use Redis go to the database. An invalidation that
//! cannot reach Redis is kept and retried in the background (past the circuit breaker)
//! until it gets through or one TTL has passed (the entry has expired by then); until
//! then this replica does not read from the cache at all. Other replicas can serve the old
//! entry while this replica cannot reach Redis and they can: the window is the outage as
//! this replica sees it, at most one TTL.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use deadpool_redis::redis::{self, Script};
use tenantd_domain::RepoError;

use super::{Redis, RedisError};

/// Stores `ARGV[2]` under `KEYS[1]` for `ARGV[3]` ms if the generation `KEYS[2]` is still
/// `ARGV[1]` ("" = no generation yet).
const PUT: &str = r"
local generation = redis.call('GET', KEYS[2])
if (generation == false and ARGV[1] == '') or generation == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0";

/// Deletes `KEYS[1]` and bumps its generation `KEYS[2]`, kept for `ARGV[1]` ms; tells the
/// replicas' in-process tiers on the channel `ARGV[3]` (a channel is not a key: the script
/// stays within one hash slot) with the message `ARGV[2]`.
const INVALIDATE: &str = r"
redis.call('DEL', KEYS[1])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[2])
return 1";

/// How often invalidations that did not get through are retried.
const RETRY_EVERY: Duration = Duration::from_millis(200);
/// Most invalidations kept for retry; beyond, this replica skips the cache for one TTL.
const MAX_PENDING: usize = 100_000;

/// An invalidation that has not got through yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    cache: &'static str,
    /// When it last failed.
    since: Instant,
    /// Which failure it is.
    sequence: u64,
}

/// How long past the TTL a pending invalidation is kept: a read that loaded the row before
/// the write may store its (stale) value a moment after the write's invalidation failed.
const PENDING_MARGIN: Duration = Duration::from_secs(10);

/// How cache use shows in metrics (`cache` is `tenant` or `api_key`).
pub trait CacheObserver: Send + Sync {
    /// A read answered from Redis.
    fn hit(&self, cache: &'static str);
    /// A read Redis had no entry for (it went to the database).
    fn miss(&self, cache: &'static str);
    /// A Redis call that failed or timed out.
    fn error(&self, cache: &'static str);
    /// A read that did not ask Redis (it is skipped after failures).
    fn bypass(&self, cache: &'static str);
    /// A read answered by the in-process tier (no Redis call).
    fn local_hit(&self, cache: &'static str);
}

/// What a lookup found.
pub(crate) enum Lookup {
    Hit(Vec<u8>),
    /// Not cached: store what the database says under this generation.
    Miss(Option<String>),
    /// Redis is not usable: read the database, store nothing.
    Unusable,
}

/// The cache: entries with a TTL and generation counters, in Redis.
pub struct RedisCache {
    redis: Arc<Redis>,
    ttl: Duration,
    observer: Arc<dyn CacheObserver>,
    put: Script,
    invalidate: Script,
    /// Invalidations not yet through: entry key -> the latest failed one.
    pending: Mutex<HashMap<String, Pending>>,
    /// Numbers the failed invalidations, so a retry never clears a newer one.
    sequence: AtomicU64,
    /// Until when this replica does not use the cache (after `pending` overflowed).
    bypass_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl RedisCache {
    /// A cache in `redis` whose entries live `ttl`, with its retry task (which ends when
    /// the cache is dropped). Must be called within a Tokio runtime.
    pub fn new(redis: Arc<Redis>, ttl: Duration, observer: Arc<dyn CacheObserver>) -> Arc<Self> {
        let cache = Arc::new(Self {
            redis,
            ttl: ttl.max(Duration::from_millis(1)),
            observer,
            put: Script::new(PUT),
            invalidate: Script::new(INVALIDATE),
            pending: Mutex::default(),
            sequence: AtomicU64::new(0),
            bypass_until: Mutex::default(),
        });
        tokio::spawn(retry_pending(Arc::downgrade(&cache)));
        cache
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether reads must not use the cache: an invalidation of this replica's is still
    /// pending (the entry might be stale).
    fn bypassing(&self) -> bool {
        let until = *self
            .bypass_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        until.is_some_and(|until| Instant::now() < until) || !self.pending().is_empty()
    }

    /// Sends the invalidation of `key` past the breaker.
    async fn invalidate_now(&self, key: &str) -> Result<i64, RedisError> {
        // The generation must outlive any read that noted it before the write.
        let keep = (Self::millis(self.ttl) + 60_000).to_string();
        // The entry's name without the prefix and hash tag: `cache:id`, as tiers read it.
        let name = key
            .strip_prefix(self.redis.settings().key_prefix.as_str())
            .unwrap_or(key)
            .trim_start_matches('{')
            .trim_end_matches('}');
        let channel = self.channel();
        self.redis
            .eval_now(
                &self.invalidate,
                &[key, &format!("{key}:gen")],
                &[keep.as_bytes(), name.as_bytes(), channel.as_bytes()],
            )
            .await
    }

    /// One retry round: sends pending invalidations until one fails; forgets those whose
    /// entries have expired anyway. A key failed again meanwhile stays pending.
    async fn retry_round(&self) {
        let now = Instant::now();
        let keep = self.ttl + self.redis.settings().timeout + PENDING_MARGIN;
        let due: Vec<(String, Pending)> = {
            let mut pending = self.pending();
            pending.retain(|_, p| now.duration_since(p.since) < keep);
            pending.iter().map(|(k, p)| (k.clone(), *p)).collect()
        };
        for (key, sent) in due {
            if self.invalidate_now(&key).await.is_err() {
                self.observer.error(sent.cache);
                return;
            }
            let mut pending = self.pending();
            if pending
                .get(&key)
                .is_some_and(|p| p.sequence == sent.sequence)
            {
                pending.remove(&key);
            }
        }
    }

    /// How cache use is observed.
    pub(crate) fn observer(&self) -> &dyn CacheObserver {
        self.observer.as_ref()
    }

    /// The channel invalidations are published on, for the replicas' in-process tiers.
    pub fn channel(&self) -> String {
        self.redis.key("invalidations")
    }

    /// The Redis key of the entry `cache`/`id`.
    pub fn entry_key(&self, cache: &str, id: &str) -> String {
        self.redis.key(&format!("{cache}:{id}"))
    }

    fn millis(duration: Duration) -> u64 {
        u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) async fn lookup(&self, cache: &'static str, id: &str) -> Lookup {
        if self.bypassing() {
            self.observer.bypass(cache);
            return Lookup::Unusable;
        }
        let key = self.entry_key(cache, id);
        let found: Result<(Option<Vec<u8>>, Option<String>), RedisError> = self
            .redis
            .query(redis::cmd("MGET").arg(&key).arg(format!("{key}:gen")))
            .await;
        match found {
            Ok((Some(value), _)) => Lookup::Hit(value),
            Ok((None, generation)) => {
                self.observer.miss(cache);
                Lookup::Miss(generation)
            }
            Err(RedisError::Skipped) => {
                self.observer.bypass(cache);
                Lookup::Unusable
            }
            Err(_) => {
                self.observer.error(cache);
                Lookup::Unusable
            }
        }
    }

    pub(crate) async fn store(
        &self,
        cache: &'static str,
        id: &str,
        generation: Option<String>,
        value: &[u8],
    ) {
        let key = self.entry_key(cache, id);
        let generation = generation.unwrap_or_default();
        let ttl = Self::millis(self.ttl).to_string();
        let stored: Result<i64, RedisError> = self
            .redis
            .eval(
                &self.put,
                &[&key, &format!("{key}:gen")],
                &[generation.as_bytes(), value, ttl.as_bytes()],
            )
            .await;
        if stored.is_err() {
            self.observer.error(cache);
        }
    }

    /// Drops an entry after a write to what it caches (whatever the write's outcome: a
    /// commit whose answer was lost still changed the row).
    pub(crate) async fn drop_entry(&self, cache: &'static str, id: &str) {
        let key = self.entry_key(cache, id);
        // While the breaker is open, the write does not wait for Redis: the retry task
        // sends it.
        if !self.redis.is_skipping() {
            match self.invalidate_now(&key).await {
                Ok(_) => return,
                Err(_) => self.observer.error(cache),
            }
        }
        let failed = Pending {
            cache,
            since: Instant::now(),
            sequence: self.sequence.fetch_add(1, Ordering::Relaxed),
        };
        let mut pending = self.pending();
        if pending.len() < MAX_PENDING || pending.contains_key(&key) {
            pending.insert(key, failed);
        } else {
            *self
                .bypass_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + self.ttl);
        }
    }

    /// Reads `id` through the cache: decode a hit (a bad entry is a miss), else load from
    /// the database and store what was found.
    pub(crate) async fn read_through<T, Load, Fut>(
        &self,
        cache: &'static str,
        id: &str,
        decode: impl Fn(&[u8]) -> Option<T>,
        encode: impl Fn(&T) -> Option<Vec<u8>>,
        load: Load,
    ) -> Result<Option<T>, RepoError>
    where
        Load: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, RepoError>>,
    {
        let generation = match self.lookup(cache, id).await {
            Lookup::Hit(bytes) => {
                if let Some(value) = decode(&bytes) {
                    self.observer.hit(cache);
                    return Ok(Some(value));
                }
                // Undecodable (an older format, a key gone from the ring): a miss, and the
                // fresh value replaces it.
                self.observer.miss(cache);
                self.drop_entry(cache, id).await;
                return load().await;
            }
            Lookup::Miss(generation) => Some(generation),
            Lookup::Unusable => None,
        };
        let loaded = load().await?;
        if let (Some(generation), Some(value)) = (generation, &loaded)
            && let Some(bytes) = encode(value)
        {
            self.store(cache, id, generation, &bytes).await;
        }
        Ok(loaded)
    }
}

/// Retries pending invalidations until the cache is dropped.
async fn retry_pending(cache: Weak<RedisCache>) {
    let mut ticker = tokio::time::interval(RETRY_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(cache) = cache.upgrade() else {
            return;
        };
        cache.retry_round().await;
    }
}

//! Redis adapters (deadpool-redis): the read-through cache of tenants and API keys
//! ([`cache`]: entries with generations and invalidation; `cached.rs`: the decorators over
//! the repositories; `entries.rs`: what is stored) and the shared rate limiter
//! ([`rate_limit`]).
//!
//! Redis is never on the critical path: every call (connection and command together) has
//! a timeout well below the RPC deadline, and after a failure Redis is skipped for a
//! cool-off (a circuit breaker), so while it is down, refusing or hung, requests go to
//! PostgreSQL (cache) or to the in-process limiter at once instead of waiting on it.
//!
//! Connections: the deadpool pool makes and checks them (a checkout pings), and the
//! multiplexed connection it hands out is kept and shared by every call, so a command
//! costs one round trip; after any failure it is dropped and the next call checks out a
//! healthy one.

pub mod cache;
mod cached;
mod entries;
pub mod local;
pub mod rate_limit;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::{self, FromRedisValue, Script};
use deadpool_redis::{Config, Pool, Runtime};

pub use cache::{CacheObserver, RedisCache};
pub use cached::{ApiKeyTier, CachedApiKeys, CachedPurges, CachedRuns, CachedTenants, TenantTier};
pub use local::{LocalSettings, LocalTier, follow_invalidations};
pub use rate_limit::RedisRateLimiter;

/// How to reach Redis and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// Longest wait for one call (pool checkout, connect and command together).
    pub timeout: Duration,
    /// How long Redis is skipped after a failed call.
    pub cooldown: Duration,
    /// Prefix of every key (several deployments or tests can share one Redis).
    pub key_prefix: String,
    /// Most pooled connections.
    pub pool_size: usize,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(250),
            cooldown: Duration::from_secs(1),
            key_prefix: "tenantd:".to_owned(),
            pool_size: 16,
        }
    }
}

/// Why a Redis call did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisError {
    /// Skipped: a recent call failed and the cool-off is not over.
    #[error("redis is skipped after a recent failure")]
    Skipped,
    /// No answer within the timeout.
    #[error("redis did not answer in time")]
    Timeout,
    /// A connection or command error.
    #[error("redis: {0}")]
    Failed(String),
}

/// A pooled Redis client with a per-call timeout and a circuit breaker.
pub struct Redis {
    pool: Pool,
    /// The connection calls share, checked out of `pool`; dropped after a failure.
    shared: Mutex<Option<MultiplexedConnection>>,
    settings: RedisSettings,
    epoch: Instant,
    /// Milliseconds since `epoch` until which calls are skipped.
    skip_until: AtomicU64,
    /// Milliseconds since `epoch` of the last warning logged (0: none yet).
    warned_at: AtomicU64,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn pool_error(err: deadpool_redis::PoolError) -> RedisError {
    match err {
        deadpool_redis::PoolError::Timeout(_) => RedisError::Timeout,
        other => RedisError::Failed(other.to_string()),
    }
}

/// At most one "Redis unavailable" warning per this long.
const WARN_EVERY: Duration = Duration::from_secs(30);

impl Redis {
    /// A client of `url` (connections are made on first use).
    ///
    /// # Errors
    /// When the URL is not a Redis URL.
    pub fn new(url: &str, settings: RedisSettings) -> Result<Arc<Self>, String> {
        let pool = Config::from_url(url)
            .builder()
            .map_err(|e| format!("not a usable Redis URL: {e}"))?
            .max_size(settings.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.timeout))
            .create_timeout(Some(settings.timeout))
            .recycle_timeout(Some(settings.timeout))
            .build()
            .map_err(|e| format!("not a usable Redis URL: {e}"))?;
        Ok(Arc::new(Self {
            pool,
            shared: Mutex::default(),
            settings,
            epoch: Instant::now(),
            skip_until: AtomicU64::new(0),
            warned_at: AtomicU64::new(0),
        }))
    }

    /// The settings.
    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// `PING`, ignoring the breaker (the health probe); a success closes the breaker, a
    /// failure opens it.
    ///
    /// # Errors
    /// Why Redis did not answer.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let pong: String = self.record(self.call(&redis::cmd("PING")).await)?;
        if pong == "PONG" {
            self.skip_until.store(0, Ordering::Relaxed);
            Ok(())
        } else {
            Err(RedisError::Failed(format!(
                "unexpected PING reply {pong:?}"
            )))
        }
    }

    /// Runs `cmd`, unless the breaker is open.
    ///
    /// # Errors
    /// [`RedisError`]; a failure opens the breaker.
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, RedisError> {
        self.guard()?;
        let result = self.call(cmd).await;
        self.record(result)
    }

    /// Runs `script` with `keys` and `args`, unless the breaker is open.
    ///
    /// # Errors
    /// [`RedisError`]; a failure opens the breaker.
    pub async fn eval<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T, RedisError> {
        self.guard()?;
        self.eval_now(script, keys, args).await
    }

    /// [`Redis::eval`] even while the breaker is open (for what must get through, such
    /// as invalidations); a success closes the breaker.
    ///
    /// # Errors
    /// [`RedisError`]; a failure opens the breaker.
    pub async fn eval_now<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T, RedisError> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        let result = self
            .on_connection(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await;
        if result.is_ok() {
            self.skip_until.store(0, Ordering::Relaxed);
        }
        self.record(result)
    }

    /// Whether calls are being skipped after a failure.
    pub fn is_skipping(&self) -> bool {
        self.guard().is_err()
    }

    /// The key of `name` under the prefix, with `name` as its Redis Cluster hash tag (so
    /// an entry and its generation counter live on one shard).
    pub fn key(&self, name: &str) -> String {
        format!("{}{{{name}}}", self.settings.key_prefix)
    }

    async fn call<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, RedisError> {
        self.on_connection(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await
    }

    /// Runs `op` on the shared connection, the connection and the command together within
    /// the timeout.
    async fn on_connection<T, Op, Fut>(&self, op: Op) -> Result<T, RedisError>
    where
        Op: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        tokio::time::timeout(self.settings.timeout, async {
            let conn = self.connection().await?;
            op(conn)
                .await
                .map_err(|e| RedisError::Failed(e.to_string()))
        })
        .await
        .unwrap_or(Err(RedisError::Timeout))
    }

    /// The shared connection, checked out of the pool (and pinged) when there is none.
    async fn connection(&self) -> Result<MultiplexedConnection, RedisError> {
        if let Some(conn) = self.shared_slot().clone() {
            return Ok(conn);
        }
        let checked_out = self.pool.get().await.map_err(pool_error)?;
        let conn: MultiplexedConnection = (*checked_out).clone();
        *self.shared_slot() = Some(conn.clone());
        Ok(conn)
    }

    fn shared_slot(&self) -> std::sync::MutexGuard<'_, Option<MultiplexedConnection>> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn guard(&self) -> Result<(), RedisError> {
        if self.now_ms() < self.skip_until.load(Ordering::Relaxed) {
            Err(RedisError::Skipped)
        } else {
            Ok(())
        }
    }

    fn record<T>(&self, result: Result<T, RedisError>) -> Result<T, RedisError> {
        if let Err(err) = &result {
            // It may be broken: the next call checks out (and pings) one from the pool.
            *self.shared_slot() = None;
            let now = self.now_ms();
            let cooldown = u64::try_from(self.settings.cooldown.as_millis()).unwrap_or(u64::MAX);
            self.skip_until
                .store(now.saturating_add(cooldown), Ordering::Relaxed);
            let last = self.warned_at.load(Ordering::Relaxed);
            let every = u64::try_from(WARN_EVERY.as_millis()).unwrap_or(u64::MAX);
            if (last == 0 || now.saturating_sub(last) >= every)
                && self
                    .warned_at
                    .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::warn!(error = %err, "redis unavailable: serving without the cache and limiting rates in this process (warned at most every 30 s)");
            }
        }
        result
    }
}

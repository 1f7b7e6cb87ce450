//! Redis settings: the cache of tenants and API keys, and rate limits shared by the
//! replicas.

use std::time::Duration;

use clap::Args;
use tenantd_adapters::redis::LocalSettings;

use super::{ConfigError, Secret, millis};

/// Redis: the cache and shared rate limits.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Redis (cache and shared rate limits)")]
pub struct RedisArgs {
    /// Redis URL (also REDIS_URL), redis://[:password@]host:port[/db]: caches tenants and
    /// API keys and shares rate limits across replicas; unset = no cache, per-process limits.
    #[arg(long, env = "TENANTD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<Secret>,
    /// Longest wait for one Redis call, in milliseconds (at most 5000); slower calls fall
    /// back to the database or the in-process limiter.
    #[arg(
        long,
        env = "TENANTD_REDIS_TIMEOUT_MS",
        default_value_t = 250,
        value_parser = clap::value_parser!(u64).range(1..=5000)
    )]
    pub redis_timeout_ms: u64,
    /// Prefix of every Redis key.
    #[arg(long, env = "TENANTD_REDIS_KEY_PREFIX", default_value = "tenantd:")]
    pub redis_key_prefix: String,
    /// Seconds a cached tenant or API key lives (writes invalidate at once).
    #[arg(
        long,
        env = "TENANTD_CACHE_TTL_SECONDS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub cache_ttl_seconds: u64,
    /// Milliseconds a tenant or API key stays in the in-process tier in front of Redis
    /// (0 = no tier): the longest a change made on another replica can go unseen here if
    /// the invalidation subscription breaks silently (writes on this replica apply at once).
    #[arg(
        long,
        env = "TENANTD_CACHE_LOCAL_TTL_MS",
        default_value_t = 5000,
        value_parser = clap::value_parser!(u64).range(0..=600_000)
    )]
    pub cache_local_ttl_ms: u64,
    /// Most mebibytes the in-process tier holds (estimated weight of its entries).
    #[arg(
        long,
        env = "TENANTD_CACHE_LOCAL_MAX_MIB",
        default_value_t = 64,
        value_parser = clap::value_parser!(u64).range(1..=65_536)
    )]
    pub cache_local_max_mib: u64,
}

/// The validated Redis settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Connection URL (may carry a password).
    pub url: Secret,
    /// Longest wait for one call.
    pub timeout: Duration,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Lifetime of a cache entry.
    pub cache_ttl: Duration,
    /// The in-process tier in front of Redis, unless turned off.
    pub local: Option<LocalSettings>,
}

impl RedisArgs {
    pub(super) fn resolve(self) -> Result<Option<RedisConfig>, ConfigError> {
        let Some(url) = Secret::non_empty(self.redis_url) else {
            return Ok(None);
        };
        if !url.expose().starts_with("redis://") {
            return Err(ConfigError::new("redis-url", "must be a redis:// URL"));
        }
        let prefix = &self.redis_key_prefix;
        if prefix.len() > 64 || prefix.contains(['{', '}']) || prefix.contains(char::is_whitespace)
        {
            return Err(ConfigError::new(
                "redis-key-prefix",
                "must be at most 64 characters, without braces or spaces",
            ));
        }
        Ok(Some(RedisConfig {
            url,
            timeout: millis(self.redis_timeout_ms),
            key_prefix: self.redis_key_prefix,
            cache_ttl: Duration::from_secs(self.cache_ttl_seconds),
            local: (self.cache_local_ttl_ms > 0).then(|| LocalSettings {
                ttl: millis(self.cache_local_ttl_ms),
                max_bytes: self.cache_local_max_mib << 20,
            }),
        }))
    }
}

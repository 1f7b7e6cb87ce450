//! The in-process tier in front of the Redis cache: decoded tenants and API keys (no
//! network round trip, no decoding, no AES on a hit), bounded in bytes, each entry living
//! at most the tier's TTL.
//!
//! **Invalidation.** A write invalidates its replica's entry before it returns (the very
//! next call there reads the new value), and its Redis invalidation publishes the entry's
//! name on the cache's channel; every replica subscribed to it drops its entry when the
//! message arrives ([`follow_invalidations`]). A replica not subscribed (Redis down, the
//! subscription lost) does not use its tier at all, and clears it when it subscribes again
//! (it may have missed messages). A subscription that is broken without the replica
//! noticing is bounded by the TTL: that is the longest another replica's change can go
//! unseen here.
//!
//! **No stale refill.** Every invalidation bumps the tier's epoch; a reader notes the epoch
//! before it reads Redis or the database and keeps what it read only if the epoch has not
//! moved by the time it is stored, so a read that raced a write never puts the old value
//! back.

use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use deadpool_redis::redis;
use futures::StreamExt as _;
use moka::sync::Cache;
use tokio_util::sync::CancellationToken;

/// How long a lost subscription waits before subscribing again.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// Bounds of a tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalSettings {
    /// Longest life of an entry (and of a change unseen through a broken subscription).
    pub ttl: Duration,
    /// Most bytes the tier's entries weigh (estimated).
    pub max_bytes: u64,
}

/// Decoded entries of one cache (`tenant` or `api_key`) by id.
pub struct LocalTier<K, V> {
    name: &'static str,
    entries: Cache<K, V>,
    parse: fn(&str) -> Option<K>,
    epoch: AtomicU64,
    subscribed: AtomicBool,
}

impl<K, V> std::fmt::Debug for LocalTier<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTier")
            .field("name", &self.name)
            .field("entries", &self.entries.entry_count())
            .finish_non_exhaustive()
    }
}

impl<K, V> LocalTier<K, V>
where
    K: Hash + Eq + Send + Sync + Clone + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A tier named like its Redis cache, within `settings`, weighing entries with
    /// `weigh` (bytes), reading ids of invalidation messages with `parse`. It is not used
    /// until [`follow_invalidations`] has subscribed.
    pub fn new(
        name: &'static str,
        settings: LocalSettings,
        weigh: fn(&V) -> usize,
        parse: fn(&str) -> Option<K>,
    ) -> Arc<Self> {
        let entries = Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(move |_key: &K, value: &V| u32::try_from(weigh(value)).unwrap_or(u32::MAX))
            .time_to_live(settings.ttl)
            .build();
        Arc::new(Self {
            name,
            entries,
            parse,
            epoch: AtomicU64::new(0),
            subscribed: AtomicBool::new(false),
        })
    }

    /// The entry of `key`, while the tier is in use.
    pub fn get(&self, key: &K) -> Option<V> {
        if !self.subscribed.load(Ordering::Acquire) {
            return None;
        }
        self.entries.get(key)
    }

    /// The epoch to pass to [`LocalTier::put`] for what is read from now on.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Keeps `value`, read after [`LocalTier::epoch`] said `epoch`, unless an invalidation
    /// happened since.
    pub fn put(&self, key: &K, value: V, epoch: u64) {
        if !self.subscribed.load(Ordering::Acquire) || self.epoch() != epoch {
            return;
        }
        self.entries.insert(key.clone(), value);
        // An invalidation between the check and the insert bumped the epoch before it
        // removed the entry; seeing it moved here, remove what may be stale.
        if self.epoch() != epoch {
            self.entries.invalidate(key);
        }
    }

    /// Drops the entry of `key` (this replica wrote it, or another one said so).
    pub fn invalidate(&self, key: &K) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate(key);
    }

    /// Entries held now (moka counts lazily).
    #[cfg(test)]
    fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}

/// What [`follow_invalidations`] does to a tier, whatever its types.
pub trait Invalidated: Send + Sync {
    /// The cache it belongs to (the first part of an invalidation message).
    fn name(&self) -> &'static str;
    /// Drops the entry whose id is `id` (messages carry ids as text).
    fn forget(&self, id: &str);
    /// Drops everything and starts or stops being used.
    fn reset(&self, subscribed: bool);
}

impl<K, V> Invalidated for LocalTier<K, V>
where
    K: Hash + Eq + Send + Sync + Clone + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn forget(&self, id: &str) {
        if let Some(key) = (self.parse)(id) {
            self.invalidate(&key);
        }
    }

    fn reset(&self, subscribed: bool) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if !subscribed {
            self.subscribed.store(false, Ordering::Release);
        }
        self.entries.invalidate_all();
        if subscribed {
            self.subscribed.store(true, Ordering::Release);
        }
    }
}

/// Subscribes to `channel` of the Redis at `url` and applies its invalidations to `tiers`
/// until `stop`; resubscribes after a lost connection (the tiers unused meanwhile).
pub async fn follow_invalidations(
    url: String,
    channel: String,
    tiers: Vec<Arc<dyn Invalidated>>,
    stop: CancellationToken,
) {
    let mut warned = false;
    loop {
        let subscribed = async {
            let client = redis::Client::open(url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            () = stop.cancelled() => return,
            subscribed = tokio::time::timeout(Duration::from_secs(5), subscribed) => subscribed,
        };
        match pubsub {
            Ok(Ok(mut pubsub)) => {
                if warned {
                    tracing::info!("subscribed to cache invalidations again");
                    warned = false;
                }
                // Messages may have been missed before the subscription: start empty.
                for tier in &tiers {
                    tier.reset(true);
                }
                let mut messages = pubsub.on_message();
                loop {
                    let message = tokio::select! {
                        () = stop.cancelled() => return,
                        message = messages.next() => message,
                    };
                    let Some(message) = message else { break };
                    let Ok(payload) = message.get_payload::<String>() else {
                        continue;
                    };
                    if let Some((cache, id)) = payload.split_once(':') {
                        for tier in tiers.iter().filter(|t| t.name() == cache) {
                            tier.forget(id);
                        }
                    }
                }
            }
            Ok(Err(err)) if !warned => {
                tracing::warn!(error = %err, "cannot subscribe to cache invalidations; the in-process cache is off until then");
                warned = true;
            }
            Err(_) if !warned => {
                tracing::warn!(
                    "subscribing to cache invalidations timed out; the in-process cache is off until then"
                );
                warned = true;
            }
            _ => {}
        }
        for tier in &tiers {
            tier.reset(false);
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RESUBSCRIBE_AFTER) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier() -> Arc<LocalTier<u32, String>> {
        let tier = LocalTier::new(
            "t",
            LocalSettings {
                ttl: Duration::from_mins(1),
                max_bytes: 1 << 20,
            },
            String::len,
            |s| s.parse().ok(),
        );
        tier.reset(true);
        tier
    }

    #[test]
    fn a_value_read_before_an_invalidation_is_not_kept() {
        let tier = tier();
        let epoch = tier.epoch();
        tier.invalidate(&1);
        tier.put(&1, "old".into(), epoch);
        assert_eq!(tier.get(&1), None);
        let epoch = tier.epoch();
        tier.put(&1, "new".into(), epoch);
        assert_eq!(tier.get(&1).as_deref(), Some("new"));
        tier.forget("1");
        assert_eq!(tier.get(&1), None);
    }

    #[test]
    fn an_unsubscribed_tier_keeps_and_answers_nothing() {
        let tier = tier();
        tier.put(&1, "a".into(), tier.epoch());
        tier.reset(false);
        assert_eq!(tier.get(&1), None);
        tier.put(&2, "b".into(), tier.epoch());
        assert_eq!(tier.len(), 0);
        tier.reset(true);
        assert_eq!(tier.get(&1), None, "cleared when subscribed again");
    }

    #[test]
    fn the_bytes_bound_holds() {
        let tier = LocalTier::new(
            "t",
            LocalSettings {
                ttl: Duration::from_mins(1),
                max_bytes: 10_000,
            },
            String::len,
            |s| s.parse().ok(),
        );
        tier.reset(true);
        for i in 0..1_000 {
            tier.put(&i, "x".repeat(100), tier.epoch());
        }
        tier.entries.run_pending_tasks();
        assert!(tier.entries.weighted_size() <= 10_000);
        assert!(tier.len() <= 100);
    }
}

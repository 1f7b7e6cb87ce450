//! The dependencies the health service probes: PostgreSQL (critical: nothing can be served
//! without it), Redis and the Kafka brokers (not critical: requests are served from
//! PostgreSQL, events wait in the outbox).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use tenantd_adapters::kafka::KafkaPublisher;
use tenantd_adapters::postgres::PgStore;
use tenantd_adapters::redis::Redis;

use crate::health::DependencyCheck;

/// Redis as a health dependency: without it requests are served from PostgreSQL.
pub(super) struct Cache(pub(super) Arc<Redis>);

#[async_trait]
impl DependencyCheck for Cache {
    fn name(&self) -> &'static str {
        "cache"
    }

    fn critical(&self) -> bool {
        false
    }

    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| e.to_string())
    }
}

/// The Kafka brokers as a health dependency: without them events wait in the outbox.
pub(super) struct Publisher(pub(super) Arc<KafkaPublisher>);

#[async_trait]
impl DependencyCheck for Publisher {
    fn name(&self) -> &'static str {
        "publisher"
    }

    fn critical(&self) -> bool {
        false
    }

    async fn check(&self) -> Result<(), String> {
        self.0.check(std::time::Duration::from_secs(1)).await
    }
}

/// PostgreSQL as a health dependency: without it nothing can be served. Up when it answers
/// and has every migration this build embeds (checked until once true: migrations are
/// never undone under a running replica).
pub(super) struct Database {
    store: PgStore,
    migrated: AtomicBool,
}

impl Database {
    pub(super) fn new(store: PgStore) -> Self {
        Self {
            store,
            migrated: AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl DependencyCheck for Database {
    fn name(&self) -> &'static str {
        "database"
    }

    fn critical(&self) -> bool {
        true
    }

    async fn check(&self) -> Result<(), String> {
        if self.migrated.load(Ordering::Acquire) {
            return self.store.ping().await.map_err(|e| e.to_string());
        }
        self.store.migrated().await.map_err(|e| e.to_string())?;
        self.migrated.store(true, Ordering::Release);
        Ok(())
    }
}

//! Database pool gauges, read from the pool at scrape time: `db_pool_connections{state}`
//! (idle, in_use) and `db_pool_max_connections`.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGauge, IntGaugeVec, Opts};

/// Reports (open, idle, maximum) connections.
pub type PoolStats = Arc<dyn Fn() -> (u32, u32, u32) + Send + Sync>;

/// A collector of the pool gauges.
pub struct DbPoolCollector {
    stats: PoolStats,
    connections: IntGaugeVec,
    max: IntGauge,
}

impl std::fmt::Debug for DbPoolCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbPoolCollector").finish_non_exhaustive()
    }
}

impl DbPoolCollector {
    /// A collector reading `stats` on every scrape.
    ///
    /// # Errors
    /// When a metric definition is invalid.
    pub fn new(stats: PoolStats) -> prometheus::Result<Self> {
        Ok(Self {
            stats,
            connections: IntGaugeVec::new(
                Opts::new("db_pool_connections", "Database pool connections by state."),
                &["state"],
            )?,
            max: IntGauge::new(
                "db_pool_max_connections",
                "Most connections the database pool opens.",
            )?,
        })
    }
}

impl Collector for DbPoolCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.connections.desc();
        descs.extend(self.max.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (open, idle, max) = (self.stats)();
        self.connections
            .with_label_values(&["idle"])
            .set(i64::from(idle));
        self.connections
            .with_label_values(&["in_use"])
            .set(i64::from(open.saturating_sub(idle)));
        self.max.set(i64::from(max));
        let mut families = self.connections.collect();
        families.extend(self.max.collect());
        families
    }
}

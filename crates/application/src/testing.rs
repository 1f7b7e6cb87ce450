//! Test support shared by the use cases' unit tests: a clock the test moves, a provisioning
//! observer that records nothing, the placement every test tenant gets, and a provisioning
//! engine on one in-memory store.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Utc};
use tenantd_adapters::memory::MemoryStore;
use tenantd_adapters::system::UuidV7Generator;
use tenantd_domain::ports::Clock;
use tenantd_domain::provisioning::{RetryPolicy, RunState};
use tenantd_domain::tenant_schema::PlacementRule;

use crate::provisioning::{Engine, ProvisioningObserver, ProvisioningSettings, Signals, StepPorts};
use crate::tenant_schemas::PlacementPolicy;

/// A clock that moves only when the test moves it.
pub(crate) struct TestClock(pub(crate) Mutex<DateTime<Utc>>);

impl TestClock {
    /// Moves the clock on by `by`.
    pub(crate) fn advance(&self, by: chrono::Duration) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A provisioning observer that records nothing.
pub(crate) struct Quiet;

impl ProvisioningObserver for Quiet {
    fn step_attempt(&self, _: &'static str, _: &'static str, _: StdDuration) {}
    fn run_finished(&self, _: RunState) {}
    fn runs_in_flight(&self, _: u64) {}
    fn watch_opened(&self) {}
    fn watch_closed(&self) {}
}

/// Every tenant in a schema of the default tenant database, `t_<id>`.
pub(crate) fn shared_placement() -> PlacementPolicy {
    PlacementPolicy::new(
        PlacementRule::Shared("default".into()),
        std::collections::BTreeMap::new(),
        "t_",
    )
}

/// A provisioning engine of one worker on `store` over `steps`, with a 30 s lease, 10 s
/// attempts and `retry`.
pub(crate) fn provisioning_engine(
    store: &MemoryStore,
    steps: StepPorts,
    clock: Arc<dyn Clock>,
    retry: RetryPolicy,
) -> Engine {
    Engine::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        steps,
        clock,
        Arc::new(UuidV7Generator),
        ProvisioningSettings {
            workers: 1,
            lease: StdDuration::from_secs(30),
            poll_interval: StdDuration::from_millis(100),
            step_timeout: StdDuration::from_secs(10),
            retry,
            run_timeout: StdDuration::from_mins(30),
            sweep_interval: StdDuration::from_secs(10),
        },
        Signals::default(),
        Arc::new(Quiet),
    )
}

//! Unit tests of the provisioning engine and use cases: the in-memory store (which passes
//! the same contract suites as PostgreSQL), a clock the test moves, and providers the test
//! scripts (fail, fail for good, hold an attempt) and whose calls it records in order.
//! Tokio's clock is paused, so lease renewals and step timeouts run on virtual time.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use chrono::{Duration, TimeZone as _, Utc};
use tenantd_adapters::crypto::KeyRing;
use tenantd_adapters::memory::{
    MemoryBilling, MemoryDns, MemoryPlanRepository, MemoryStore, MemoryTenantDatabases,
};
use tenantd_adapters::system::OsRandom;
use tenantd_domain::ports::{
    ApiKeyRepository, BillingProvider, Clock, DnsProvider, DnsRecord, EventLog, IdGenerator,
    InitialKeyStore, ProvisioningRepository as _, ProvisioningTarget, Subscription,
    TenantDatabases, TenantRepository,
};
use tenantd_domain::provisioning::{
    ProvisioningRun, RetryPolicy, RunState, StepError, StepKind, StepState,
};
use tenantd_domain::tenant_schema::{
    AppliedMigration, Migrated, MigrationLimits, Placement, PlacementRule,
};
use tenantd_domain::{Error, EventKind, PlanId, Reason, TenantId, TenantStatus};
use tokio::sync::Notify;

use super::{
    Engine, Providers, ProvisioningObserver, ProvisioningService, ProvisioningSettings, Signals,
    StepPorts,
};
use crate::tenant_schemas::PlacementPolicy;
use crate::tenants::{CreateTenant, TenantFields, TenantService, TenantSettings};
use crate::testing::TestClock;

/// UUIDv7 ids in creation order whose low 32 bits (the engine's jitter) are always half of
/// their range: every backoff is exactly half its full delay.
#[derive(Default)]
struct HalfJitterIds(AtomicU32);

impl IdGenerator for HalfJitterIds {
    fn new_v7(&self) -> uuid::Uuid {
        let n = self.0.fetch_add(1, Ordering::Relaxed).to_be_bytes();
        let bytes = [0, 0, 0, n[1], n[2], n[3], 0x80, 0, 0, 0];
        uuid::Builder::from_unix_timestamp_millis(1_764_579_600_000, &bytes).into_uuid()
    }
}

/// What a scripted provider does on its next calls.
#[derive(Debug, Clone)]
enum Act {
    Fail,
    FailForGood,
    /// Waits until [`Script::release`].
    Hold,
}

/// The calls every provider received, in order, as `"DNS publish"` and the like.
type Calls = Arc<Mutex<Vec<String>>>;

/// One provider's script: what its next forward calls do (then: succeed), and the calls.
#[derive(Clone)]
struct Script {
    name: &'static str,
    next: Arc<Mutex<VecDeque<Act>>>,
    released: Arc<Notify>,
    calls: Calls,
}

impl Script {
    fn new(name: &'static str, calls: &Calls) -> Self {
        Self {
            name,
            next: Arc::default(),
            released: Arc::default(),
            calls: calls.clone(),
        }
    }

    fn then(&self, acts: &[Act]) {
        self.next
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(acts.iter().cloned());
    }

    fn release(&self) {
        self.released.notify_one();
    }

    async fn call(&self, operation: &str) -> Result<(), StepError> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(format!("{} {operation}", self.name));
        let act = self
            .next
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        match act {
            None => Ok(()),
            Some(Act::Fail) => Err(StepError::new("PROVIDER_UNAVAILABLE", "503")),
            Some(Act::FailForGood) => Err(StepError::permanent("DNS_NAME_TAKEN", "held")),
            Some(Act::Hold) => {
                self.released.notified().await;
                Ok(())
            }
        }
    }
}

/// A provider that follows its script on `provision`/`publish`/`subscribe` (undo calls are
/// recorded and succeed), then calls the in-memory provider.
struct Scripted<P> {
    script: Script,
    inner: P,
}

#[async_trait]
impl TenantDatabases for Scripted<MemoryTenantDatabases> {
    async fn provision(&self, target: &ProvisioningTarget) -> Result<Migrated, StepError> {
        self.script.call("provision").await?;
        self.inner.provision(target).await
    }

    async fn deprovision(&self, tenant: TenantId, placement: &Placement) -> Result<(), StepError> {
        self.script
            .calls
            .lock()
            .unwrap()
            .push("DATABASE undo".into());
        self.inner.deprovision(tenant, placement).await
    }

    async fn exists(&self, placement: &Placement) -> Result<bool, StepError> {
        self.inner.exists(placement).await
    }

    async fn migrate(
        &self,
        placement: &Placement,
        to: u32,
        limits: MigrationLimits,
    ) -> Result<Option<Migrated>, StepError> {
        self.inner.migrate(placement, to, limits).await
    }

    async fn applied(&self, placement: &Placement) -> Result<Vec<AppliedMigration>, StepError> {
        self.inner.applied(placement).await
    }
}

impl Scripted<MemoryTenantDatabases> {
    /// Whether `tenant` has its schema where the tests' policy places it.
    async fn has_schema(&self, tenant: TenantId) -> bool {
        self.inner
            .exists(&policy().place(tenant, &PlanId::new("pro")))
            .await
            .unwrap()
    }
}

/// Every tenant in a schema of the default tenant database.
fn policy() -> PlacementPolicy {
    PlacementPolicy::new(
        PlacementRule::Shared("default".into()),
        std::collections::BTreeMap::new(),
        "t_",
    )
}

#[async_trait]
impl DnsProvider for Scripted<MemoryDns> {
    async fn publish(&self, target: &ProvisioningTarget) -> Result<(), StepError> {
        self.script.call("publish").await?;
        self.inner.publish(target).await
    }

    async fn withdraw(&self, tenant: TenantId) -> Result<(), StepError> {
        self.script.calls.lock().unwrap().push("DNS undo".into());
        self.inner.withdraw(tenant).await
    }

    async fn records(&self, tenant: TenantId) -> Result<Vec<DnsRecord>, StepError> {
        self.inner.records(tenant).await
    }
}

#[async_trait]
impl BillingProvider for Scripted<MemoryBilling> {
    async fn subscribe(&self, target: &ProvisioningTarget) -> Result<(), StepError> {
        self.script.call("subscribe").await?;
        self.inner.subscribe(target).await
    }

    async fn cancel(&self, tenant: TenantId) -> Result<(), StepError> {
        self.script
            .calls
            .lock()
            .unwrap()
            .push("BILLING undo".into());
        self.inner.cancel(tenant).await
    }

    async fn subscription(&self, tenant: TenantId) -> Result<Option<Subscription>, StepError> {
        self.inner.subscription(tenant).await
    }
}

/// Counts open watches.
#[derive(Default)]
struct Watches(Mutex<i64>);

impl ProvisioningObserver for Watches {
    fn step_attempt(&self, _: &'static str, _: &'static str, _: StdDuration) {}
    fn run_finished(&self, _: RunState) {}
    fn runs_in_flight(&self, _: u64) {}
    fn watch_opened(&self) {
        *self.0.lock().unwrap() += 1;
    }
    fn watch_closed(&self) {
        *self.0.lock().unwrap() -= 1;
    }
}

/// The engine, its use cases and its parts, on one in-memory store.
struct World {
    store: MemoryStore,
    clock: Arc<TestClock>,
    tenants: TenantService,
    service: ProvisioningService,
    engine: Engine,
    dns: Script,
    billing: Script,
    calls: Calls,
    dns_provider: Arc<Scripted<MemoryDns>>,
    billing_provider: Arc<Scripted<MemoryBilling>>,
    databases_provider: Arc<Scripted<MemoryTenantDatabases>>,
    watches: Arc<Watches>,
    signals: Signals,
}

/// Three attempts, 100 ms then 200 ms apart at most, a 30 s lease, 10 s attempts.
fn settings() -> ProvisioningSettings {
    ProvisioningSettings {
        workers: 1,
        lease: StdDuration::from_secs(30),
        poll_interval: StdDuration::from_millis(100),
        step_timeout: StdDuration::from_secs(10),
        retry: RetryPolicy {
            base: Duration::milliseconds(100),
            max_delay: Duration::milliseconds(200),
            max_attempts: 3,
        },
        run_timeout: StdDuration::from_mins(30),
        sweep_interval: StdDuration::from_secs(10),
    }
}

fn world() -> World {
    let ring = Arc::new(KeyRing::generate("test"));
    let store = MemoryStore::with_cipher(ring.clone());
    let clock = Arc::new(TestClock(Mutex::new(
        Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap(),
    )));
    let ids = Arc::new(HalfJitterIds::default());
    let plans = Arc::new(MemoryPlanRepository::default());
    let calls = Calls::default();
    let (databases, dns, billing) = (
        Script::new("DATABASE", &calls),
        Script::new("DNS", &calls),
        Script::new("BILLING", &calls),
    );
    let databases_provider = Arc::new(Scripted {
        script: databases.clone(),
        inner: MemoryTenantDatabases::default(),
    });
    let dns_provider = Arc::new(Scripted {
        script: dns.clone(),
        inner: MemoryDns::new("tenants.example.test", [192, 0, 2, 1].into()),
    });
    let billing_provider = Arc::new(Scripted {
        script: billing.clone(),
        inner: MemoryBilling::default(),
    });
    let signals = Signals::default();
    let watches = Arc::new(Watches::default());
    let engine = Engine::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        StepPorts {
            providers: Providers {
                databases: databases_provider.clone(),
                dns: dns_provider.clone(),
                billing: billing_provider.clone(),
            },
            initial_keys: Arc::new(store.clone()),
            api_keys: Arc::new(store.clone()),
            plans: plans.clone(),
            sealer: ring,
            data_keys: Arc::new(store.clone()),
            secrets: Arc::new(OsRandom),
            ids: ids.clone(),
            schemas: Arc::new(store.clone()),
            placement: Arc::new(policy()),
        },
        clock.clone(),
        ids.clone(),
        settings(),
        signals.clone(),
        watches.clone(),
    );
    let service = ProvisioningService::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        clock.clone(),
        ids.clone(),
        settings(),
        signals.clone(),
        watches.clone(),
    );
    let tenants = TenantService::new(
        Arc::new(store.clone()),
        plans,
        clock.clone(),
        ids,
        TenantSettings {
            deletion_retention: Duration::days(30),
            provisioning_timeout: Duration::minutes(30),
        },
        Arc::new(policy()),
    )
    .with_signals(signals.clone());
    World {
        store,
        clock,
        tenants,
        service,
        engine,
        dns,
        billing,
        calls,
        dns_provider,
        billing_provider,
        databases_provider,
        watches,
        signals,
    }
}

impl World {
    async fn create(&self, slug: &str) -> TenantId {
        self.tenants
            .create(CreateTenant {
                tenant: TenantFields {
                    slug: slug.into(),
                    display_name: "Acme".into(),
                    plan_id: "pro".into(),
                    contact_email: format!("ops@{slug}.example"),
                    ..TenantFields::default()
                },
                request_id: String::new(),
            })
            .await
            .expect("create")
            .id()
    }

    /// Drives due runs until none is due now (the test clock does not move).
    async fn work(&self, worker: &str) {
        while self.engine.work_once(worker).await.expect("work") {}
    }

    async fn run(&self, tenant: TenantId) -> ProvisioningRun {
        self.store
            .latest(tenant)
            .await
            .expect("read")
            .expect("a run")
    }

    async fn status(&self, tenant: TenantId) -> TenantStatus {
        TenantRepository::get(&self.store, tenant)
            .await
            .expect("read")
            .expect("a tenant")
            .status()
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// The step events of `tenant`, as "KIND STATE".
    async fn step_events(&self, tenant: TenantId) -> Vec<String> {
        let events = EventLog::list(&self.store, Some(tenant), None, 1000)
            .await
            .expect("events");
        events
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::ProvisioningStepChanged { step, state, .. } => {
                    Some(format!("{} {}", step.as_str(), state.as_str()))
                }
                _ => None,
            })
            .collect()
    }

    /// Waits (on virtual time) until the run of `tenant` satisfies `check`.
    async fn until(&self, tenant: TenantId, check: impl Fn(&ProvisioningRun) -> bool) {
        for _ in 0..10_000 {
            if check(&self.run(tenant).await) {
                return;
            }
            tokio::time::sleep(StdDuration::from_millis(1)).await;
        }
        panic!("the run never got there: {:?}", self.run(tenant).await);
    }
}

fn running(kind: StepKind) -> impl Fn(&ProvisioningRun) -> bool {
    move |run| run.step(kind).state == StepState::Running
}

#[tokio::test(start_paused = true)]
async fn steps_run_in_order_and_the_tenant_becomes_active() {
    let w = world();
    let tenant = w.create("ordered").await;
    w.work("w1").await;
    let run = w.run(tenant).await;
    assert_eq!(run.state, RunState::Succeeded);
    assert!(run.steps.iter().all(|s| s.state == StepState::Succeeded));
    assert!(run.steps.iter().all(|s| s.attempts == 1));
    assert_eq!(w.status(tenant).await, TenantStatus::Active);
    assert_eq!(
        w.calls(),
        ["DATABASE provision", "DNS publish", "BILLING subscribe"]
    );
    let mut expected = Vec::new();
    for kind in StepKind::ORDER {
        expected.push(format!("{} RUNNING", kind.as_str()));
        expected.push(format!("{} SUCCEEDED", kind.as_str()));
    }
    assert_eq!(w.step_events(tenant).await, expected);
    assert!(w.databases_provider.has_schema(tenant).await);
    assert_eq!(w.dns_provider.records(tenant).await.unwrap().len(), 2);
    assert!(
        w.billing_provider
            .subscription(tenant)
            .await
            .unwrap()
            .is_some_and(|s| s.active)
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_attempt_is_retried_once_its_backoff_has_passed() {
    let w = world();
    w.dns.then(&[Act::Fail]);
    let tenant = w.create("retried").await;
    let failed_at = w.clock.now();
    w.work("w1").await;
    let run = w.run(tenant).await;
    let dns = run.step(StepKind::Dns);
    assert_eq!(
        (run.state, dns.state, dns.attempts),
        (RunState::Running, StepState::Pending, 1)
    );
    assert_eq!(
        dns.last_error.as_ref().unwrap().reason,
        "PROVIDER_UNAVAILABLE"
    );
    // Half of the first delay (100 ms) with this test's jitter.
    assert_eq!(
        dns.next_attempt_at,
        Some(failed_at + Duration::milliseconds(50))
    );
    // Not due yet: a worker finds nothing to do.
    w.clock.advance(Duration::milliseconds(49));
    assert!(!w.engine.work_once("w1").await.unwrap());
    assert_eq!(w.run(tenant).await.step(StepKind::Dns).attempts, 1);
    w.clock.advance(Duration::milliseconds(1));
    w.work("w1").await;
    let run = w.run(tenant).await;
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.step(StepKind::Dns).attempts, 2);
    assert_eq!(w.status(tenant).await, TenantStatus::Active);
}

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_fails_the_run_at_once_and_undoes_what_was_attempted_latest_first() {
    let w = world();
    w.dns.then(&[Act::FailForGood]);
    let tenant = w.create("permanent").await;
    w.work("w1").await;
    let run = w.run(tenant).await;
    assert_eq!(run.state, RunState::Failed);
    assert_eq!(run.failed_step, Some(StepKind::Dns));
    assert_eq!(run.step(StepKind::Dns).attempts, 1, "no retry can help");
    assert_eq!(run.error.as_ref().unwrap().reason, "DNS_NAME_TAKEN");
    assert!(run.pending_compensation.is_empty(), "{run:?}");
    assert_eq!(
        w.calls(),
        [
            "DATABASE provision",
            "DNS publish",
            "DNS undo",
            "DATABASE undo"
        ]
    );
    assert_eq!(run.step(StepKind::Database).state, StepState::Compensated);
    assert_eq!(run.step(StepKind::Credentials).state, StepState::Cancelled);
    assert_eq!(w.status(tenant).await, TenantStatus::Failed);
    assert!(!w.databases_provider.has_schema(tenant).await);
    let events = EventLog::list(&w.store, Some(tenant), None, 1000)
        .await
        .unwrap();
    assert!(events.iter().any(|e| matches!(
        &e.kind,
        EventKind::ProvisioningFailed { failed_step: StepKind::Dns, error, .. }
            if error.reason == "DNS_NAME_TAKEN"
    )));
}

#[tokio::test(start_paused = true)]
async fn a_step_failing_every_attempt_fails_the_run_and_every_done_step_is_undone_in_reverse() {
    let w = world();
    w.billing.then(&[Act::Fail, Act::Fail, Act::Fail]);
    let tenant = w.create("exhausted").await;
    for _ in 0..3 {
        w.work("w1").await;
        w.clock.advance(Duration::milliseconds(200));
    }
    w.work("w1").await;
    let run = w.run(tenant).await;
    assert_eq!(run.state, RunState::Failed);
    assert_eq!(run.step(StepKind::Billing).attempts, 3);
    assert_eq!(
        w.calls(),
        [
            "DATABASE provision",
            "DNS publish",
            "BILLING subscribe",
            "BILLING subscribe",
            "BILLING subscribe",
            // The failed step first (an attempt may have half-happened), then the rest,
            // latest first; CREDENTIALS's undo revokes the first key (not a provider).
            "BILLING undo",
            "DNS undo",
            "DATABASE undo",
        ]
    );
    for kind in [StepKind::Database, StepKind::Dns, StepKind::Credentials] {
        assert_eq!(run.step(kind).state, StepState::Compensated, "{kind}");
    }
    let first_key = InitialKeyStore::initial(&w.store, tenant)
        .await
        .unwrap()
        .expect("the first key was made");
    let key = ApiKeyRepository::get(&w.store, first_key.key_id)
        .await
        .unwrap()
        .unwrap();
    assert!(key.revoked_at.is_some(), "the first key is revoked");
    assert_eq!(w.status(tenant).await, TenantStatus::Failed);
}

#[tokio::test(start_paused = true)]
async fn cancelling_mid_step_abandons_the_attempt_and_undoes_what_was_done() {
    let w = world();
    w.dns.then(&[Act::Hold]);
    let tenant = w.create("cancelled").await;
    let engine = w.engine.clone();
    let worker = tokio::spawn(async move { engine.work_once("w1").await });
    w.until(tenant, running(StepKind::Dns)).await;
    let cancelled = w
        .service
        .cancel(&tenant.to_string(), "changed my mind")
        .await;
    assert_eq!(cancelled.unwrap().state, RunState::Cancelled);
    assert_eq!(w.status(tenant).await, TenantStatus::Cancelled);
    // The worker notices at its next lease renewal and drops the attempt.
    assert!(worker.await.unwrap().unwrap(), "it had a run");
    w.work("w2").await;
    let run = w.run(tenant).await;
    assert!(run.pending_compensation.is_empty(), "{run:?}");
    assert_eq!(run.step(StepKind::Dns).state, StepState::Compensated);
    assert_eq!(run.step(StepKind::Database).state, StepState::Compensated);
    assert_eq!(run.error.as_ref().unwrap().reason, "CANCELLED");
    assert_eq!(
        w.calls(),
        [
            "DATABASE provision",
            "DNS publish",
            "DNS undo",
            "DATABASE undo"
        ]
    );
    let again = w.service.cancel(&tenant.to_string(), "").await.unwrap_err();
    assert_eq!(again.reason(), Reason::RunNotRunning);
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_cancels_a_run_past_its_deadline_and_the_workers_undo_it() {
    let w = world();
    w.dns.then(&[Act::Fail, Act::Fail]);
    let tenant = w.create("overdue").await;
    w.work("w1").await;
    assert_eq!(
        w.service.cancel_overdue().await.unwrap(),
        0,
        "not overdue yet"
    );
    w.clock.advance(Duration::minutes(31));
    assert_eq!(w.service.cancel_overdue().await.unwrap(), 1);
    let run = w.run(tenant).await;
    assert_eq!(run.state, RunState::Cancelled);
    assert_eq!(run.error.as_ref().unwrap().reason, "DEADLINE_EXCEEDED");
    assert_eq!(w.status(tenant).await, TenantStatus::Cancelled);
    w.work("w1").await;
    let run = w.run(tenant).await;
    assert!(run.pending_compensation.is_empty(), "{run:?}");
    assert_eq!(run.step(StepKind::Database).state, StepState::Compensated);
    assert_eq!(w.service.cancel_overdue().await.unwrap(), 0, "swept once");
}

#[tokio::test(start_paused = true)]
async fn a_worker_whose_lease_was_taken_over_writes_nothing_more() {
    let w = world();
    w.dns.then(&[Act::Hold]);
    let tenant = w.create("taken-over").await;
    let engine = w.engine.clone();
    let stalled = tokio::spawn(async move { engine.work_once("stalled").await });
    w.until(tenant, running(StepKind::Dns)).await;
    // The stalled worker's replica stops renewing (its clock says so): past the lease,
    // another worker claims the run, counts the lost attempt and finishes the run.
    w.clock.advance(Duration::seconds(31));
    w.work("rescuer").await;
    let lost = w.run(tenant).await;
    let dns = lost.step(StepKind::Dns);
    assert_eq!((dns.state, dns.attempts), (StepState::Pending, 1));
    assert_eq!(dns.last_error.as_ref().unwrap().reason, "WORKER_LOST");
    w.clock.advance(Duration::milliseconds(50));
    w.work("rescuer").await;
    let run = w.run(tenant).await;
    assert_eq!(run.state, RunState::Succeeded);
    let dns = run.step(StepKind::Dns);
    assert_eq!(dns.attempts, 2, "the lost attempt counts");
    // The stalled attempt ends; nothing it reports is written.
    w.dns.release();
    assert!(stalled.await.unwrap().unwrap());
    let after = w.run(tenant).await;
    assert_eq!(after, run, "the superseded worker wrote nothing");
    let dns_successes = w
        .step_events(tenant)
        .await
        .into_iter()
        .filter(|e| e == "DNS SUCCEEDED")
        .count();
    assert_eq!(dns_successes, 1);
    let lost = w
        .step_events(tenant)
        .await
        .into_iter()
        .filter(|e| e == "DNS PENDING")
        .count();
    assert_eq!(lost, 1, "WORKER_LOST is recorded once");
}

#[tokio::test(start_paused = true)]
async fn a_watch_sends_the_current_state_every_change_and_ends_once_settled() {
    use futures::StreamExt as _;

    let w = world();
    w.dns.then(&[Act::Hold]);
    let tenant = w.create("watched").await;
    let mut watch = w.service.watch(&tenant.to_string()).await.unwrap();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.state, RunState::Running);
    assert_eq!(*w.watches.0.lock().unwrap(), 1);
    let engine = w.engine.clone();
    let worker = tokio::spawn(async move { engine.work_once("w1").await });
    let mut seen = vec![first.clone()];
    w.until(tenant, running(StepKind::Dns)).await;
    w.dns.release();
    while let Some(item) = watch.next().await {
        seen.push(item.unwrap());
    }
    worker.await.unwrap().unwrap();
    assert_eq!(seen.last().unwrap().state, RunState::Succeeded);
    assert!(
        seen.windows(2).all(|p| p[0].version < p[1].version),
        "every item is a change"
    );
    assert_eq!(*w.watches.0.lock().unwrap(), 0, "closed when it ended");

    let settled = w.service.watch(&tenant.to_string()).await.unwrap();
    let items: Vec<_> = settled.collect().await;
    assert_eq!(items.len(), 1, "a settled run: its state, then the end");
}

#[tokio::test(start_paused = true)]
async fn a_watch_ends_with_shutting_down_when_the_process_stops_and_unknown_tenants_are_not_found()
{
    use futures::StreamExt as _;

    let w = world();
    w.dns.then(&[Act::Hold]);
    let tenant = w.create("stopped").await;
    let mut watch = w.service.watch(&tenant.to_string()).await.unwrap();
    assert!(watch.next().await.unwrap().is_ok());
    w.signals.stopping().cancel();
    let Some(Err(err)) = watch.next().await else {
        panic!("the watch must end with an error");
    };
    assert_eq!(err.reason(), Reason::ShuttingDown);
    assert!(matches!(err, Error::Unavailable { .. }));
    assert!(watch.next().await.is_none());
    drop(watch);
    assert_eq!(*w.watches.0.lock().unwrap(), 0);

    let unknown = TenantId::from_uuid(uuid::Uuid::now_v7()).unwrap();
    let Err(err) = w.service.watch(&unknown.to_string()).await else {
        panic!("an unknown tenant has nothing to watch");
    };
    assert_eq!(err.reason(), Reason::ProvisioningRunNotFound);
}

//! The MigrationService and the rollout engine on the in-memory adapters (which pass the
//! contract suites PostgreSQL passes), with a test clock and tenant databases that fail
//! for the tenants a test names.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone as _, Utc};
use futures::StreamExt as _;
use tenantd_adapters::memory::{MemoryStore, MemoryTenantDatabases};
use tenantd_adapters::system::UuidV7Generator;
use tenantd_domain::ports::{
    Clock, ProvisioningTarget, RolloutRepository as _, TenantDatabases, TenantRepository as _,
    TenantSchemaRepository as _,
};
use tenantd_domain::provisioning::{ProvisioningRun, RunId, StepError};
use tenantd_domain::tenant_schema::{
    AppliedMigration, Canary, ErrorBudget, Migrated, MigrationLimits, MigrationSet, Placement,
    PlacementRule, RolloutCommand, RolloutCounts, RolloutState, TenantRolloutState,
};
use tenantd_domain::{
    ContactEmail, DisplayName, Error, Labels, NewTenant, PlanId, Reason, Slug, Tenant,
    TenantConfig, TenantId,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::*;
use crate::testing::TestClock;

/// Tenant databases that fail the migrations of the tenants in `failing` (permanently, or
/// as an unreachable database would), and count every migration they apply.
struct Failing {
    inner: MemoryTenantDatabases,
    broken: Mutex<BTreeMap<String, StepError>>,
    applied: AtomicU64,
    /// When set, each migration waits for a permit.
    gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
}

#[async_trait]
impl TenantDatabases for Failing {
    async fn provision(&self, target: &ProvisioningTarget) -> Result<Migrated, StepError> {
        self.inner.provision(target).await
    }
    async fn deprovision(&self, tenant: TenantId, placement: &Placement) -> Result<(), StepError> {
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
        let failure = self
            .broken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&placement.schema)
            .cloned();
        if let Some(error) = failure {
            return Err(error);
        }
        let gate = self
            .gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(gate) = gate {
            gate.acquire().await.expect("open").forget();
        }
        let migrated = self.inner.migrate(placement, to, limits).await?;
        if let Some(m) = &migrated {
            self.applied
                .fetch_add(m.applied.len() as u64, Ordering::Relaxed);
        }
        Ok(migrated)
    }
    async fn applied(&self, placement: &Placement) -> Result<Vec<AppliedMigration>, StepError> {
        self.inner.applied(placement).await
    }
}

#[derive(Default)]
struct Gauges {
    results: Mutex<Vec<&'static str>>,
    tenants: Mutex<Option<RolloutCounts>>,
    behind: AtomicU64,
}

impl MigrationObserver for Gauges {
    fn tenant_migrated(&self, result: &'static str, _duration: Duration) {
        self.results.lock().unwrap().push(result);
    }
    fn rollout_tenants(&self, counts: Option<&RolloutCounts>) {
        *self.tenants.lock().unwrap() = counts.copied();
    }
    fn tenants_behind(&self, behind: u64) {
        self.behind.store(behind, Ordering::Relaxed);
    }
    fn watch_opened(&self) {}
    fn watch_closed(&self) {}
}

fn set(n: u32) -> Arc<MigrationSet> {
    Arc::new(
        MigrationSet::parse(
            (1..=n)
                .map(|v| {
                    (
                        format!("{v:04}_m{v}.sql"),
                        format!("SELECT {v};").into_bytes(),
                    )
                })
                .collect(),
        )
        .unwrap(),
    )
}

struct World {
    store: MemoryStore,
    clock: Arc<TestClock>,
    databases: Arc<Failing>,
    service: MigrationService,
    engine: RolloutEngine,
    gauges: Arc<Gauges>,
    policy: PlacementPolicy,
}

fn settings() -> RolloutSettings {
    RolloutSettings {
        workers: 4,
        lease: Duration::from_secs(30),
        poll_interval: Duration::from_millis(20),
        default_max_parallel: 4,
        default_max_parallel_per_replica: 4,
        default_error_budget: ErrorBudget {
            count: 0,
            ratio: 0.0,
        },
        default_limits: MigrationLimits {
            lock_timeout_ms: 1_000,
            statement_timeout_ms: 10_000,
        },
    }
}

/// A world whose tenant schemas were made with `made_with` migrations and whose replica
/// now has `newest`.
fn world(made_with: u32, newest: u32) -> World {
    let store = MemoryStore::new();
    let clock = Arc::new(TestClock(Mutex::new(
        Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap(),
    )));
    let memory = MemoryTenantDatabases::new(set(made_with));
    let databases = Arc::new(Failing {
        inner: memory.with_set(set(newest)),
        broken: Mutex::default(),
        applied: AtomicU64::new(0),
        gate: Mutex::default(),
    });
    let gauges = Arc::new(Gauges::default());
    let policy = PlacementPolicy::new(
        PlacementRule::Shared("default".into()),
        BTreeMap::new(),
        "t_",
    );
    let signals = RolloutSignals::new(CancellationToken::new());
    let ids = Arc::new(UuidV7Generator);
    let service = MigrationService::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        set(newest),
        clock.clone(),
        ids.clone(),
        settings(),
        signals.clone(),
        gauges.clone(),
    );
    let engine = RolloutEngine::new(
        Arc::new(store.clone()),
        databases.clone(),
        Arc::new(policy.clone()),
        clock.clone(),
        ids,
        settings(),
        signals,
        gauges.clone(),
    );
    World {
        store,
        clock,
        databases,
        service,
        engine,
        gauges,
        policy,
    }
}

impl World {
    /// A tenant whose schema was made (with the old set) and recorded, labelled `labels`.
    async fn tenant(&self, made_with: u32, labels: &[(&str, &str)]) -> Tenant {
        let id = TenantId::from_uuid(Uuid::now_v7()).unwrap();
        let new = NewTenant {
            slug: Slug::parse(&format!("t-{}", &id.as_uuid().simple().to_string()[20..])).unwrap(),
            display_name: DisplayName::parse("Rollout Test").unwrap(),
            plan_id: PlanId::new("pro"),
            contact_email: ContactEmail::parse("ops@rollout.example").unwrap(),
            labels: Labels::parse(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
            .unwrap(),
            config: TenantConfig::parse(serde_json::Map::new()).unwrap(),
        };
        let now = self.clock.now();
        let placement = self.policy.place(id, &PlanId::new("pro"));
        let tenant = Tenant::create(id, new, now).placed(placement.clone());
        let run = ProvisioningRun::new(RunId(Uuid::now_v7()), id, now, chrono::Duration::hours(1));
        self.store.create(&tenant, &run, &[], None).await.unwrap();
        // Made by a replica with the old set: the schema records only its versions.
        self.databases
            .inner
            .with_set(set(made_with))
            .provision(&ProvisioningTarget {
                tenant_id: id,
                slug: tenant.slug().clone(),
                display_name: tenant.display_name().clone(),
                plan_id: tenant.plan_id().clone(),
                contact_email: tenant.contact_email().cloned().expect("an address"),
                placement,
            })
            .await
            .unwrap();
        self.store.record(id, made_with, now).await.unwrap();
        tenant
    }

    fn fail(&self, tenant: &Tenant, error: StepError) {
        self.databases
            .broken
            .lock()
            .unwrap()
            .insert(tenant.placement().unwrap().schema.clone(), error);
    }

    fn heal(&self) {
        self.databases.broken.lock().unwrap().clear();
    }

    /// Runs workers until none finds a tenant.
    async fn drain(&self) {
        while self.engine.work_once("worker").await.unwrap() {}
    }

    async fn version(&self, tenant: &Tenant) -> usize {
        self.databases
            .applied(tenant.placement().unwrap())
            .await
            .unwrap()
            .len()
    }
}

fn start(target_version: u32, canary: Canary, budget: Option<ErrorBudget>) -> StartRollout {
    StartRollout {
        target_version,
        canary,
        max_parallel: 0,
        max_parallel_per_replica: 0,
        error_budget: budget,
        lock_timeout_ms: None,
        statement_timeout_ms: None,
    }
}

#[tokio::test]
async fn a_rollout_migrates_every_tenant_behind_once_canary_first() {
    let w = world(1, 3);
    let canary = w.tenant(1, &[("ring", "early")]).await;
    let rest = [w.tenant(1, &[]).await, w.tenant(1, &[]).await];
    let current = w.tenant(3, &[]).await;
    let rollout = w
        .service
        .start(
            "admin",
            start(
                0,
                Canary::Labels([("ring".into(), "early".into())].into()),
                None,
            ),
        )
        .await
        .unwrap();
    assert_eq!(rollout.spec.target_version, 3, "0 is the newest");
    assert_eq!(
        (rollout.counts.canary.total(), rollout.counts.rest.total()),
        (1, 2),
        "the tenant at the target is not in it"
    );
    // The canary alone first.
    assert!(w.engine.work_once("worker").await.unwrap());
    assert_eq!(w.version(&canary).await, 3);
    assert_eq!(w.version(&rest[0]).await, 1);
    w.drain().await;
    for tenant in &rest {
        assert_eq!(w.version(tenant).await, 3);
    }
    assert_eq!(w.version(&current).await, 3);
    assert_eq!(
        w.databases.applied.load(Ordering::Relaxed),
        6,
        "two versions for each of three tenants, once"
    );
    let view = w.service.get(&rollout.id.to_string()).await.unwrap();
    assert_eq!(view.rollout.state, RolloutState::Succeeded);
    assert!(view.failures.is_empty());
    assert_eq!(*w.gauges.results.lock().unwrap(), ["succeeded"; 3]);
    assert_eq!(*w.gauges.tenants.lock().unwrap(), None, "no active rollout");
    let status = w.service.status().await.unwrap();
    assert_eq!(
        (status.newest, status.versions.clone(), status.behind()),
        (3, vec![(3, 4)], 0)
    );
}

#[tokio::test]
async fn failing_tenants_stay_at_their_version_and_the_budget_pauses_until_a_resume() {
    let w = world(1, 2);
    let tenants = [
        w.tenant(1, &[]).await,
        w.tenant(1, &[]).await,
        w.tenant(1, &[]).await,
        w.tenant(1, &[]).await,
    ];
    let violated = StepError::permanent("MIGRATION_FAILED", "0002_m2.sql failed: check violated");
    w.fail(&tenants[1], violated.clone());
    w.fail(
        &tenants[2],
        StepError::new("DATABASE_UNAVAILABLE", "connection refused"),
    );
    let budget = ErrorBudget {
        count: 1,
        ratio: 0.0,
    };
    let rollout = w
        .service
        .start("admin", start(2, Canary::None, Some(budget)))
        .await
        .unwrap();
    let id = rollout.id.to_string();
    w.drain().await;
    let view = w.service.get(&id).await.unwrap();
    assert_eq!(view.rollout.state, RolloutState::Paused);
    assert_eq!(
        view.rollout.reason.as_ref().map(|r| r.reason.as_str()),
        Some("ERROR_BUDGET_EXHAUSTED")
    );
    assert_eq!(
        view.failures
            .iter()
            .map(|f| f.tenant_id)
            .collect::<Vec<_>>(),
        [tenants[1].id(), tenants[2].id()]
    );
    assert_eq!(
        view.rollout.counts.all().pending,
        1,
        "the last tenant waits"
    );
    assert_eq!(
        (w.version(&tenants[1]).await, w.version(&tenants[2]).await),
        (1, 1)
    );
    let behind = w.service.list_schemas(Some(2), 0, "").await.unwrap();
    let errors: BTreeSet<_> = behind
        .items
        .iter()
        .filter_map(|s| s.last_error.as_ref().map(|e| e.reason.clone()))
        .collect();
    assert_eq!(
        errors,
        [
            "DATABASE_UNAVAILABLE".to_owned(),
            "MIGRATION_FAILED".to_owned()
        ]
        .into()
    );

    // The database is back: a resume queues its tenant again, the bad data stays failed.
    w.heal();
    w.fail(&tenants[1], violated);
    let resumed = w
        .service
        .command(&id, RolloutCommand::Resume, "admin")
        .await
        .unwrap();
    assert_eq!(resumed.rollout.state, RolloutState::Running);
    w.drain().await;
    let ended = w.service.get(&id).await.unwrap().rollout;
    assert_eq!(ended.state, RolloutState::Failed);
    assert_eq!(
        (ended.counts.all().succeeded, ended.counts.all().failed),
        (3, 1)
    );
    assert_eq!(w.version(&tenants[2]).await, 2);

    // Fixed: RetryFailedTenants finishes the job.
    w.heal();
    w.service
        .command(&id, RolloutCommand::RetryFailed, "admin")
        .await
        .unwrap();
    w.drain().await;
    assert_eq!(
        w.service.get(&id).await.unwrap().rollout.state,
        RolloutState::Succeeded
    );
    assert_eq!(w.version(&tenants[1]).await, 2);
}

#[tokio::test]
async fn a_tenant_of_a_lost_worker_is_taken_over_after_its_lease_and_migrated_once() {
    let w = world(1, 2);
    let tenant = w.tenant(1, &[]).await;
    w.service
        .start("admin", start(2, Canary::None, None))
        .await
        .unwrap();
    // A worker claims it and dies.
    let lost = w
        .store
        .claim("dead", w.clock.now(), chrono::Duration::seconds(30))
        .await
        .unwrap()
        .expect("claimed");
    assert_eq!(lost.tenant.tenant_id, tenant.id());
    // Its migration committed before it died; its outcome was never stored.
    w.databases
        .migrate(tenant.placement().unwrap(), 2, settings().default_limits)
        .await
        .unwrap();
    assert!(!w.engine.work_once("alive").await.unwrap(), "still leased");
    w.clock.advance(chrono::Duration::seconds(31));
    assert!(w.engine.work_once("alive").await.unwrap());
    let view = w.service.get(&lost.rollout.id.to_string()).await.unwrap();
    assert_eq!(view.rollout.state, RolloutState::Succeeded);
    assert_eq!(w.version(&tenant).await, 2);
    assert_eq!(
        w.databases.applied.load(Ordering::Relaxed),
        1,
        "the takeover applied nothing more"
    );
    let migrated: Vec<(u32, u32)> =
        tenantd_domain::ports::EventLog::list(&w.store, Some(tenant.id()), None, 100)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|e| match e.kind {
                tenantd_domain::EventKind::TenantSchemaMigrated {
                    from_version,
                    to_version,
                    rollout_id,
                    ..
                } if !rollout_id.is_empty() => Some((from_version, to_version)),
                _ => None,
            })
            .collect();
    assert_eq!(
        migrated,
        [(1, 2)],
        "the change is told once, from where the rollout found it"
    );
    let entries = w
        .store
        .tenants(lost.rollout.id, None, 10, None)
        .await
        .unwrap();
    assert_eq!(entries[0].attempts, 2);
}

#[tokio::test]
async fn a_replica_migrates_no_more_tenants_at_once_than_the_rollout_allows_it() {
    let w = world(1, 2);
    for _ in 0..3 {
        w.tenant(1, &[]).await;
    }
    let mut input = start(2, Canary::None, None);
    input.max_parallel = 3;
    input.max_parallel_per_replica = 1;
    w.service.start("admin", input).await.unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    *w.databases.gate.lock().unwrap() = Some(gate.clone());
    let engine = w.engine.clone();
    let busy = tokio::spawn(async move { engine.work_once("a").await });
    // The first worker takes the replica's one slot; its migration waits at the gate.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !w.engine.work_once("b").await.unwrap(),
        "no second slot on this replica"
    );
    gate.add_permits(10);
    assert!(busy.await.unwrap().unwrap());
}

#[tokio::test]
async fn starts_are_checked_and_one_rollout_runs_at_a_time() {
    let w = world(1, 2);
    w.tenant(1, &[]).await;
    let invalid = |input: StartRollout| {
        let service = w.service.clone();
        async move {
            match service.start("admin", input).await.unwrap_err() {
                Error::InvalidArgument { violations, .. } => {
                    violations.into_iter().map(|v| v.field).collect::<Vec<_>>()
                }
                other => panic!("not INVALID_ARGUMENT: {other:?}"),
            }
        }
    };
    assert_eq!(
        invalid(start(3, Canary::None, None)).await,
        ["target_version"]
    );
    assert_eq!(
        invalid(start(
            0,
            Canary::Tenants(Vec::new()),
            Some(ErrorBudget {
                count: 0,
                ratio: 1.5
            })
        ))
        .await,
        ["error_budget.ratio", "canary.tenant_ids"]
    );
    let first = w
        .service
        .start("admin", start(0, Canary::None, None))
        .await
        .unwrap();
    let second = w
        .service
        .start("admin", start(0, Canary::None, None))
        .await
        .unwrap_err();
    assert_eq!(second.reason(), Reason::RolloutInProgress);
    assert!(matches!(second, Error::FailedPrecondition { .. }));
    let refused = w
        .service
        .command(&first.id.to_string(), RolloutCommand::Resume, "admin")
        .await
        .unwrap_err();
    assert_eq!(refused.reason(), Reason::RolloutStateInvalid);
    let unknown = w
        .service
        .get(&Uuid::now_v7().to_string())
        .await
        .unwrap_err();
    assert_eq!(unknown.reason(), Reason::RolloutNotFound);
    assert_eq!(
        w.service.get("not-an-id").await.unwrap_err().reason(),
        Reason::FieldInvalid
    );
}

#[tokio::test]
async fn the_watch_sends_the_rollout_then_its_changes_and_ends_when_it_ends() {
    let w = world(1, 2);
    w.tenant(1, &[]).await;
    w.tenant(1, &[]).await;
    let rollout = w
        .service
        .start("admin", start(2, Canary::None, None))
        .await
        .unwrap();
    let mut watch = w.service.watch(&rollout.id.to_string()).await.unwrap();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.rollout.counts.all().pending, 2);
    w.drain().await;
    let mut last = first;
    while let Some(item) = watch.next().await {
        last = item.unwrap();
    }
    assert_eq!(last.rollout.state, RolloutState::Succeeded);
    assert_eq!(last.rollout.counts.all().succeeded, 2);
}

#[tokio::test]
async fn on_start_counts_the_schemas_behind_and_starts_a_rollout_only_when_asked() {
    let w = world(1, 2);
    w.tenant(1, &[]).await;
    w.tenant(2, &[]).await;
    let (status, started) = w.service.on_start(false).await.unwrap();
    assert_eq!((status.behind(), started), (1, None));
    assert_eq!(w.gauges.behind.load(Ordering::Relaxed), 1);
    let (_, started) = w.service.on_start(true).await.unwrap();
    let started = started.expect("a rollout with the defaults");
    assert_eq!(
        (started.spec.target_version, started.counts.all().total()),
        (2, 1)
    );
    assert!(started.created_by.contains("auto-rollout"));
    let (_, again) = w.service.on_start(true).await.unwrap();
    assert_eq!(again, None, "one is running already");
    assert_eq!(
        w.gauges
            .tenants
            .lock()
            .unwrap()
            .map(|c| c.all().get(TenantRolloutState::Pending)),
        Some(1)
    );
}

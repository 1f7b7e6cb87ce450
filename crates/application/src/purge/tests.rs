//! Unit tests of purges: the in-memory store and providers (which pass the same contract
//! suites as PostgreSQL's), a clock the test moves, and a DNS provider the test can make
//! fail. Tenants are provisioned by the real engine first, so a purge has everything to
//! take apart.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use chrono::{Duration, TimeZone as _, Utc};
use tenantd_adapters::archives::FsExportArchives;
use tenantd_adapters::crypto::KeyRing;
use tenantd_adapters::memory::{
    MemoryBilling, MemoryDns, MemoryPlanRepository, MemoryStore, MemoryTenantDatabases,
};
use tenantd_adapters::system::{OsRandom, UuidV7Generator};
use tenantd_domain::ports::{
    BillingProvider as _, Clock, DataKeyRepository, DnsProvider, DnsRecord, EventLog,
    ProvisioningTarget, PurgeRepository as _, TenantDatabases as _, TenantRepository,
};
use tenantd_domain::provisioning::{RetryPolicy, StepError};
use tenantd_domain::purge::{PurgeStepKind, PurgeStepState};
use tenantd_domain::{Error, Reason, RepoError, TenantId, TenantStatus};

use super::{PurgeEngine, PurgeObserver, PurgeService, PurgeSettings, PurgeTargets};
use crate::api_keys::{ApiKeyService, CreateApiKey};
use crate::provisioning::{Engine, Providers, StepPorts};
use crate::tenants::{CreateTenant, TenantFields, TenantService, TenantSettings};
use crate::testing::{TestClock, provisioning_engine, shared_placement};

/// The in-memory DNS provider whose next `withdraw` calls fail while `failures` lasts.
struct FlakyDns {
    inner: MemoryDns,
    failures: AtomicU32,
}

#[async_trait]
impl DnsProvider for FlakyDns {
    async fn publish(&self, target: &ProvisioningTarget) -> Result<(), StepError> {
        self.inner.publish(target).await
    }

    async fn withdraw(&self, tenant: TenantId) -> Result<(), StepError> {
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(StepError::new(
                "DNS_PROVIDER_UNAVAILABLE",
                "503 from the DNS API",
            ));
        }
        self.inner.withdraw(tenant).await
    }

    async fn records(&self, tenant: TenantId) -> Result<Vec<DnsRecord>, StepError> {
        self.inner.records(tenant).await
    }
}

/// Counts what the purge metrics would.
#[derive(Default)]
struct Seen(Mutex<Vec<String>>);

impl PurgeObserver for Seen {
    fn purge_started(&self, by_sweeper: bool, forced: bool) {
        self.push(format!("started sweeper={by_sweeper} forced={forced}"));
    }
    fn step_attempt(&self, step: &'static str, result: &'static str, _: StdDuration) {
        self.push(format!("{step} {result}"));
    }
    fn purge_finished(&self) {
        self.push("finished".into());
    }
    fn purges_in_flight(&self, running: u64) {
        self.push(format!("in flight {running}"));
    }
}

impl Seen {
    fn push(&self, line: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }
    fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

struct World {
    store: MemoryStore,
    clock: Arc<TestClock>,
    tenants: TenantService,
    keys: ApiKeyService,
    provisioning: Engine,
    purges: PurgeService,
    engine: PurgeEngine,
    databases: Arc<MemoryTenantDatabases>,
    dns: Arc<FlakyDns>,
    billing: Arc<MemoryBilling>,
    seen: Arc<Seen>,
    archives: Arc<FsExportArchives>,
    dir: tempfile::TempDir,
    /// The second key of the last tenant [`World::deleted`] made.
    secret: Mutex<Option<String>>,
}

fn retry() -> RetryPolicy {
    RetryPolicy {
        base: Duration::milliseconds(100),
        max_delay: Duration::milliseconds(400),
        max_attempts: 2,
    }
}

fn world() -> World {
    let ring = Arc::new(KeyRing::generate("test"));
    let store = MemoryStore::with_cipher(ring.clone());
    let clock = Arc::new(TestClock(Mutex::new(
        Utc.with_ymd_and_hms(2026, 12, 2, 9, 0, 0).unwrap(),
    )));
    let ids = Arc::new(UuidV7Generator);
    let plans = Arc::new(MemoryPlanRepository::default());
    let databases = Arc::new(MemoryTenantDatabases::default());
    let dns = Arc::new(FlakyDns {
        inner: MemoryDns::new("tenants.example.test", [192, 0, 2, 1].into()),
        failures: AtomicU32::new(0),
    });
    let billing = Arc::new(MemoryBilling::default());
    let steps = StepPorts {
        providers: Providers {
            databases: databases.clone(),
            dns: dns.clone(),
            billing: billing.clone(),
        },
        initial_keys: Arc::new(store.clone()),
        api_keys: Arc::new(store.clone()),
        plans: plans.clone(),
        sealer: ring,
        data_keys: Arc::new(store.clone()),
        secrets: Arc::new(OsRandom),
        ids: ids.clone(),
        schemas: Arc::new(store.clone()),
        placement: Arc::new(shared_placement()),
    };
    let lease = StdDuration::from_secs(30);
    let provisioning = provisioning_engine(&store, steps.clone(), clock.clone(), retry());
    let seen = Arc::new(Seen::default());
    let purges = PurgeService::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        clock.clone(),
        ids.clone(),
        PurgeSettings {
            workers: 1,
            lease,
            poll_interval: StdDuration::from_millis(100),
            step_timeout: StdDuration::from_secs(10),
            retry: retry(),
            slug_reuse: Duration::days(90),
            batch: 10,
        },
        seen.clone(),
    );
    let dir = tempfile::tempdir().unwrap();
    let archives = Arc::new(FsExportArchives::new(dir.path()));
    let engine = purges.engine(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        PurgeTargets {
            steps,
            runs: Arc::new(store.clone()),
            exports: Arc::new(store.clone()),
            archives: archives.clone(),
            data_keys: Arc::new(store.clone()),
        },
    );
    let tenants = TenantService::new(
        Arc::new(store.clone()),
        plans.clone(),
        clock.clone(),
        ids.clone(),
        TenantSettings {
            deletion_retention: Duration::days(30),
            provisioning_timeout: Duration::minutes(30),
        },
        Arc::new(shared_placement()),
    );
    let keys = ApiKeyService::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        plans,
        clock.clone(),
        ids,
        Arc::new(OsRandom),
    );
    World {
        store,
        clock,
        tenants,
        keys,
        provisioning,
        purges,
        engine,
        databases,
        dns,
        billing,
        seen,
        archives,
        dir,
        secret: Mutex::new(None),
    }
}

impl World {
    /// A tenant provisioned by the engine, with a second API key, then deleted.
    async fn deleted(&self, slug: &str) -> TenantId {
        let id = self
            .tenants
            .create(CreateTenant {
                tenant: TenantFields {
                    slug: slug.into(),
                    display_name: "Acme".into(),
                    plan_id: "pro".into(),
                    contact_email: format!("ops@{slug}.example"),
                    ..TenantFields::default()
                },
                request_id: format!("req-{slug}"),
            })
            .await
            .expect("create")
            .id();
        while self.provisioning.work_once("p").await.expect("provision") {}
        assert_eq!(self.status(id).await, TenantStatus::Active);
        let (_, secret) = self
            .keys
            .create(CreateApiKey {
                tenant_id: id.to_string(),
                display_name: "ci".into(),
                scopes: vec!["tenants.read".into()],
                expires_at: None,
            })
            .await
            .expect("a second key");
        *self.secret.lock().unwrap_or_else(PoisonError::into_inner) = Some(secret.expose());
        self.tenants
            .delete(&id.to_string(), "")
            .await
            .expect("delete");
        id
    }

    async fn status(&self, id: TenantId) -> TenantStatus {
        TenantRepository::get(&self.store, id)
            .await
            .expect("read")
            .expect("tenant")
            .status()
    }

    /// Drives due purges until none is due now (the test clock does not move).
    async fn work(&self) {
        while self.engine.work_once("w").await.expect("work") {}
    }

    async fn event_types(&self, id: TenantId) -> Vec<&'static str> {
        let events = EventLog::list(&self.store, Some(id), None, 1000)
            .await
            .expect("events");
        events.iter().map(|e| e.kind.type_name()).collect()
    }
}

fn reason(result: Result<impl std::fmt::Debug, Error>) -> Reason {
    result.expect_err("refused").reason()
}

#[tokio::test(start_paused = true)]
async fn a_purge_takes_everything_apart_in_order_and_leaves_the_tombstone() {
    let w = world();
    let id = w.deleted("acme").await;
    let placement = shared_placement().place(id, &tenantd_domain::PlanId::new("pro"));
    assert!(w.databases.exists(&placement).await.unwrap());
    assert!(!w.dns.records(id).await.unwrap().is_empty());
    let key = tenantd_domain::ports::WrappedDataKey {
        envelope: vec![1, 2, 3],
        key_id: "k1".into(),
    };
    DataKeyRepository::get_or_create(&w.store, id, key.clone())
        .await
        .expect("a data key");

    let (tenant, purge) = w
        .purges
        .purge("admin", &id.to_string(), "", true)
        .await
        .expect("purge");
    assert_eq!(tenant.status(), TenantStatus::Purging);
    assert!(purge.forced);
    assert_eq!(purge.requested_by, "admin");
    w.work().await;

    let purge = w.purges.get(&id.to_string()).await.expect("get");
    assert!(purge.is_done());
    assert!(
        purge
            .steps
            .iter()
            .all(|s| s.state == PurgeStepState::Succeeded && s.attempts == 1)
    );
    assert!(
        !w.databases.exists(&placement).await.unwrap(),
        "schema dropped"
    );
    assert!(
        w.dns.records(id).await.unwrap().is_empty(),
        "records deleted"
    );
    let subscription = w.billing.subscription(id).await.unwrap();
    assert!(
        subscription.is_none_or(|s| !s.active),
        "subscription cancelled"
    );
    let keys = tenantd_domain::ports::ApiKeyRepository::list(&w.store, id, None, 10, None)
        .await
        .unwrap();
    assert_eq!(keys.len(), 2);
    assert!(
        keys.iter().all(|k| k.revoked_at.is_some()),
        "every key revoked"
    );
    assert_eq!(
        w.store.forget_requests(id).await.unwrap(),
        0,
        "its idempotency records are gone already"
    );
    assert_eq!(DataKeyRepository::get(&w.store, id).await.unwrap(), None);
    assert!(
        matches!(
            DataKeyRepository::get_or_create(&w.store, id, key).await,
            Err(RepoError::Precondition(Reason::TenantPurged, _))
        ),
        "its data key is destroyed for good"
    );

    let tombstone = w.tenants.get(&id.to_string()).await.expect("the tombstone");
    assert_eq!(tombstone.status(), TenantStatus::Purged);
    assert_eq!(tombstone.contact_email(), None);
    assert_eq!(tombstone.slug().as_str(), "acme");
    assert!(tombstone.purged_at().is_some());
    let types = w.event_types(id).await;
    let start = types
        .iter()
        .position(|t| *t == "tenant.v1.TenantPurgeStarted");
    assert!(start.is_some());
    assert_eq!(types.last(), Some(&"tenant.v1.TenantPurged"));
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == "tenant.v1.ApiKeyRevoked")
            .count(),
        2
    );
    assert_eq!(
        reason(w.tenants.undelete(&id.to_string(), "").await),
        Reason::TenantPurged
    );
    assert!(w.seen.lines().contains(&"finished".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn a_purge_is_refused_unless_deleted_unheld_and_due_and_is_idempotent_once_started() {
    let w = world();
    let id = w.deleted("hold").await;
    let tenant = id.to_string();
    assert_eq!(
        reason(w.purges.purge("admin", &tenant, "", false).await),
        Reason::PurgeTimeNotReached
    );
    assert_eq!(
        reason(w.purges.purge("admin", &tenant, "v1", true).await),
        Reason::EtagMismatch
    );
    w.tenants
        .set_legal_hold(&tenant, "case 12", "")
        .await
        .expect("hold");
    assert_eq!(
        reason(w.purges.purge("admin", &tenant, "", true).await),
        Reason::LegalHold
    );
    w.tenants
        .release_legal_hold(&tenant, "case closed", "")
        .await
        .expect("release");
    assert_eq!(reason(w.purges.get(&tenant).await), Reason::PurgeNotFound);
    let unknown = TenantId::from_uuid(uuid::Uuid::now_v7())
        .unwrap()
        .to_string();
    assert_eq!(
        reason(w.purges.purge("admin", &unknown, "", true).await),
        Reason::TenantNotFound
    );

    let (_, first) = w
        .purges
        .purge("admin", &tenant, "", true)
        .await
        .expect("purge");
    let (again, second) = w
        .purges
        .purge("admin", &tenant, "v1", false)
        .await
        .expect("a second request answers with the started purge");
    assert_eq!(again.status(), TenantStatus::Purging);
    assert_eq!(first, second);
    assert_eq!(
        reason(w.tenants.set_legal_hold(&tenant, "too late", "").await),
        Reason::PurgeInProgress
    );
    assert_eq!(
        reason(w.tenants.undelete(&tenant, "").await),
        Reason::PurgeInProgress
    );

    let live = w.deleted("live").await;
    w.tenants
        .undelete(&live.to_string(), "")
        .await
        .expect("undelete");
    assert_eq!(
        reason(w.purges.purge("admin", &live.to_string(), "", true).await),
        Reason::InvalidTransition
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_step_is_retried_with_backoff_until_it_succeeds_and_the_next_waits() {
    let w = world();
    let id = w.deleted("flaky").await;
    w.dns.failures.store(3, Ordering::SeqCst);
    w.purges
        .purge("admin", &id.to_string(), "", true)
        .await
        .expect("purge");
    w.work().await;
    let purge = w.purges.get(&id.to_string()).await.unwrap();
    let dns = purge.step(PurgeStepKind::Dns);
    assert_eq!(
        purge.step(PurgeStepKind::Database).state,
        PurgeStepState::Succeeded
    );
    assert_eq!(dns.state, PurgeStepState::Pending);
    assert_eq!(dns.attempts, 1);
    assert_eq!(
        dns.last_error.as_ref().map(|e| e.reason.as_str()),
        Some("DNS_PROVIDER_UNAVAILABLE")
    );
    assert_eq!(
        purge.step(PurgeStepKind::Billing).attempts,
        0,
        "the next step waits"
    );
    assert_eq!(w.status(id).await, TenantStatus::Purging);
    // Its keys are not revoked yet, and already never verify; no new key is made.
    let secret = w.secret.lock().unwrap().clone().expect("a secret");
    assert_eq!(w.keys.verify(&secret).await.expect("verify"), None);
    let refused = w
        .keys
        .create(CreateApiKey {
            tenant_id: id.to_string(),
            display_name: "late".into(),
            scopes: vec!["tenants.read".into()],
            expires_at: None,
        })
        .await;
    assert_eq!(reason(refused), Reason::PurgeInProgress);

    // Past the policy's attempts, it still retries, at the longest delay at most.
    for _ in 0..3 {
        w.clock.advance(Duration::milliseconds(400));
        w.work().await;
    }
    let purge = w.purges.get(&id.to_string()).await.unwrap();
    assert!(purge.is_done(), "{purge:?}");
    assert_eq!(purge.step(PurgeStepKind::Dns).attempts, 4);
    assert_eq!(w.status(id).await, TenantStatus::Purged);
    let failed = w.seen.lines().iter().filter(|l| *l == "DNS failed").count();
    assert_eq!(failed, 3);
}

#[tokio::test(start_paused = true)]
async fn a_step_left_running_by_a_lost_worker_is_retried_once_its_lease_expires() {
    let w = world();
    let id = w.deleted("lost").await;
    w.purges
        .purge("admin", &id.to_string(), "", true)
        .await
        .expect("purge");
    // A worker claims the purge and marks its first step running, then dies.
    let claimed = w
        .store
        .claim("dead", w.clock.now(), Duration::seconds(30))
        .await
        .unwrap()
        .expect("due");
    let mut running = claimed.purge.clone();
    running
        .start(PurgeStepKind::Database, w.clock.now())
        .unwrap();
    running.version += 1;
    w.store
        .save(tenantd_domain::ports::PurgeWrite {
            purge: &running,
            expected_version: claimed.purge.version,
            lease: &claimed.lease,
            renew_until: w.clock.now() + Duration::seconds(30),
            tenant: None,
            events: &[],
        })
        .await
        .unwrap();
    w.work().await;
    assert!(
        !w.purges.get(&id.to_string()).await.unwrap().is_done(),
        "leased: nobody else touches it"
    );
    w.clock.advance(Duration::seconds(31));
    w.work().await;
    w.clock.advance(Duration::milliseconds(400));
    w.work().await;
    let purge = w.purges.get(&id.to_string()).await.unwrap();
    assert!(purge.is_done());
    let database = purge.step(PurgeStepKind::Database);
    assert_eq!(database.attempts, 2, "the lost attempt counts");
    assert_eq!(
        database.last_error.as_ref().map(|e| e.reason.as_str()),
        Some("WORKER_LOST")
    );
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_purges_only_tenants_past_their_retention_and_frees_old_slugs() {
    let w = world();
    let due = w.deleted("due").await;
    w.clock.advance(Duration::days(20));
    let recent = w.deleted("recent").await;
    let held = w.deleted("held").await;
    w.tenants
        .set_legal_hold(&held.to_string(), "audit", "")
        .await
        .unwrap();
    w.clock.advance(Duration::days(11));

    let swept = w.engine.sweep().await.expect("sweep");
    assert_eq!(swept.started, 1);
    assert_eq!(w.status(due).await, TenantStatus::Purging);
    assert_eq!(w.status(recent).await, TenantStatus::Deleted);
    assert_eq!(w.status(held).await, TenantStatus::Deleted);
    let purge = w.purges.get(&due.to_string()).await.unwrap();
    assert_eq!(purge.requested_by, "retention");
    assert!(!purge.forced);
    assert_eq!(w.engine.sweep().await.unwrap().started, 0, "started once");
    w.work().await;
    assert_eq!(w.status(due).await, TenantStatus::Purged);

    // The slug stays reserved for the reuse window, then is freed.
    let reuse = |slug: &str| CreateTenant {
        tenant: TenantFields {
            slug: slug.into(),
            display_name: "Acme again".into(),
            plan_id: "pro".into(),
            contact_email: "ops@again.example".into(),
            ..TenantFields::default()
        },
        request_id: String::new(),
    };
    assert_eq!(
        reason(w.tenants.create(reuse("due")).await),
        Reason::SlugTaken
    );
    w.clock.advance(Duration::days(91));
    assert_eq!(w.engine.sweep().await.unwrap().slugs_released, 1);
    w.tenants
        .create(reuse("due"))
        .await
        .expect("the slug is free again");
    assert!(
        w.seen
            .lines()
            .contains(&"started sweeper=true forced=false".to_owned())
    );
}

#[tokio::test(start_paused = true)]
async fn a_purge_waits_for_the_provisioning_run_and_deletes_the_tenants_exports() {
    use tenantd_domain::export::{Export, ExportArchive, ExportId};
    use tenantd_domain::ports::{ArchiveFile, ExportArchives as _, ExportRepository};

    let w = world();
    // Deleted while its provisioning run is still to run: the run is cancelled and undone
    // by the provisioning engine, and the purge waits for that.
    let id = w
        .tenants
        .create(CreateTenant {
            tenant: TenantFields {
                slug: "early".into(),
                display_name: "Early".into(),
                plan_id: "pro".into(),
                contact_email: "ops@early.example".into(),
                ..TenantFields::default()
            },
            request_id: String::new(),
        })
        .await
        .unwrap()
        .id();
    w.tenants.delete(&id.to_string(), "").await.unwrap();
    // An export of it, with its archive.
    let export = Export::new(
        ExportId(uuid::Uuid::now_v7()),
        id,
        "admin".into(),
        w.clock.now(),
        Duration::hours(72),
    );
    ExportRepository::create(&w.store, &export).await.unwrap();
    let name = format!("{}-1.tar.gz", export.id);
    let mut writer = w.archives.begin(&name).await.unwrap();
    writer.file("tenant.json", b"{}").await.unwrap();
    let manifest = |_: &[tenantd_domain::ports::ArchivedFile]| ArchiveFile {
        path: "manifest.json".into(),
        bytes: b"{}".to_vec(),
    };
    let archive: ExportArchive = writer.finish(&manifest).await.unwrap();
    let claimed = ExportRepository::claim(&w.store, "x", w.clock.now(), Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    let mut done = claimed.export.clone();
    done.start(w.clock.now()).unwrap();
    done.succeed(archive, w.clock.now()).unwrap();
    done.version = 2;
    ExportRepository::save(&w.store, &done, 1, &claimed.lease, w.clock.now())
        .await
        .unwrap();

    w.purges
        .purge("admin", &id.to_string(), "", true)
        .await
        .unwrap();
    w.work().await;
    let purge = w.purges.get(&id.to_string()).await.unwrap();
    let database = purge.step(PurgeStepKind::Database);
    assert_eq!(database.state, PurgeStepState::Pending, "{purge:?}");
    assert_eq!(
        database.last_error.as_ref().map(|e| e.reason.as_str()),
        Some("PROVISIONING_IN_PROGRESS")
    );

    // The provisioning engine cancels the run of the purging tenant and undoes it.
    while w.provisioning.work_once("p").await.unwrap() {}
    for _ in 0..3 {
        w.clock.advance(Duration::milliseconds(400));
        w.work().await;
    }
    let purge = w.purges.get(&id.to_string()).await.unwrap();
    assert!(purge.is_done(), "{purge:?}");
    assert_eq!(
        ExportRepository::get(&w.store, export.id).await.unwrap(),
        None,
        "the export is gone"
    );
    assert!(!w.dir.path().join(&name).exists(), "and its archive");
}

//! Unit tests of exports: the in-memory store and tenant databases, archives in a scratch
//! directory on disk (the real file-system adapter), a clock the test moves.

use std::io::Read as _;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, TimeZone as _, Utc};
use sha2::{Digest as _, Sha256};
use tenantd_adapters::archives::FsExportArchives;
use tenantd_adapters::crypto::KeyRing;
use tenantd_adapters::memory::{
    MemoryBilling, MemoryDns, MemoryPlanRepository, MemoryStore, MemoryTenantDatabases,
};
use tenantd_adapters::system::{OsRandom, UuidV7Generator};
use tenantd_domain::export::ExportState;
use tenantd_domain::ports::{Clock, ExportRepository, PurgeRepository};
use tenantd_domain::provisioning::RetryPolicy;
use tenantd_domain::{Error, Reason, TenantId};

use super::{ExportEngine, ExportObserver, ExportService, ExportSettings, ExportSources, MANIFEST};
use crate::digest::hex;
use crate::provisioning::{Engine, Providers, StepPorts};
use crate::tenants::{CreateTenant, TenantFields, TenantService, TenantSettings};
use crate::testing::{TestClock, provisioning_engine, shared_placement};

#[derive(Default)]
struct Seen(Mutex<Vec<String>>);

impl ExportObserver for Seen {
    fn attempt(&self, result: &'static str, _: StdDuration) {
        self.0.lock().unwrap().push(result.to_owned());
    }
    fn written(&self, _: u64) {}
    fn expired(&self, n: u64) {
        self.0.lock().unwrap().push(format!("expired {n}"));
    }
}

struct World {
    store: MemoryStore,
    clock: Arc<TestClock>,
    tenants: TenantService,
    provisioning: Engine,
    exports: ExportService,
    engine: ExportEngine,
    dir: tempfile::TempDir,
    seen: Arc<Seen>,
}

fn retry() -> RetryPolicy {
    RetryPolicy {
        base: Duration::milliseconds(100),
        max_delay: Duration::milliseconds(400),
        max_attempts: 2,
    }
}

/// A world whose archives go to `exports` under a scratch directory (`blocked`: a file
/// sits where the directory should be).
/// Archives on disk whose writes wait until the test opens the gate: at their start, or
/// (`at_finish`) once every file is spooled.
struct Gated {
    inner: FsExportArchives,
    gate: Arc<tokio::sync::Notify>,
    at_finish: bool,
}

/// An archive writer that waits for the gate before it finishes.
struct GatedWriter {
    inner: Box<dyn tenantd_domain::ports::ArchiveWriter>,
    gate: Arc<tokio::sync::Notify>,
}

#[async_trait::async_trait]
impl tenantd_domain::ports::ArchiveWriter for GatedWriter {
    async fn file(
        &mut self,
        path: &str,
        bytes: &[u8],
    ) -> Result<(), tenantd_domain::provisioning::StepError> {
        self.inner.file(path, bytes).await
    }

    async fn open(&mut self, path: &str) -> Result<(), tenantd_domain::provisioning::StepError> {
        self.inner.open(path).await
    }

    async fn append(
        &mut self,
        bytes: &[u8],
    ) -> Result<(), tenantd_domain::provisioning::StepError> {
        self.inner.append(bytes).await
    }

    async fn finish(
        self: Box<Self>,
        manifest: &tenantd_domain::ports::ManifestOf,
    ) -> Result<tenantd_domain::export::ExportArchive, tenantd_domain::provisioning::StepError>
    {
        self.gate.notified().await;
        self.inner.finish(manifest).await
    }
}

#[async_trait::async_trait]
impl tenantd_domain::ports::ExportArchives for Gated {
    async fn begin(
        &self,
        name: &str,
    ) -> Result<
        Box<dyn tenantd_domain::ports::ArchiveWriter>,
        tenantd_domain::provisioning::StepError,
    > {
        if self.at_finish {
            let inner = self.inner.begin(name).await?;
            return Ok(Box::new(GatedWriter {
                inner,
                gate: self.gate.clone(),
            }));
        }
        self.gate.notified().await;
        self.inner.begin(name).await
    }

    async fn read(
        &self,
        name: &str,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, tenantd_domain::RepoError> {
        self.inner.read(name, offset, len).await
    }

    async fn list(&self) -> Result<Vec<(String, DateTime<Utc>)>, tenantd_domain::RepoError> {
        self.inner.list().await
    }

    async fn delete(&self, name: &str) -> Result<(), tenantd_domain::RepoError> {
        self.inner.delete(name).await
    }
}

fn world(blocked: bool) -> World {
    world_gated(blocked, None)
}

/// [`world`], its archive writes held by `gate` (at their start, or at their finish) when
/// there is one.
fn world_gated(blocked: bool, gate: Option<(Arc<tokio::sync::Notify>, bool)>) -> World {
    let ring = Arc::new(KeyRing::generate("test"));
    let store = MemoryStore::with_cipher(ring.clone());
    let clock = Arc::new(TestClock(Mutex::new(
        Utc.with_ymd_and_hms(2026, 12, 2, 9, 0, 0).unwrap(),
    )));
    let ids = Arc::new(UuidV7Generator);
    let plans = Arc::new(MemoryPlanRepository::default());
    let databases = Arc::new(MemoryTenantDatabases::default());
    let placement = Arc::new(shared_placement());
    let steps = StepPorts {
        providers: Providers {
            databases: databases.clone(),
            dns: Arc::new(MemoryDns::new(
                "tenants.example.test",
                [192, 0, 2, 1].into(),
            )),
            billing: Arc::new(MemoryBilling::default()),
        },
        initial_keys: Arc::new(store.clone()),
        api_keys: Arc::new(store.clone()),
        plans: plans.clone(),
        sealer: ring,
        data_keys: Arc::new(store.clone()),
        secrets: Arc::new(OsRandom),
        ids: ids.clone(),
        schemas: Arc::new(store.clone()),
        placement: placement.clone(),
    };
    let provisioning = provisioning_engine(&store, steps, clock.clone(), retry());
    let dir = tempfile::tempdir().unwrap();
    if blocked {
        std::fs::write(dir.path().join("exports"), b"not a directory").unwrap();
    }
    let seen = Arc::new(Seen::default());
    let exports = ExportService::new(
        Arc::new(store.clone()),
        match gate {
            Some((gate, at_finish)) => Arc::new(Gated {
                inner: FsExportArchives::new(dir.path().join("exports")),
                gate,
                at_finish,
            }),
            None => Arc::new(FsExportArchives::new(dir.path().join("exports"))),
        },
        Arc::new(store.clone()),
        clock.clone(),
        ids.clone(),
        ExportSettings {
            workers: 1,
            lease: StdDuration::from_secs(30),
            poll_interval: StdDuration::from_millis(100),
            attempt_timeout: StdDuration::from_secs(30),
            retry: retry(),
            retention: Duration::hours(72),
        },
        seen.clone(),
    );
    let engine = exports.engine(
        Arc::new(store.clone()),
        ExportSources {
            tenants: Arc::new(store.clone()),
            events: Arc::new(store.clone()),
            api_keys: Arc::new(store.clone()),
            dumps: databases,
            placement: placement.clone(),
        },
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
        placement,
    );
    World {
        store,
        clock,
        tenants,
        provisioning,
        exports,
        engine,
        dir,
        seen,
    }
}

impl World {
    async fn active(&self, slug: &str) -> TenantId {
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
                request_id: String::new(),
            })
            .await
            .expect("create")
            .id();
        while self.provisioning.work_once("p").await.expect("provision") {}
        id
    }

    async fn work(&self) {
        while self.engine.work_once("w").await.expect("work") {}
    }

    /// The archive of a succeeded export, downloaded chunk by chunk.
    async fn download(&self, tenant: TenantId, export: &str) -> Vec<u8> {
        let download = self
            .exports
            .download(&tenant.to_string(), export)
            .await
            .expect("download");
        let mut bytes = Vec::new();
        loop {
            let chunk = download.chunk(bytes.len() as u64).await.expect("chunk");
            if chunk.is_empty() {
                break;
            }
            bytes.extend(chunk);
        }
        assert_eq!(bytes.len() as u64, download.size);
        assert_eq!(hex(&Sha256::digest(&bytes)), download.sha256);
        bytes
    }
}

/// The files of a tar.gz, by path, in order.
fn entries(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    tar.entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let mut body = Vec::new();
            entry.read_to_end(&mut body).unwrap();
            (entry.path().unwrap().display().to_string(), body)
        })
        .collect()
}

fn reason(result: Result<impl std::fmt::Debug, Error>) -> Reason {
    result.expect_err("refused").reason()
}

#[tokio::test(start_paused = true)]
async fn an_archive_holds_a_manifest_and_every_file_it_lists_with_their_hashes() {
    let w = world(false);
    let id = w.active("acme").await;
    let export = w
        .exports
        .export("admin", &id.to_string())
        .await
        .expect("export");
    assert_eq!(export.state, ExportState::Running);
    w.work().await;
    let done = w
        .exports
        .get(&id.to_string(), &export.id.to_string())
        .await
        .unwrap();
    assert_eq!(done.state, ExportState::Succeeded, "{done:?}");
    assert_eq!(done.attempts, 1);

    let files = entries(&w.download(id, &export.id.to_string()).await);
    let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            MANIFEST,
            "tenant.json",
            "events.jsonl",
            "api_keys.json",
            "schema/schema_migrations.sql",
            "schema/schema_migrations.csv"
        ]
    );
    assert_eq!(done.archive.as_ref().unwrap().files, 6);
    let manifest: serde_json::Value = serde_json::from_slice(&files[0].1).unwrap();
    assert_eq!(manifest["format_version"], 1);
    assert_eq!(manifest["tenant_id"], id.to_string());
    assert_eq!(manifest["slug"], "acme");
    let listed = manifest["files"].as_array().unwrap();
    assert_eq!(listed.len(), files.len() - 1);
    for (entry, (path, body)) in listed.iter().zip(&files[1..]) {
        assert_eq!(entry["path"], path.as_str());
        assert_eq!(entry["size"], body.len());
        assert_eq!(entry["sha256"], hex(&Sha256::digest(body)));
    }
    let tenant: serde_json::Value = serde_json::from_slice(&files[1].1).unwrap();
    assert_eq!(
        tenant["contact_email"], "ops@acme.example",
        "the address opened"
    );
    assert_eq!(tenant["status"], "ACTIVE");
    let events = String::from_utf8(files[2].1.clone()).unwrap();
    assert!(events.lines().count() > 5);
    assert!(
        events
            .lines()
            .next()
            .unwrap()
            .contains("tenant.v1.TenantCreated")
    );
    assert!(
        !events.contains("ops@acme.example"),
        "events never carry the address"
    );
    let keys: serde_json::Value = serde_json::from_slice(&files[3].1).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 1, "the first admin key");
    let keys_text = String::from_utf8(files[3].1.clone()).unwrap();
    assert!(!keys_text.contains("hash") && !keys_text.contains("secret"));
    let csv = String::from_utf8(files[5].1.clone()).unwrap();
    assert!(csv.starts_with("version,name,checksum\n"), "{csv}");
    assert!(csv.lines().count() > 1);
}

#[tokio::test(start_paused = true)]
async fn an_unwritable_directory_fails_the_export_with_its_reason_and_nothing_to_download() {
    let w = world(true);
    let id = w.active("blocked").await;
    let export = w.exports.export("admin", &id.to_string()).await.unwrap();
    w.work().await;
    let running = w
        .exports
        .get(&id.to_string(), &export.id.to_string())
        .await
        .unwrap();
    assert_eq!(running.state, ExportState::Running, "retried");
    assert_eq!(
        running.last_error.as_ref().map(|e| e.reason.as_str()),
        Some("EXPORT_DIR_UNWRITABLE")
    );
    w.clock.advance(Duration::milliseconds(400));
    w.work().await;
    let failed = w
        .exports
        .get(&id.to_string(), &export.id.to_string())
        .await
        .unwrap();
    assert_eq!(failed.state, ExportState::Failed);
    assert_eq!(failed.attempts, 2);
    assert_eq!(failed.archive, None);
    assert_eq!(
        reason(
            w.exports
                .download(&id.to_string(), &export.id.to_string())
                .await
        ),
        Reason::ExportNotReady
    );
    assert_eq!(
        std::fs::read(w.dir.path().join("exports")).unwrap(),
        b"not a directory"
    );
}

#[tokio::test(start_paused = true)]
async fn exports_are_the_tenants_own_and_a_purged_tenant_has_none() {
    let w = world(false);
    let a = w.active("alpha").await;
    let b = w.active("bravo").await;
    let export = w.exports.export("admin", &a.to_string()).await.unwrap();
    w.work().await;
    assert_eq!(
        reason(w.exports.get(&b.to_string(), &export.id.to_string()).await),
        Reason::ExportNotFound,
        "another tenant's export is not found"
    );
    assert_eq!(
        reason(
            w.exports
                .download(&b.to_string(), &export.id.to_string())
                .await
        ),
        Reason::ExportNotFound
    );
    assert_eq!(
        reason(w.exports.get(&a.to_string(), "not-a-uuid").await),
        Reason::FieldInvalid
    );

    w.tenants.delete(&b.to_string(), "").await.unwrap();
    let mut tenant = tenantd_domain::ports::TenantRepository::get(&w.store, b)
        .await
        .unwrap()
        .unwrap();
    let version = tenant.version();
    tenant.begin_purge(true, w.clock.now()).unwrap();
    let purge = tenantd_domain::purge::Purge::new(b, true, "admin".into(), w.clock.now());
    w.store.start(&tenant, version, &purge, &[]).await.unwrap();
    let claimed = PurgeRepository::claim(&w.store, "p", w.clock.now(), Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    let mut done = purge.clone();
    for kind in tenantd_domain::purge::PurgeStepKind::ORDER {
        done.start(kind, w.clock.now()).unwrap();
        done.succeed(kind, w.clock.now()).unwrap();
    }
    done.version = 2;
    let version = tenant.version();
    tenant.tombstone(w.clock.now()).unwrap();
    PurgeRepository::save(
        &w.store,
        tenantd_domain::ports::PurgeWrite {
            purge: &done,
            expected_version: 1,
            lease: &claimed.lease,
            renew_until: w.clock.now(),
            tenant: Some((&tenant, version)),
            events: &[],
        },
    )
    .await
    .unwrap();
    assert_eq!(
        reason(w.exports.export("admin", &b.to_string()).await),
        Reason::TenantPurged
    );
}

#[tokio::test(start_paused = true)]
async fn a_lost_attempt_counts_and_the_next_one_writes_the_archive() {
    let w = world(false);
    let id = w.active("lost").await;
    let export = w.exports.export("admin", &id.to_string()).await.unwrap();
    let claimed = ExportRepository::claim(&w.store, "dead", w.clock.now(), Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    let mut started = claimed.export.clone();
    started.start(w.clock.now()).unwrap();
    started.version += 1;
    ExportRepository::save(
        &w.store,
        &started,
        1,
        &claimed.lease,
        w.clock.now() + Duration::seconds(30),
    )
    .await
    .unwrap();
    w.work().await;
    assert_eq!(
        ExportRepository::get(&w.store, export.id)
            .await
            .unwrap()
            .unwrap()
            .state,
        ExportState::Running,
        "leased: nobody else touches it"
    );
    w.clock.advance(Duration::seconds(31));
    w.work().await;
    w.clock.advance(Duration::milliseconds(400));
    w.work().await;
    let done = ExportRepository::get(&w.store, export.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.state, ExportState::Succeeded, "{done:?}");
    assert_eq!(done.attempts, 2);
    assert_eq!(
        done.archive.unwrap().name,
        format!("{}-2.tar.gz", export.id)
    );
    assert!(w.seen.0.lock().unwrap().contains(&"lost".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_deletes_expired_exports_and_their_archives() {
    let w = world(false);
    let id = w.active("expiring").await;
    let export = w.exports.export("admin", &id.to_string()).await.unwrap();
    w.work().await;
    let name = ExportRepository::get(&w.store, export.id)
        .await
        .unwrap()
        .unwrap()
        .archive
        .unwrap()
        .name;
    assert!(w.dir.path().join("exports").join(&name).exists());
    assert_eq!(w.engine.sweep().await.unwrap(), 0, "not expired yet");
    w.clock.advance(Duration::hours(73));
    assert_eq!(w.engine.sweep().await.unwrap(), 1);
    assert!(!w.dir.path().join("exports").join(&name).exists());
    assert_eq!(
        reason(w.exports.get(&id.to_string(), &export.id.to_string()).await),
        Reason::ExportNotFound
    );
    assert!(w.seen.0.lock().unwrap().contains(&"expired 1".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_deletes_stray_files_once_old_and_keeps_recorded_archives() {
    let w = world(false);
    let id = w.active("strays").await;
    let export = w.exports.export("admin", &id.to_string()).await.unwrap();
    w.work().await;
    let name = ExportRepository::get(&w.store, export.id)
        .await
        .unwrap()
        .unwrap()
        .archive
        .unwrap()
        .name;
    let dir = w.dir.path().join("exports");
    // A writer killed mid-write, an archive whose save was lost; and someone else's file.
    let strays = [
        format!(".{}-2.tar.gz.partial", export.id),
        format!("{}-3.tar.gz", export.id),
        format!(".{}-4.tar.gz.spool", export.id),
    ];
    for stray in &strays[..2] {
        std::fs::write(dir.join(stray), b"stray").unwrap();
    }
    std::fs::create_dir(dir.join(&strays[2])).unwrap();
    std::fs::write(dir.join(&strays[2]).join("0"), b"spooled").unwrap();
    std::fs::write(dir.join("notes.txt"), b"not ours").unwrap();
    w.engine.sweep().await.unwrap();
    for stray in &strays {
        assert!(dir.join(stray).exists(), "{stray} is too new to be judged");
    }
    // The files' times are the real clock's: move the test clock past them.
    w.clock
        .advance(Duration::hours(1) + (Utc::now() - w.clock.now()).max(Duration::zero()));
    w.engine.sweep().await.unwrap();
    for stray in &strays {
        assert!(!dir.join(stray).exists(), "{stray} is deleted");
    }
    assert!(dir.join(&name).exists(), "the recorded archive stays");
    assert!(
        dir.join("notes.txt").exists(),
        "a file not named as an export's stays"
    );
}

#[tokio::test(start_paused = true)]
async fn an_attempt_that_times_out_is_stopped_and_the_next_one_writes_the_archive() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let w = Arc::new(world_gated(false, Some((gate.clone(), false))));
    let id = w.active("slow").await;
    let export = w.exports.export("admin", &id.to_string()).await.unwrap();
    // The archive's store does not answer: past the attempt's 30 s, the attempt is stopped.
    let worked = tokio::time::timeout(StdDuration::from_mins(1), w.engine.work_once("w"))
        .await
        .expect("the timed-out attempt is stopped, not waited for");
    assert!(worked.unwrap());
    let after = ExportRepository::get(&w.store, export.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.state, ExportState::Running, "retried later");
    assert_eq!(
        after.last_error.as_ref().map(|e| e.reason.as_str()),
        Some("EXPORT_TIMEOUT")
    );
    let left: Vec<_> = std::fs::read_dir(w.dir.path().join("exports"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "nothing of the stopped attempt is left: {left:?}"
    );
    // The store answers again: the next attempt writes it.
    gate.notify_one();
    w.clock.advance(Duration::milliseconds(400));
    w.work().await;
    let done = ExportRepository::get(&w.store, export.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.state, ExportState::Succeeded, "{done:?}");
    assert_eq!(done.attempts, 2);
}

#[tokio::test(start_paused = true)]
async fn the_progress_of_an_attempt_in_flight_is_recorded_with_its_lease() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let w = Arc::new(world_gated(false, Some((gate.clone(), true))));
    let id = w.active("progress").await;
    let export = w.exports.export("admin", &id.to_string()).await.unwrap();
    let worker = {
        let w = w.clone();
        tokio::spawn(async move { w.engine.work_once("w").await })
    };
    // Every file is spooled, the archive waits to be finished; a renewal (every 10 s of
    // the 30 s lease) records how far it got.
    tokio::time::sleep(StdDuration::from_secs(11)).await;
    let running = w
        .exports
        .get(&id.to_string(), &export.id.to_string())
        .await
        .unwrap();
    assert_eq!(running.state, ExportState::Running);
    assert_eq!(
        running.progress.files, 5,
        "tenant, events, keys, the table's DDL and rows"
    );
    assert!(running.progress.bytes > 0);
    gate.notify_one();
    assert!(worker.await.unwrap().unwrap());
    let done = w
        .exports
        .get(&id.to_string(), &export.id.to_string())
        .await
        .unwrap();
    assert_eq!(done.state, ExportState::Succeeded);
    assert_eq!(done.progress, running.progress, "the final count");
}

#[tokio::test(start_paused = true)]
async fn a_failed_attempt_keeps_how_far_it_got() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let w = world_gated(false, Some((gate, true)));
    let id = w.active("stalled").await;
    let export = w.exports.export("admin", &id.to_string()).await.unwrap();
    // Every file spooled, the finish never comes: the attempt times out.
    assert!(w.engine.work_once("w").await.unwrap());
    let failed = ExportRepository::get(&w.store, export.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        failed.last_error.as_ref().map(|e| e.reason.as_str()),
        Some("EXPORT_TIMEOUT")
    );
    assert_eq!(
        failed.progress.files, 5,
        "what the stopped attempt had spooled"
    );
}

//! The export engine: workers claim due exports under a lease and write their archives,
//! one attempt at a time. An attempt is stored as it starts and as it ends; a worker lost
//! mid-attempt leaves the export to another once the lease expires (the lost attempt
//! counts, and whatever it wrote is under a name of its own, never offered).

use std::time::Instant;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tokio_util::task::AbortOnDropHandle;

use tenantd_domain::export::{Export, ExportArchive, ExportProgress};
use tenantd_domain::ports::{ArchiveWriter, DumpSink, Lease};
use tenantd_domain::provisioning::StepError;
use tenantd_domain::{ApiKeyId, Error, EventId};

use super::{ExportService, ExportSources, archive};
use crate::lease::{Held, Stop, renewing};
use crate::provisioning::{jitter, store_error};

/// Events and keys read per page.
const PAGE: usize = 500;

/// How far an attempt got, shared by the attempt (which counts) and the lease renewals
/// (which record it).
#[derive(Debug, Default)]
struct Counted {
    files: AtomicU32,
    bytes: AtomicU64,
}

impl Counted {
    fn now(&self) -> ExportProgress {
        ExportProgress {
            files: self.files.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

/// An archive writer that counts what goes through it.
struct Counting {
    inner: Box<dyn ArchiveWriter>,
    counted: Arc<Counted>,
}

#[async_trait::async_trait]
impl ArchiveWriter for Counting {
    async fn file(&mut self, path: &str, bytes: &[u8]) -> Result<(), StepError> {
        self.inner.file(path, bytes).await?;
        self.counted.files.fetch_add(1, Ordering::Relaxed);
        self.counted
            .bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn open(&mut self, path: &str) -> Result<(), StepError> {
        self.inner.open(path).await?;
        self.counted.files.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn append(&mut self, bytes: &[u8]) -> Result<(), StepError> {
        self.inner.append(bytes).await?;
        self.counted
            .bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn finish(
        self: Box<Self>,
        manifest: &tenantd_domain::ports::ManifestOf,
    ) -> Result<ExportArchive, StepError> {
        self.inner.finish(manifest).await
    }
}

/// A dump's tables, each as its DDL file and its CSV file of the archive.
struct Tables<'a> {
    writer: &'a mut dyn ArchiveWriter,
}

#[async_trait::async_trait]
impl DumpSink for Tables<'_> {
    async fn table(&mut self, name: &str, ddl: &str) -> Result<(), StepError> {
        let (sql, csv) = archive::table_paths(name);
        self.writer.file(&sql, ddl.as_bytes()).await?;
        self.writer.open(&csv).await
    }

    async fn rows(&mut self, csv: &[u8]) -> Result<(), StepError> {
        self.writer.append(csv).await
    }
}

/// The export engine of one replica. Cheap to clone; every worker is a clone.
#[derive(Clone)]
pub struct ExportEngine {
    service: ExportService,
    sources: ExportSources,
}

impl std::fmt::Debug for ExportEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportEngine")
            .field("settings", &self.service.settings)
            .finish_non_exhaustive()
    }
}

impl ExportEngine {
    pub(super) fn new(service: ExportService, sources: ExportSources) -> Self {
        Self { service, sources }
    }

    /// The settings.
    pub fn settings(&self) -> &super::ExportSettings {
        &self.service.settings
    }

    /// One round of the sweeper (see [`ExportService::sweep`]).
    ///
    /// # Errors
    /// Store failures (the next round tries again).
    pub async fn sweep(&self) -> Result<u64, Error> {
        self.service.sweep().await
    }

    /// Waits until a worker should look for work again.
    pub async fn idle(&self) {
        tokio::select! {
            () = self.service.wake.notified() => {}
            () = tokio::time::sleep(self.service.settings.poll_interval) => {}
        }
    }

    /// Claims one due export as `worker` and works on it. Returns whether there was one.
    ///
    /// # Errors
    /// Store failures (the export is released and picked up again later).
    pub async fn work_once(&self, worker: &str) -> Result<bool, Error> {
        let service = &self.service;
        let Some(claimed) = service
            .exports
            .claim(worker, service.now(), self.lease_for())
            .await?
        else {
            return Ok(false);
        };
        let mut export = claimed.export;
        let lease = claimed.lease;
        let outcome = self.drive(&mut export, &lease).await;
        if let Err(err) = service.exports.release(export.id, &lease).await {
            tracing::warn!(export_id = %export.id, error = %err, "cannot release an export lease");
        }
        match outcome {
            Ok(()) => Ok(true),
            Err(Stop::Superseded) => {
                tracing::info!(export_id = %export.id, "the export changed under this worker; it stops");
                Ok(true)
            }
            Err(Stop::Failed(err)) => Err(err),
        }
    }

    async fn drive(&self, export: &mut Export, lease: &Lease) -> Result<(), Stop> {
        if export.attempt_started_at.is_some() {
            // Claimed mid-attempt: the worker that started it stopped.
            self.service
                .observer
                .attempt("lost", std::time::Duration::ZERO);
            let lost = StepError::new(
                "WORKER_LOST",
                "the worker writing this export stopped before it finished",
            );
            self.fail(export, lease, lost).await?;
        }
        if export.due_at().is_none_or(|due| due > self.service.now()) {
            return Ok(());
        }
        let mut next = export.clone();
        next.start(self.service.now())?;
        self.store(export, next, lease).await?;
        let name = format!("{}-{}.tar.gz", export.id, export.attempts);
        tracing::info!(tenant_id = %export.tenant_id, export_id = %export.id, attempt = export.attempts, "export attempt started");
        let started = Instant::now();
        let (outcome, progress) = self.attempt(export, lease, &name).await?;
        // What the attempt got to is stored with its end, succeeded or not.
        export.progress = progress;
        let elapsed = started.elapsed();
        let error = match outcome {
            Some(Ok(archive)) => match self.still_exportable(export).await {
                Ok(()) => {
                    self.service.observer.attempt("succeeded", elapsed);
                    self.service.observer.written(archive.size);
                    let mut next = export.clone();
                    next.succeed(archive, self.service.now())?;
                    if let Err(stop) = self.store(export, next, lease).await {
                        // Never offered: another worker owns the export now.
                        let _gone = self.service.archives.delete(&name).await;
                        return Err(stop);
                    }
                    tracing::info!(tenant_id = %export.tenant_id, export_id = %export.id, bytes = export.archive.as_ref().map_or(0, |a| a.size), "export written");
                    return Ok(());
                }
                Err(error) => {
                    let _gone = self.service.archives.delete(&name).await;
                    self.service.observer.attempt("failed", elapsed);
                    error
                }
            },
            Some(Err(error)) => {
                self.service.observer.attempt("failed", elapsed);
                error
            }
            None => {
                self.service.observer.attempt("timeout", elapsed);
                StepError::new(
                    "EXPORT_TIMEOUT",
                    format!(
                        "the attempt did not finish within {}ms",
                        self.service.settings.attempt_timeout.as_millis()
                    ),
                )
            }
        };
        self.fail(export, lease, error).await
    }

    /// Runs one attempt — read everything of the tenant, write archive `name` — as a task
    /// under the lease: `Some` with its outcome, `None` when it timed out, and how far it
    /// got. A timed-out or
    /// superseded attempt is stopped and waited for, and what it wrote deleted (a file its
    /// writer still renames into place after that is the sweeper's, as a stray).
    async fn attempt(
        &self,
        export: &Export,
        lease: &Lease,
        name: &str,
    ) -> Result<(Option<Result<ExportArchive, StepError>>, ExportProgress), Stop> {
        let (engine, job, owned) = (self.clone(), export.clone(), name.to_owned());
        let counted = Arc::new(Counted::default());
        let for_task = counted.clone();
        // Aborted when this worker is dropped too (a shutdown past its grace period).
        let mut task = AbortOnDropHandle::new(tokio::spawn(async move {
            engine.write(&job, &owned, for_task).await
        }));
        let settings = &self.service.settings;
        let exports = &self.service.exports;
        // Each renewal also records how far the attempt got, for GetExport.
        let renew = |until| {
            let counted = counted.clone();
            async move {
                let held = exports
                    .renew(export.id, export.version, lease, until)
                    .await?;
                if held {
                    exports.progress(export.id, lease, counted.now()).await?;
                }
                Ok(held)
            }
        };
        let held = renewing(
            "export",
            &*self.service.clock,
            settings.lease,
            settings.attempt_timeout,
            &mut task,
            renew,
        )
        .await;
        match held {
            Held::Done(joined) => Ok((
                Some(joined.unwrap_or_else(|e| {
                    Err(StepError::new(
                        "EXPORT_WRITE_FAILED",
                        format!("the attempt stopped: {e}"),
                    ))
                })),
                counted.now(),
            )),
            Held::TimedOut | Held::Lost => {
                task.abort();
                let _stopped = task.await;
                let _gone = self.service.archives.delete(name).await;
                if matches!(held, Held::Lost) {
                    Err(Stop::Superseded)
                } else {
                    Ok((None, counted.now()))
                }
            }
        }
    }

    /// Reads everything of the export's tenant into archive `name`, streamed: events a page
    /// at a time, each table's rows as the database sends them.
    async fn write(
        &self,
        export: &Export,
        name: &str,
        counted: Arc<Counted>,
    ) -> Result<ExportArchive, StepError> {
        let sources = &self.sources;
        let id = export.tenant_id;
        let tenant = sources
            .tenants
            .get(id)
            .await
            .map_err(|e| store_error("cannot read the tenant", &e))?
            .ok_or_else(|| StepError::permanent("TENANT_NOT_FOUND", "the tenant is gone"))?;
        if tenant.status().is_purge() {
            return Err(StepError::permanent(
                "TENANT_PURGED",
                "the tenant's purge started while its export waited",
            ));
        }
        let mut writer: Box<dyn ArchiveWriter> = Box::new(Counting {
            inner: self.service.archives.begin(name).await?,
            counted,
        });
        writer
            .file("tenant.json", &archive::tenant_json(&tenant))
            .await?;
        writer.open("events.jsonl").await?;
        let mut after: Option<EventId> = None;
        loop {
            let page = sources
                .events
                .list(Some(id), after, PAGE)
                .await
                .map_err(|e| store_error("cannot read the events", &e))?;
            writer.append(&archive::event_lines(&page)).await?;
            after = page.last().map(|e| e.id);
            if page.len() < PAGE {
                break;
            }
        }
        let mut keys = Vec::new();
        let mut after: Option<ApiKeyId> = None;
        loop {
            let page = sources
                .api_keys
                .list(id, after, PAGE, None)
                .await
                .map_err(|e| store_error("cannot read the API keys", &e))?;
            after = page.last().map(|k| k.id);
            let full = page.len() == PAGE;
            keys.extend(page);
            if !full {
                break;
            }
        }
        writer
            .file("api_keys.json", &archive::api_keys_json(&keys))
            .await?;
        let placement = sources.placement.placement_of(&tenant);
        let mut tables = Tables {
            writer: &mut *writer,
        };
        sources.dumps.dump(id, &placement, &mut tables).await?;
        let manifest = archive::manifest(export.id, &tenant, self.service.now());
        writer.finish(&manifest).await
    }

    /// Whether the tenant may still be exported now the archive is written: not once its
    /// purge started (the purge deletes its exports; one written behind it must not stay).
    async fn still_exportable(&self, export: &Export) -> Result<(), StepError> {
        let tenant = self
            .sources
            .tenants
            .get(export.tenant_id)
            .await
            .map_err(|e| store_error("cannot read the tenant", &e))?;
        match tenant {
            Some(t) if !t.status().is_purge() => Ok(()),
            _ => Err(StepError::permanent(
                "TENANT_PURGED",
                "the tenant's purge started while it was exported",
            )),
        }
    }

    async fn fail(&self, export: &mut Export, lease: &Lease, error: StepError) -> Result<(), Stop> {
        let mut next = export.clone();
        next.fail(
            error.clone(),
            &self.service.settings.retry,
            jitter(&*self.service.ids),
            self.service.now(),
        )?;
        self.store(export, next, lease).await?;
        tracing::warn!(tenant_id = %export.tenant_id, export_id = %export.id, attempt = export.attempts, reason = %error.reason, message = %error.message, state = export.state.as_str(), "export attempt failed");
        Ok(())
    }

    async fn store(
        &self,
        export: &mut Export,
        mut next: Export,
        lease: &Lease,
    ) -> Result<(), Stop> {
        let expected = export.version;
        next.version = expected + 1;
        let until = self.service.now() + self.lease_for();
        self.service
            .exports
            .save(&next, expected, lease, until)
            .await?;
        *export = next;
        Ok(())
    }

    fn lease_for(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.service.settings.lease)
            .unwrap_or(chrono::Duration::seconds(30))
    }
}

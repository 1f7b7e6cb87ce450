//! [`ExportRepository`] on PostgreSQL: the `tenant_exports` table and the queue workers
//! claim exports from, with `FOR UPDATE SKIP LOCKED` and a fencing lease token like the
//! other durable runs.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tenantd_domain::export::{Export, ExportArchive, ExportId, ExportProgress, ExportState};
use tenantd_domain::ports::{ClaimedExport, ExportRepository, Lease};
use tenantd_domain::provisioning::StepError;
use tenantd_domain::{RepoError, TenantId};
use uuid::Uuid;

use super::PgStore;
use super::errors::db;
use super::leases::Queue;

/// The export queue.
const QUEUE: Queue = Queue {
    table: "tenant_exports",
    key: "export_id",
};

const COLUMNS: &str = "export_id, tenant_id, requested_by, state, attempts, attempt_started_at, \
     next_attempt_at, error_reason, error_message, archive_name, archive_size, archive_sha256, \
     archive_files, progress_files, progress_bytes, created_at, finished_at, expires_at, version";

/// One `tenant_exports` row.
#[derive(sqlx::FromRow)]
struct ExportRow {
    export_id: Uuid,
    tenant_id: Uuid,
    requested_by: String,
    state: String,
    attempts: i32,
    attempt_started_at: Option<DateTime<Utc>>,
    next_attempt_at: Option<DateTime<Utc>>,
    error_reason: Option<String>,
    error_message: Option<String>,
    archive_name: Option<String>,
    archive_size: Option<i64>,
    archive_sha256: Option<String>,
    archive_files: Option<i32>,
    progress_files: i32,
    progress_bytes: i64,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    expires_at: DateTime<Utc>,
    version: i64,
}

fn corrupt(what: &str) -> RepoError {
    RepoError::Internal(format!("stored export has a malformed {what}"))
}

fn version(v: u64) -> Result<i64, RepoError> {
    i64::try_from(v).map_err(|_| RepoError::VersionConflict)
}

impl ExportRow {
    fn into_export(self) -> Result<Export, RepoError> {
        let archive = match (
            self.archive_name,
            self.archive_size,
            self.archive_sha256,
            self.archive_files,
        ) {
            (Some(name), Some(size), Some(sha256), Some(files)) => Some(ExportArchive {
                name,
                size: u64::try_from(size).map_err(|_| corrupt("archive size"))?,
                sha256,
                files: u32::try_from(files).map_err(|_| corrupt("archive file count"))?,
            }),
            (None, None, None, None) => None,
            _ => return Err(corrupt("archive")),
        };
        Ok(Export {
            id: ExportId(self.export_id),
            tenant_id: TenantId::from_uuid(self.tenant_id).map_err(|_| corrupt("tenant id"))?,
            requested_by: self.requested_by,
            state: ExportState::parse(&self.state).ok_or_else(|| corrupt("state"))?,
            attempts: u32::try_from(self.attempts).map_err(|_| corrupt("attempt count"))?,
            attempt_started_at: self.attempt_started_at,
            next_attempt_at: self.next_attempt_at,
            last_error: self
                .error_reason
                .map(|reason| StepError::new(&reason, self.error_message.unwrap_or_default())),
            archive,
            progress: ExportProgress {
                files: u32::try_from(self.progress_files).map_err(|_| corrupt("progress"))?,
                bytes: u64::try_from(self.progress_bytes).map_err(|_| corrupt("progress"))?,
            },
            created_at: self.created_at,
            finished_at: self.finished_at,
            expires_at: self.expires_at,
            version: u64::try_from(self.version).map_err(|_| corrupt("version"))?,
        })
    }
}

fn count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[async_trait]
impl ExportRepository for PgStore {
    async fn create(&self, export: &Export) -> Result<(), RepoError> {
        let inserted = self
            .on_conn(async |conn| {
                sqlx::query(
                    "INSERT INTO tenant_exports (export_id, tenant_id, requested_by, state, \
                         attempts, next_attempt_at, created_at, expires_at, due_at, version) \
                     SELECT $1, tenant_id, $3, $4, $5, $6, $7, $8, $6, $9 FROM tenants \
                     WHERE tenant_id = $2",
                )
                .bind(export.id.0)
                .bind(export.tenant_id.as_uuid())
                .bind(&export.requested_by)
                .bind(export.state.as_str())
                .bind(count(export.attempts))
                .bind(export.next_attempt_at)
                .bind(export.created_at)
                .bind(export.expires_at)
                .bind(version(export.version).unwrap_or(1))
                .execute(conn)
                .await
            })
            .await
            .map_err(db)?
            .rows_affected();
        if inserted == 0 {
            return Err(RepoError::NotFound);
        }
        Ok(())
    }

    async fn get(&self, id: ExportId) -> Result<Option<Export>, RepoError> {
        let row: Option<ExportRow> = self
            .on_conn(async |conn| {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM tenant_exports WHERE export_id = $1"
                )))
                .bind(id.0)
                .fetch_optional(conn)
                .await
            })
            .await
            .map_err(db)?;
        row.map(ExportRow::into_export).transpose()
    }

    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: chrono::Duration,
    ) -> Result<Option<ClaimedExport>, RepoError> {
        let lease = Queue::lease(owner, now, lease_for);
        let sql = QUEUE.claim_sql(COLUMNS);
        let row: Option<ExportRow> = self
            .on_conn(async |conn| {
                Queue::bind_claim(sqlx::query_as(sqlx::AssertSqlSafe(sql)), now, &lease)
                    .fetch_optional(conn)
                    .await
            })
            .await
            .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(ClaimedExport {
            export: row.into_export()?,
            lease,
        }))
    }

    async fn renew(
        &self,
        id: ExportId,
        at_version: u64,
        lease: &Lease,
        until: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        let at_version = version(at_version)?;
        self.on_conn(async |conn| QUEUE.renew(conn, id.0, at_version, lease, until).await)
            .await
            .map_err(db)
    }

    async fn progress(
        &self,
        id: ExportId,
        lease: &Lease,
        progress: ExportProgress,
    ) -> Result<bool, RepoError> {
        let recorded = self
            .on_conn(async |conn| {
                sqlx::query(
                    "UPDATE tenant_exports SET progress_files = $3, progress_bytes = $4 \
                     WHERE export_id = $1 AND lease_token = $2",
                )
                .bind(id.0)
                .bind(lease.token)
                .bind(i32::try_from(progress.files).unwrap_or(i32::MAX))
                .bind(i64::try_from(progress.bytes).unwrap_or(i64::MAX))
                .execute(conn)
                .await
            })
            .await
            .map_err(db)?
            .rows_affected();
        Ok(recorded == 1)
    }

    async fn release(&self, id: ExportId, lease: &Lease) -> Result<(), RepoError> {
        self.on_conn(async |conn| QUEUE.release(conn, id.0, lease).await)
            .await
            .map_err(db)
    }

    async fn save(
        &self,
        export: &Export,
        expected_version: u64,
        lease: &Lease,
        renew_until: DateTime<Utc>,
    ) -> Result<(), RepoError> {
        let expected = version(expected_version)?;
        let next = version(export.version)?;
        let archive = export.archive.as_ref();
        let updated = self
            .on_conn(async |conn| {
                sqlx::query(
                    "UPDATE tenant_exports SET state = $3, attempts = $4, \
                         attempt_started_at = $5, next_attempt_at = $6, error_reason = $7, \
                         error_message = $8, archive_name = $9, archive_size = $10, \
                         archive_sha256 = $11, archive_files = $12, finished_at = $13, \
                         due_at = $14, version = $15, lease_expires_at = $17, \
                         progress_files = $18, progress_bytes = $19 \
                     WHERE export_id = $1 AND version = $2 AND lease_token = $16",
                )
                .bind(export.id.0)
                .bind(expected)
                .bind(export.state.as_str())
                .bind(count(export.attempts))
                .bind(export.attempt_started_at)
                .bind(export.next_attempt_at)
                .bind(export.last_error.as_ref().map(|e| e.reason.clone()))
                .bind(export.last_error.as_ref().map(|e| e.message.clone()))
                .bind(archive.map(|a| a.name.clone()))
                .bind(archive.map(|a| i64::try_from(a.size).unwrap_or(i64::MAX)))
                .bind(archive.map(|a| a.sha256.clone()))
                .bind(archive.map(|a| count(a.files)))
                .bind(export.finished_at)
                .bind(export.due_at())
                .bind(next)
                .bind(lease.token)
                .bind(renew_until)
                .bind(i32::try_from(export.progress.files).unwrap_or(i32::MAX))
                .bind(i64::try_from(export.progress.bytes).unwrap_or(i64::MAX))
                .execute(conn)
                .await
            })
            .await
            .map_err(db)?
            .rows_affected();
        if updated == 1 {
            return Ok(());
        }
        let stored: Option<(Option<Uuid>,)> = self
            .on_conn(async |conn| {
                sqlx::query_as("SELECT lease_token FROM tenant_exports WHERE export_id = $1")
                    .bind(export.id.0)
                    .fetch_optional(conn)
                    .await
            })
            .await
            .map_err(db)?;
        Err(match stored {
            None => RepoError::NotFound,
            Some((token,)) if token != Some(lease.token) => RepoError::LeaseLost,
            Some(_) => RepoError::VersionConflict,
        })
    }

    async fn of_tenant(&self, tenant: TenantId) -> Result<Vec<Export>, RepoError> {
        let rows: Vec<ExportRow> = self
            .on_conn(async |conn| {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM tenant_exports WHERE tenant_id = $1 ORDER BY export_id"
                )))
                .bind(tenant.as_uuid())
                .fetch_all(conn)
                .await
            })
            .await
            .map_err(db)?;
        rows.into_iter().map(ExportRow::into_export).collect()
    }

    async fn expired(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Export>, RepoError> {
        let rows: Vec<ExportRow> = self
            .on_conn(async |conn| {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM tenant_exports WHERE expires_at < $1 \
                     ORDER BY expires_at LIMIT $2"
                )))
                .bind(now)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(conn)
                .await
            })
            .await
            .map_err(db)?;
        rows.into_iter().map(ExportRow::into_export).collect()
    }

    async fn delete(&self, id: ExportId) -> Result<(), RepoError> {
        self.on_conn(async |conn| {
            sqlx::query("DELETE FROM tenant_exports WHERE export_id = $1")
                .bind(id.0)
                .execute(conn)
                .await
        })
        .await
        .map_err(db)?;
        Ok(())
    }
}

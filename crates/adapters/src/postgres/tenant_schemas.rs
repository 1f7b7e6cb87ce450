//! [`TenantSchemaRepository`] on PostgreSQL (`tenant_schemas`, with the placement from
//! `tenants`), the registry of tenant migrations replicas have run with
//! (`tenant_migrations`), and the adoption of tenants made before placements and versions
//! were recorded.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder};
use tenantd_domain::ports::{SchemaQuery, TenantSchemaRepository};
use tenantd_domain::provisioning::StepError;
use tenantd_domain::tenant_schema::{AppliedMigration, MigrationDrift, MigrationSet, TenantSchema};
use tenantd_domain::{RepoError, TenantId};
use uuid::Uuid;

use super::PgStore;
use super::errors::db;
use super::providers::quoted;
use super::tables::tenants::placement;

#[derive(sqlx::FromRow)]
struct SchemaRow {
    tenant_id: Uuid,
    version: i32,
    migrated_at: DateTime<Utc>,
    last_error: Option<Json<StepError>>,
    tenant_database: Option<String>,
    dedicated_database: Option<String>,
    tenant_schema: Option<String>,
}

impl TryFrom<SchemaRow> for TenantSchema {
    type Error = RepoError;

    fn try_from(row: SchemaRow) -> Result<Self, RepoError> {
        Ok(Self {
            tenant_id: TenantId::from_uuid(row.tenant_id)
                .map_err(|_| RepoError::Internal("a tenant schema has an invalid id".into()))?,
            placement: placement(
                row.tenant_database,
                row.dedicated_database,
                row.tenant_schema,
            )?,
            version: u32::try_from(row.version).map_err(|_| {
                RepoError::Internal("a tenant schema has a negative version".into())
            })?,
            migrated_at: Some(row.migrated_at),
            last_error: row.last_error.map(|e| e.0),
        })
    }
}

pub(crate) fn version(version: u32) -> Result<i32, RepoError> {
    i32::try_from(version)
        .map_err(|_| RepoError::Internal(format!("version {version} is too large")))
}

#[async_trait]
impl TenantSchemaRepository for PgStore {
    async fn record(
        &self,
        tenant: TenantId,
        version: u32,
        at: DateTime<Utc>,
    ) -> Result<(), RepoError> {
        let version = self::version(version)?;
        self.on_conn(async |conn| {
            sqlx::query(
                "INSERT INTO tenant_schemas (tenant_id, version, migrated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id) DO UPDATE SET version = excluded.version, \
                     migrated_at = CASE WHEN tenant_schemas.version = excluded.version \
                         THEN tenant_schemas.migrated_at ELSE excluded.migrated_at END, \
                     last_error = NULL",
            )
            .bind(tenant.as_uuid())
            .bind(version)
            .bind(at)
            .execute(conn)
            .await
        })
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn forget(&self, tenant: TenantId) -> Result<(), RepoError> {
        self.on_conn(async |conn| {
            sqlx::query("DELETE FROM tenant_schemas WHERE tenant_id = $1")
                .bind(tenant.as_uuid())
                .execute(conn)
                .await
        })
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn list(&self, query: &SchemaQuery) -> Result<Vec<TenantSchema>, RepoError> {
        let mut sql = QueryBuilder::<Postgres>::new(
            "SELECT s.tenant_id, s.version, s.migrated_at, s.last_error, t.tenant_database, \
                 t.dedicated_database, t.tenant_schema \
             FROM tenant_schemas s JOIN tenants t USING (tenant_id) WHERE true",
        );
        if let Some(behind) = query.behind_version {
            sql.push(" AND s.version < ").push_bind(version(behind)?);
        }
        if let Some(after) = query.after {
            sql.push(" AND s.tenant_id > ").push_bind(after.as_uuid());
        }
        sql.push(" ORDER BY s.tenant_id LIMIT ")
            .push_bind(i64::try_from(query.page_size).unwrap_or(i64::MAX));
        let rows: Vec<SchemaRow> = self
            .on_conn(async |conn| sql.build_query_as().fetch_all(conn).await)
            .await
            .map_err(db)?;
        rows.into_iter().map(TenantSchema::try_from).collect()
    }

    async fn versions(&self) -> Result<Vec<(u32, u64)>, RepoError> {
        let rows: Vec<(i32, i64)> = self
            .on_conn(async |conn| {
                sqlx::query_as(
                    "SELECT version, count(*) FROM tenant_schemas \
                     GROUP BY version ORDER BY version",
                )
                .fetch_all(conn)
                .await
            })
            .await
            .map_err(db)?;
        Ok(rows
            .into_iter()
            .map(|(v, n)| (u32::try_from(v).unwrap_or(0), u64::try_from(n).unwrap_or(0)))
            .collect())
    }
}

/// Why the migration set a replica starts with is refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// An applied file was edited.
    #[error(transparent)]
    Drift(#[from] MigrationDrift),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] RepoError),
}

impl PgStore {
    /// Checks `set` against the tenant migrations earlier replicas ran with — an applied
    /// file edited since is refused, naming it — then records the versions new to the
    /// registry. Versions beyond `set`'s newest (a newer release's) are left alone.
    ///
    /// # Errors
    /// [`RegistryError::Drift`]; [`RegistryError::Store`].
    pub async fn register_migrations(&self, set: &MigrationSet) -> Result<(), RegistryError> {
        self.in_tx(async |tx| {
            // Replicas starting together register one after the other.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('tenantd.tenant-migrations'))")
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            let known: Vec<(i32, String, Vec<u8>)> =
                sqlx::query_as("SELECT version, name, checksum FROM tenant_migrations")
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db)?;
            let known: Vec<AppliedMigration> = known
                .into_iter()
                .map(|(version, name, checksum)| AppliedMigration {
                    version: u32::try_from(version).unwrap_or(0),
                    name,
                    checksum,
                })
                .collect();
            if let Err(drift) = set.check_applied(&known) {
                return Ok(Err(drift));
            }
            let mut insert = QueryBuilder::<Postgres>::new(
                "INSERT INTO tenant_migrations (version, name, checksum) ",
            );
            insert.push_values(set.migrations(), |mut row, m| {
                row.push_bind(i32::try_from(m.version).unwrap_or(i32::MAX))
                    .push_bind(&m.name)
                    .push_bind(m.checksum.to_vec());
            });
            insert.push(" ON CONFLICT (version) DO NOTHING");
            insert.build().execute(&mut *tx).await.map_err(db)?;
            Ok(Ok(()))
        })
        .await?
        .map_err(RegistryError::Drift)
    }

    /// Gives every tenant made before placements were recorded the default placement
    /// (`default_database`, its schema `<prefix><id>`), and records the version of those
    /// whose schema exists, read from the schema itself. Idempotent; returns how many
    /// tenants it placed.
    ///
    /// # Errors
    /// Store failures.
    pub async fn adopt_unplaced(
        &self,
        default_database: &str,
        prefix: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, RepoError> {
        let placed: Vec<(Uuid, String)> = self
            .on_conn(async |conn| {
                sqlx::query_as(
                    "UPDATE tenants SET tenant_database = $1, \
                         tenant_schema = $2 || replace(tenant_id::text, '-', '') \
                     WHERE tenant_database IS NULL RETURNING tenant_id, tenant_schema",
                )
                .bind(default_database)
                .bind(prefix)
                .fetch_all(conn)
                .await
            })
            .await
            .map_err(db)?;
        for (tenant, schema) in &placed {
            let exists: bool = self
                .on_conn(async |conn| {
                    sqlx::query_scalar(
                        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) \
                         AND NOT EXISTS (SELECT 1 FROM tenant_schemas WHERE tenant_id = $2)",
                    )
                    .bind(schema)
                    .bind(tenant)
                    .fetch_one(conn)
                    .await
                })
                .await
                .map_err(db)?;
            if !exists {
                continue;
            }
            let version: Option<i32> = self
                .on_conn(async |conn| {
                    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                        "SELECT max(version) FROM {}.schema_migrations",
                        quoted(schema)
                    )))
                    .fetch_one(conn)
                    .await
                })
                .await
                .map_err(db)?;
            self.on_conn(async |conn| {
                sqlx::query(
                "INSERT INTO tenant_schemas (tenant_id, version, migrated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id) DO NOTHING",
            )
            .bind(tenant)
            .bind(version.unwrap_or(0))
            .bind(now)
            .execute(conn)
            .await
            })
            .await
            .map_err(db)?;
        }
        Ok(u64::try_from(placed.len()).unwrap_or(u64::MAX))
    }
}

//! The DATABASE step's provider and the rollouts' hands: each tenant's schema on the
//! tenant database its [`Placement`] names — a schema in a shared database, or a database
//! of its own (`CREATE DATABASE` on that server) — migrated with the application's
//! [`MigrationSet`].
//!
//! Every change of a schema is one transaction under an advisory lock on the schema's name:
//! the versions it lacks are applied in order and recorded in its `schema_migrations`
//! (version, name, checksum, applied_at), so a failure leaves it exactly at its previous
//! version, and two workers on one schema (one presumed dead, still running) queue instead
//! of applying a version twice. With the built-in example set, a new schema is seeded with
//! an admin user for the contact email, sealed like the control plane's: with the tenant's
//! data key.

use std::collections::BTreeMap;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, PgConnection, PgPool};
use tenantd_domain::ports::{EmailCipher, ProvisioningTarget, TenantDatabases, WrappedDataKey};
use tenantd_domain::provisioning::StepError;
use tenantd_domain::tenant_schema::{
    AppliedMigration, DEFAULT_TENANT_DATABASE, Migrated, MigrationLimits, MigrationSet, Placement,
};
use tenantd_domain::{ContactEmail, RepoError, TenantId};
use uuid::Uuid;

use crate::postgres::connect::ConnectError;

/// Longest schema-name prefix: PostgreSQL names hold 63 bytes and the id takes 32.
const MAX_PREFIX_LEN: usize = 31;

/// Why a schema-name prefix is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a tenant schema prefix is 1 to 31 characters of a-z, 0-9 and '_', starting with a letter")]
pub struct BadSchemaPrefix;

/// Whether `prefix` can start tenant schema names: a short lowercase identifier.
pub fn is_valid_schema_prefix(prefix: &str) -> bool {
    (1..=MAX_PREFIX_LEN).contains(&prefix.len())
        && prefix.starts_with(|c: char| c.is_ascii_lowercase())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `name` quoted as an identifier.
pub fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One tenant database: a pool on it, and how to reach its server's other databases (a
/// dedicated tenant's own).
#[derive(Clone)]
struct TenantDatabase {
    pool: PgPool,
    options: PgConnectOptions,
    connect_timeout: Duration,
}

/// What a schema change does beyond applying migrations.
#[derive(Clone, Copy)]
enum Change<'a> {
    /// Provisioning: the schema (and its database) may be created; seeded for the target's
    /// contact with the tenant's data key (read before the schema's connection is taken: both
    /// may come from one pool, and a worker holding one while waiting for another could
    /// starve the pool).
    Create(&'a ProvisioningTarget, Option<&'a WrappedDataKey>),
    /// A rollout: the schema must exist already.
    Migrate,
}

/// Tenant schemas on the configured tenant databases.
#[derive(Clone)]
pub struct PgTenantDatabases {
    databases: Arc<BTreeMap<String, TenantDatabase>>,
    set: Arc<MigrationSet>,
    seed: Option<Arc<dyn EmailCipher>>,
    /// The control plane's database, where the tenants' data keys are.
    control_plane: PgPool,
    limits: MigrationLimits,
}

impl std::fmt::Debug for PgTenantDatabases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTenantDatabases")
            .field("databases", &self.databases.keys().collect::<Vec<_>>())
            .field("newest", &self.set.newest())
            .finish_non_exhaustive()
    }
}

impl PgTenantDatabases {
    /// Tenant schemas migrated with `set` under `limits` when provisioning (a rollout
    /// brings limits of its own), on the control plane's own database (`control_plane`)
    /// as the tenant database `default`. With `seed`, a new schema gets an admin user for
    /// the contact email (the built-in set's `users` table), sealed with it and the
    /// tenant's data key.
    pub fn new(
        control_plane: PgPool,
        set: Arc<MigrationSet>,
        seed: Option<Arc<dyn EmailCipher>>,
        limits: MigrationLimits,
    ) -> Self {
        let options = control_plane.connect_options().as_ref().clone();
        let connect_timeout = control_plane.options().get_acquire_timeout();
        let databases = BTreeMap::from([(
            DEFAULT_TENANT_DATABASE.to_owned(),
            TenantDatabase {
                pool: control_plane.clone(),
                options,
                connect_timeout,
            },
        )]);
        Self {
            databases: Arc::new(databases),
            set,
            seed,
            control_plane,
            limits,
        }
    }

    /// The same with the tenant database `name` at `url` (replacing `default` too), pooled
    /// with at most `max_connections`, connected when first used: a tenant database that
    /// is down fails its tenants' steps, not the server's start.
    ///
    /// # Errors
    /// [`ConnectError::InvalidUrl`].
    pub fn with_database(
        mut self,
        name: &str,
        url: &str,
        max_connections: u32,
        connect_timeout: Duration,
    ) -> Result<Self, ConnectError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| ConnectError::InvalidUrl(format!("tenant database {name}: {e}")))?
            .application_name("tenantd");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(connect_timeout)
            .connect_lazy_with(options.clone());
        Arc::make_mut(&mut self.databases).insert(
            name.to_owned(),
            TenantDatabase {
                pool,
                options,
                connect_timeout,
            },
        );
        Ok(self)
    }

    /// The migrations the schemas get.
    pub fn migrations(&self) -> &MigrationSet {
        &self.set
    }

    /// The configured tenant databases' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.databases.keys().map(String::as_str)
    }

    fn database(&self, placement: &Placement) -> Result<&TenantDatabase, StepError> {
        self.databases
            .get(&placement.tenant_database)
            .ok_or_else(|| {
                StepError::permanent(
                    "TENANT_DATABASE_UNKNOWN",
                    format!(
                        "the tenant database {:?} is not configured (--tenant-database)",
                        placement.tenant_database
                    ),
                )
            })
    }

    /// `tenant`'s data key, from the control plane's database (made if it has none).
    async fn data_key(
        &self,
        cipher: &dyn EmailCipher,
        tenant: TenantId,
    ) -> Result<WrappedDataKey, StepError> {
        let mut conn = self
            .control_plane
            .acquire()
            .await
            .map_err(|e| failure("cannot read the tenant's data key", &e))?;
        let fresh = cipher.new_data_key(tenant);
        crate::postgres::data_keys::get_or_create(&mut conn, tenant, fresh)
            .await
            .map_err(|e| match e {
                RepoError::Precondition(..) | RepoError::NotFound => {
                    StepError::permanent("DATA_KEY_UNAVAILABLE", e.to_string())
                }
                other => StepError::new(
                    "DATABASE_UNAVAILABLE",
                    format!("cannot read the tenant's data key: {other}"),
                ),
            })
    }

    /// A pool on the database holding the schema: the tenant database's own, or (for a
    /// dedicated tenant) a one-connection pool on the tenant's database, to close after use.
    pub(crate) fn pool(&self, placement: &Placement) -> Result<(PgPool, bool), StepError> {
        let database = self.database(placement)?;
        Ok(match &placement.dedicated {
            None => (database.pool.clone(), false),
            Some(own) => (
                PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(database.connect_timeout)
                    .connect_lazy_with(database.options.clone().database(own)),
                true,
            ),
        })
    }

    /// Runs `work` on a connection to the database holding the schema.
    pub(super) async fn on_schema_database<T>(
        &self,
        placement: &Placement,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, StepError>,
    ) -> Result<T, StepError> {
        let (pool, own) = self.pool(placement)?;
        let result = match pool.acquire().await {
            Ok(mut conn) => work(&mut conn).await,
            Err(err) => Err(failure("cannot reach the tenant database", &err)),
        };
        if own {
            pool.close().await;
        }
        result
    }

    /// Runs `statement` (a `CREATE` or `DROP DATABASE`, which cannot run in a
    /// transaction) on a connection of its own, under the migrations' statement timeout
    /// rather than the pool's: the checkpoint it waits for may take longer than a query.
    async fn on_server(
        &self,
        database: &TenantDatabase,
        statement: &str,
    ) -> Result<(), sqlx::Error> {
        let mut conn = database.pool.acquire().await?.detach();
        let done = async {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "SET statement_timeout = {}",
                self.limits.statement_timeout_ms
            )))
            .execute(&mut conn)
            .await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
                .execute(&mut conn)
                .await
                .map(drop)
        }
        .await;
        let _closed = conn.close().await;
        done
    }

    /// Creates the dedicated tenant's database on its server unless it exists.
    async fn create_database(&self, placement: &Placement, own: &str) -> Result<(), StepError> {
        let database = self.database(placement)?;
        let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(own)
            .fetch_optional(&database.pool)
            .await
            .map_err(|e| failure("cannot reach the tenant database", &e))?
            .is_some();
        if exists {
            return Ok(());
        }
        let created = self
            .on_server(database, &format!("CREATE DATABASE {}", quoted(own)))
            .await;
        match created {
            // duplicate_database, or the catalog's unique index: created concurrently.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04" | "23505")) =>
            {
                Ok(())
            }
            other => other
                .map(drop)
                .map_err(|e| failure("cannot create the tenant's database", &e)),
        }
    }

    /// The one transaction of a schema change: lock, limits, (create,) read what is
    /// applied, check it, apply what is missing up to `to`, record it (and seed a new
    /// schema). `None` when the schema does not exist and may not be created.
    async fn change(
        &self,
        conn: &mut PgConnection,
        placement: &Placement,
        change: Change<'_>,
        to: u32,
        limits: MigrationLimits,
    ) -> Result<Option<Migrated>, StepError> {
        let schema = quoted(&placement.schema);
        let mut tx = conn
            .begin()
            .await
            .map_err(failed("cannot begin a transaction"))?;
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtext('tenantd.tenant-schema'), hashtext($1))",
        )
        .bind(&placement.schema)
        .execute(&mut *tx)
        .await
        .map_err(failed("cannot lock the tenant schema"))?;
        // What the schema has, in one round trip: the schema, its record table, the
        // table's checksum column (absent in schemas made before checksums were kept).
        let (exists, has_table, has_checksum): (bool, bool, bool) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1), \
                    to_regclass($2) IS NOT NULL, \
                    EXISTS (SELECT 1 FROM pg_attribute \
                        WHERE attrelid = to_regclass($2) AND attname = 'checksum')",
        )
        .bind(&placement.schema)
        .bind(format!("{schema}.schema_migrations"))
        .fetch_one(&mut *tx)
        .await
        .map_err(failed("cannot look for the tenant schema"))?;
        if !exists && matches!(change, Change::Migrate) {
            return Ok(None);
        }
        // The limits, the search path and whatever the schema lacks, in one round trip.
        let prepare = preparation(&schema, limits, exists, has_table, has_checksum);
        sqlx::raw_sql(sqlx::AssertSqlSafe(prepare))
            .execute(&mut *tx)
            .await
            .map_err(failed("cannot prepare the tenant schema"))?;
        let applied = if has_table {
            applied_in(&mut tx, &schema, true).await?
        } else {
            Vec::new()
        };
        self.set
            .check_applied(&applied)
            .map_err(|drift| StepError::permanent("MIGRATION_DRIFT", drift.to_string()))?;
        let from = applied.last().map_or(0, |m| m.version);
        for migration in self.set.between(from, to) {
            // The migration and its record in one round trip (the name is checked to be
            // letters, digits, '_' and '-'; the checksum is hex).
            let sql = format!(
                "{}\n;INSERT INTO {schema}.schema_migrations (version, name, checksum) \
                 VALUES ({}, '{}', '\\x{}'::bytea)",
                migration.sql,
                migration.version,
                migration.name,
                migration.checksum_hex()
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    let mut error = failure(&format!("{} failed", migration.file_name()), &e);
                    if error.reason == "DATABASE_ERROR" {
                        error = StepError::permanent("MIGRATION_FAILED", error.message);
                    }
                    error
                })?;
        }
        if let (Change::Create(target, Some(key)), Some(cipher)) = (change, &self.seed) {
            seed_admin(
                &mut tx,
                &schema,
                cipher.as_ref(),
                key,
                target.tenant_id,
                &target.contact_email,
            )
            .await?;
        }
        tx.commit()
            .await
            .map_err(failed("cannot commit the migration"))?;
        let to = from.max(to.min(self.set.newest()));
        Ok(Some(Migrated {
            from,
            to,
            applied: self
                .set
                .between(from, to)
                .iter()
                .map(AppliedMigration::from)
                .collect(),
        }))
    }
}

/// The statements that set a migration's limits and search path and make what the schema
/// (`schema`, quoted) lacks: itself, its record table, the table's checksum column.
fn preparation(
    schema: &str,
    limits: MigrationLimits,
    exists: bool,
    has_table: bool,
    has_checksum: bool,
) -> String {
    let mut statements = vec![
        format!("SET LOCAL lock_timeout = {}", limits.lock_timeout_ms),
        format!(
            "SET LOCAL statement_timeout = {}",
            limits.statement_timeout_ms
        ),
        "SET LOCAL client_min_messages = warning".to_owned(),
    ];
    if !exists {
        statements.push(format!("CREATE SCHEMA {schema}"));
    }
    statements.push(format!("SET LOCAL search_path TO {schema}"));
    if !has_table {
        statements.push(format!(
            "CREATE TABLE {schema}.schema_migrations (version integer PRIMARY KEY, \
             name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), checksum bytea)"
        ));
    } else if !has_checksum {
        statements.push(format!(
            "ALTER TABLE {schema}.schema_migrations ADD COLUMN checksum bytea"
        ));
    }
    statements.join("; ")
}

/// A `map_err` of driver failures while `doing` something.
fn failed(doing: &'static str) -> impl Fn(sqlx::Error) -> StepError {
    move |e| failure(doing, &e)
}

/// The migrations a schema records, in version order (without checksums when
/// `with_checksum` is false: a schema made before they were recorded).
async fn applied_in(
    conn: &mut PgConnection,
    schema: &str,
    with_checksum: bool,
) -> Result<Vec<AppliedMigration>, StepError> {
    let checksum = if with_checksum {
        "checksum"
    } else {
        "NULL::bytea"
    };
    let rows: Vec<(i32, String, Option<Vec<u8>>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT version, name, {checksum} FROM {schema}.schema_migrations ORDER BY version"
    )))
    .fetch_all(conn)
    .await
    .map_err(|e| failure("cannot read the schema's migrations", &e))?;
    Ok(rows
        .into_iter()
        .map(|(version, name, checksum)| AppliedMigration {
            version: u32::try_from(version).unwrap_or(0),
            name,
            checksum: checksum.unwrap_or_default(),
        })
        .collect())
}

/// The built-in set's seed: an admin user for the contact email, sealed with the tenant's
/// data `key`.
async fn seed_admin(
    conn: &mut PgConnection,
    schema: &str,
    cipher: &dyn EmailCipher,
    key: &WrappedDataKey,
    tenant: TenantId,
    email: &ContactEmail,
) -> Result<(), StepError> {
    let sealed = cipher.seal_with_key(tenant, key, email).map_err(|e| {
        StepError::permanent(
            "DATA_KEY_INVALID",
            format!("the tenant's data key does not unwrap: {e}"),
        )
    })?;
    let index = cipher.blind_index(email);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {schema}.users (user_id, email_sealed, email_key_id, email_index, role_id) \
         VALUES ($1, $2, $3, $4, 'admin') ON CONFLICT (email_index) DO NOTHING"
    )))
    .bind(Uuid::now_v7())
    .bind(sealed.envelope)
    .bind(sealed.key_id)
    .bind(index.to_vec())
    .execute(conn)
    .await
    .map_err(|e| failure("cannot seed the tenant's admin user", &e))?;
    Ok(())
}

/// The step error of a driver failure while `doing` something: the database cannot be
/// reached (worth retrying), a lock or statement timeout, or an error of the SQL itself.
/// Only the server's message is kept (never its detail, which may quote row values).
pub(crate) fn failure(doing: &str, err: &sqlx::Error) -> StepError {
    match err {
        sqlx::Error::Database(e) => {
            let code = e.code().unwrap_or_default();
            match code.as_ref() {
                "55P03" => StepError::new("LOCK_TIMEOUT", format!("{doing}: {}", e.message())),
                "57014" => StepError::new("STATEMENT_TIMEOUT", format!("{doing}: {}", e.message())),
                // cannot connect now, too many connections, shutting down, connection
                // failures, the tenant's database missing
                "57P01" | "57P02" | "57P03" | "53300" | "3D000" => {
                    StepError::new("DATABASE_UNAVAILABLE", format!("{doing}: {}", e.message()))
                }
                c if c.starts_with("08") => {
                    StepError::new("DATABASE_UNAVAILABLE", format!("{doing}: {}", e.message()))
                }
                _ => StepError::new(
                    "DATABASE_ERROR",
                    format!("{doing}: {} (SQLSTATE {code})", e.message()),
                ),
            }
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => StepError::new(
            "DATABASE_UNAVAILABLE",
            format!("{doing}: the tenant database is unavailable"),
        ),
        other => StepError::new("DATABASE_ERROR", format!("{doing}: {other}")),
    }
}

#[async_trait]
impl TenantDatabases for PgTenantDatabases {
    async fn provision(&self, target: &ProvisioningTarget) -> Result<Migrated, StepError> {
        let placement = &target.placement;
        if let Some(own) = &placement.dedicated {
            self.create_database(placement, own).await?;
        }
        let newest = self.set.newest();
        let limits = self.limits;
        let key = match &self.seed {
            Some(cipher) => Some(self.data_key(cipher.as_ref(), target.tenant_id).await?),
            None => None,
        };
        let create = Change::Create(target, key.as_ref());
        self.on_schema_database(placement, async |conn| {
            self.change(conn, placement, create, newest, limits).await
        })
        .await?
        .ok_or_else(|| StepError::new("DATABASE_ERROR", "the tenant schema was not created"))
    }

    async fn deprovision(&self, _tenant: TenantId, placement: &Placement) -> Result<(), StepError> {
        if let Some(own) = &placement.dedicated {
            let database = self.database(placement)?;
            // FORCE: connections of a worker presumed dead must not keep it alive.
            let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quoted(own));
            self.on_server(database, &drop)
                .await
                .map_err(|e| failure("cannot drop the tenant's database", &e))?;
            return Ok(());
        }
        let schema = quoted(&placement.schema);
        self.on_schema_database(placement, async |conn| {
            let failed = |e: sqlx::Error| failure("cannot drop the tenant schema", &e);
            let mut tx = conn.begin().await.map_err(failed)?;
            // The lock a change takes: an attempt still running elsewhere commits (or
            // rolls back) before the schema is dropped, never after.
            sqlx::query(
                "SELECT pg_advisory_xact_lock(hashtext('tenantd.tenant-schema'), hashtext($1))",
            )
            .bind(&placement.schema)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE"
            )))
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
            tx.commit().await.map_err(failed)
        })
        .await
    }

    async fn exists(&self, placement: &Placement) -> Result<bool, StepError> {
        if let Some(own) = &placement.dedicated {
            let database = self.database(placement)?;
            let found = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(own)
                .fetch_optional(&database.pool)
                .await
                .map_err(|e| failure("cannot look for the tenant's database", &e))?;
            if found.is_none() {
                return Ok(false);
            }
        }
        self.on_schema_database(placement, async |conn| {
            let found = sqlx::query("SELECT 1 FROM pg_namespace WHERE nspname = $1")
                .bind(&placement.schema)
                .fetch_optional(conn)
                .await
                .map_err(|e| failure("cannot look for the tenant schema", &e))?;
            Ok(found.is_some())
        })
        .await
    }

    async fn migrate(
        &self,
        placement: &Placement,
        to: u32,
        limits: MigrationLimits,
    ) -> Result<Option<Migrated>, StepError> {
        self.on_schema_database(placement, async |conn| {
            self.change(conn, placement, Change::Migrate, to, limits)
                .await
        })
        .await
    }

    async fn applied(&self, placement: &Placement) -> Result<Vec<AppliedMigration>, StepError> {
        if !self.exists(placement).await? {
            return Ok(Vec::new());
        }
        let schema = quoted(&placement.schema);
        self.on_schema_database(placement, async |conn| {
            let (table, with_checksum): (Option<String>, bool) = sqlx::query_as(
                "SELECT to_regclass($1)::text, EXISTS (SELECT 1 FROM pg_attribute \
                     WHERE attrelid = to_regclass($1) AND attname = 'checksum')",
            )
            .bind(format!("{schema}.schema_migrations"))
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| failure("cannot read the schema's migrations", &e))?;
            if table.is_none() {
                return Ok(Vec::new());
            }
            applied_in(conn, &schema, with_checksum).await
        })
        .await
    }
}

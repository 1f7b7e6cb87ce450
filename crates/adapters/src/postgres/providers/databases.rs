//! The DATABASE step's provider: each tenant's own schema, named from the tenant id
//! (never from user input), created and migrated in one transaction and seeded with the
//! default roles and an admin user for the contact email (sealed like the control plane's).

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{PgConnection, PgPool};
use tenantd_domain::ports::{EmailCipher, ProvisioningTarget, TenantDatabases};
use tenantd_domain::provisioning::StepError;
use tenantd_domain::{RepoError, TenantId};
use uuid::Uuid;

use super::step_error;
use crate::postgres::errors::db;
use crate::postgres::store::in_tx;

/// The tenant schema's migrations, in order: (version, name, SQL).
pub const TENANT_MIGRATIONS: [(i32, &str, &str); 2] = [
    (
        1,
        "roles_and_users",
        include_str!("../../../../../migrations/tenant/0001_roles_and_users.sql"),
    ),
    (
        2,
        "audit_logs",
        include_str!("../../../../../migrations/tenant/0002_audit_logs.sql"),
    ),
];

/// Longest schema-name prefix: PostgreSQL names hold 63 bytes and the id takes 32.
const MAX_PREFIX_LEN: usize = 31;

/// Why a schema-name prefix is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a tenant schema prefix is 1 to 31 characters of a-z, 0-9 and '_', starting with a letter")]
pub struct BadSchemaPrefix;

/// Serializes work on one tenant schema across sessions (until the transaction ends).
async fn lock_schema(tx: &mut PgConnection, schema: &str) -> Result<(), RepoError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('tenantd.tenant-schema'), hashtext($1))")
        .bind(schema)
        .execute(tx)
        .await
        .map_err(db)?;
    Ok(())
}

/// Whether `prefix` can start tenant schema names: a short lowercase identifier.
pub fn is_valid_schema_prefix(prefix: &str) -> bool {
    (1..=MAX_PREFIX_LEN).contains(&prefix.len())
        && prefix.starts_with(|c: char| c.is_ascii_lowercase())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The schema of `tenant` under `prefix`, quoted as an identifier.
pub(crate) fn tenant_schema(prefix: &str, tenant: TenantId) -> String {
    // The prefix is validated and the id is hex: nothing to escape, quoted regardless.
    format!("\"{prefix}{}\"", tenant.as_uuid().simple())
}

/// Each tenant's own schema, named from the tenant id (never from user input), created and
/// migrated in one transaction and seeded with the default roles and an admin user for the
/// contact email (sealed like the control plane's).
#[derive(Clone)]
pub struct PgTenantDatabases {
    pool: PgPool,
    cipher: Arc<dyn EmailCipher>,
    prefix: String,
}

impl std::fmt::Debug for PgTenantDatabases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTenantDatabases")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl PgTenantDatabases {
    /// Tenant schemas named `<prefix><tenant id>`.
    ///
    /// # Errors
    /// [`BadSchemaPrefix`] unless the prefix is a short lowercase identifier.
    pub fn new(
        pool: PgPool,
        cipher: Arc<dyn EmailCipher>,
        prefix: &str,
    ) -> Result<Self, BadSchemaPrefix> {
        if !is_valid_schema_prefix(prefix) {
            return Err(BadSchemaPrefix);
        }
        Ok(Self {
            pool,
            cipher,
            prefix: prefix.to_owned(),
        })
    }

    /// The schema of `tenant`, quoted as an identifier.
    pub fn schema(&self, tenant: TenantId) -> String {
        tenant_schema(&self.prefix, tenant)
    }

    async fn migrate(
        &self,
        tx: &mut PgConnection,
        target: &ProvisioningTarget,
    ) -> Result<(), RepoError> {
        let schema = self.schema(target.tenant_id);
        // Two attempts of one tenant's step (a worker presumed dead, still running) queue
        // here instead of racing on the DDL.
        lock_schema(tx, &schema).await?;
        for statement in [
            format!("CREATE SCHEMA IF NOT EXISTS {schema}"),
            format!("SET LOCAL search_path TO {schema}"),
            format!(
                "CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (version integer PRIMARY KEY, \
                 name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            ),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        let applied: Vec<(i32,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT version FROM {schema}.schema_migrations"
        )))
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        for (version, name, sql) in TENANT_MIGRATIONS {
            if applied.iter().any(|(v,)| *v == version) {
                continue;
            }
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {schema}.schema_migrations (version, name) VALUES ($1, $2)"
            )))
            .bind(version)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        let sealed = self.cipher.seal(target.tenant_id, &target.contact_email);
        let index = self.cipher.blind_index(&target.contact_email);
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {schema}.users (user_id, email_sealed, email_key_id, email_index, role_id) \
             VALUES ($1, $2, $3, $4, 'admin') ON CONFLICT (email_index) DO NOTHING"
        )))
        .bind(Uuid::now_v7())
        .bind(sealed.envelope)
        .bind(sealed.key_id)
        .bind(index.to_vec())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        Ok(())
    }
}

#[async_trait]
impl TenantDatabases for PgTenantDatabases {
    async fn provision(&self, target: &ProvisioningTarget) -> Result<(), StepError> {
        in_tx(&self.pool, async |tx| self.migrate(tx, target).await)
            .await
            .map_err(|e| step_error("cannot create the tenant schema", &e))
    }

    async fn deprovision(&self, tenant: TenantId) -> Result<(), StepError> {
        let schema = self.schema(tenant);
        in_tx(&self.pool, async |tx| {
            // The lock provision takes: an attempt still running elsewhere commits (or
            // rolls back) before the schema is dropped, never after.
            lock_schema(tx, &schema).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE"
            )))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            Ok(())
        })
        .await
        .map_err(|e| step_error("cannot drop the tenant schema", &e))
    }

    async fn exists(&self, tenant: TenantId) -> Result<bool, StepError> {
        let schema = self.schema(tenant);
        let found = sqlx::query("SELECT 1 FROM pg_namespace WHERE nspname = $1")
            .bind(schema.trim_matches('"'))
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| step_error("cannot look for the tenant schema", &db(e)))?;
        Ok(found.is_some())
    }
}

//! The local provisioning providers on PostgreSQL: each tenant's own schema (the DATABASE
//! step), DNS records with the control plane as their source of truth, and billing
//! subscriptions. Every operation is idempotent, so a step re-run after a crash is safe.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{PgPool, Postgres, Transaction};
use tenantd_domain::ports::{
    BillingProvider, DnsProvider, EmailCipher, ProvisioningTarget, TenantDatabases,
};
use tenantd_domain::provisioning::StepError;
use tenantd_domain::{RepoError, TenantId};
use uuid::Uuid;

use super::errors::db;

/// The tenant schema's migrations, in order: (version, name, SQL).
pub const TENANT_MIGRATIONS: [(i32, &str, &str); 2] = [
    (
        1,
        "roles_and_users",
        include_str!("../../../../migrations/tenant/0001_roles_and_users.sql"),
    ),
    (
        2,
        "audit_logs",
        include_str!("../../../../migrations/tenant/0002_audit_logs.sql"),
    ),
];

/// The default prefix of tenant schema names (`t_<tenant id without dashes>`).
pub const DEFAULT_SCHEMA_PREFIX: &str = "t_";

/// Longest schema-name prefix: PostgreSQL names hold 63 bytes and the id takes 32.
const MAX_PREFIX_LEN: usize = 31;

fn step_error(reason: &str, err: &RepoError) -> StepError {
    match err {
        RepoError::Unavailable(_) => StepError::new(
            "DATABASE_UNAVAILABLE",
            format!("{reason}: the database is unavailable"),
        ),
        other => StepError::new("DATABASE_ERROR", format!("{reason}: {other}")),
    }
}

/// Why a schema-name prefix is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a tenant schema prefix is 1 to 31 characters of a-z, 0-9 and '_', starting with a letter")]
pub struct BadSchemaPrefix;

/// Serializes work on one tenant schema across sessions (until the transaction ends).
async fn lock_schema(tx: &mut Transaction<'_, Postgres>, schema: &str) -> Result<(), RepoError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('tenantd.tenant-schema'), hashtext($1))")
        .bind(schema)
        .execute(&mut **tx)
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
        // The prefix is validated and the id is hex: nothing to escape, quoted regardless.
        format!("\"{}{}\"", self.prefix, tenant.as_uuid().simple())
    }

    async fn migrate(
        &self,
        tx: &mut Transaction<'_, Postgres>,
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
                .execute(&mut **tx)
                .await
                .map_err(db)?;
        }
        let applied: Vec<(i32,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT version FROM {schema}.schema_migrations"
        )))
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
        for (version, name, sql) in TENANT_MIGRATIONS {
            if applied.iter().any(|(v,)| *v == version) {
                continue;
            }
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut **tx)
                .await
                .map_err(db)?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {schema}.schema_migrations (version, name) VALUES ($1, $2)"
            )))
            .bind(version)
            .bind(name)
            .execute(&mut **tx)
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
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        Ok(())
    }
}

impl PgTenantDatabases {
    /// Re-seals, in batches of `batch_size`, the emails of every tenant schema's users not
    /// sealed with the primary key. Returns how many.
    ///
    /// # Errors
    /// Store failures, or an envelope that does not open (nothing of that batch is written).
    pub async fn rewrap_user_emails(&self, batch_size: usize) -> Result<u64, RepoError> {
        let tenants: Vec<(Uuid,)> = sqlx::query_as("SELECT tenant_id FROM tenants")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let mut total = 0;
        for (id,) in tenants {
            let tenant = TenantId::from_uuid(id)
                .map_err(|_| RepoError::Internal("stored tenant has an invalid id".into()))?;
            total += self.rewrap_schema(tenant, batch_size).await?;
        }
        Ok(total)
    }

    async fn rewrap_schema(&self, tenant: TenantId, batch_size: usize) -> Result<u64, RepoError> {
        let schema = self.schema(tenant);
        let name = schema.trim_matches('"').to_owned();
        let exists = sqlx::query("SELECT 1 FROM pg_namespace WHERE nspname = $1")
            .bind(&name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        if exists.is_none() {
            return Ok(0);
        }
        let primary = self.cipher.primary_key_id();
        let limit = i64::try_from(batch_size.max(1)).unwrap_or(i64::MAX);
        let mut total = 0;
        loop {
            let mut tx = self.pool.begin().await.map_err(db)?;
            let batch = async {
                let selected: Result<Vec<(Uuid, Vec<u8>)>, _> =
                    sqlx::query_as(sqlx::AssertSqlSafe(format!(
                        "SELECT user_id, email_sealed FROM {schema}.users \
                         WHERE email_key_id <> $1 LIMIT $2 FOR UPDATE SKIP LOCKED"
                    )))
                    .bind(&primary)
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await;
                let rows = match selected {
                    Ok(rows) => rows,
                    // Dropped meanwhile (its run was undone): nothing left to re-seal.
                    Err(sqlx::Error::Database(e))
                        if matches!(e.code().as_deref(), Some("42P01" | "3F000")) =>
                    {
                        Vec::new()
                    }
                    Err(e) => return Err(db(e)),
                };
                for (user, envelope) in &rows {
                    let email = self
                        .cipher
                        .open(tenant, envelope)
                        .map_err(|e| RepoError::Internal(format!("tenant {tenant}: {e}")))?;
                    let sealed = self.cipher.seal(tenant, &email);
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE {schema}.users SET email_sealed = $2, email_key_id = $3 \
                         WHERE user_id = $1"
                    )))
                    .bind(user)
                    .bind(sealed.envelope)
                    .bind(sealed.key_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                }
                Ok::<u64, RepoError>(rows.len() as u64)
            }
            .await;
            match batch {
                Ok(0) => {
                    tx.commit().await.map_err(db)?;
                    return Ok(total);
                }
                Ok(n) => {
                    tx.commit().await.map_err(db)?;
                    total += n;
                }
                Err(err) => return Err(super::tenants::abort(tx, err).await),
            }
        }
    }
}

#[async_trait]
impl TenantDatabases for PgTenantDatabases {
    async fn provision(&self, target: &ProvisioningTarget) -> Result<(), StepError> {
        let attempt = async {
            let mut tx = self.pool.begin().await.map_err(db)?;
            match self.migrate(&mut tx, target).await {
                Ok(()) => tx.commit().await.map_err(db),
                Err(err) => Err(super::tenants::abort(tx, err).await),
            }
        };
        attempt
            .await
            .map_err(|e| step_error("cannot create the tenant schema", &e))
    }

    async fn deprovision(&self, tenant: TenantId) -> Result<(), StepError> {
        let schema = self.schema(tenant);
        let attempt = async {
            let mut tx = self.pool.begin().await.map_err(db)?;
            // The lock provision takes: an attempt still running elsewhere commits (or
            // rolls back) before the schema is dropped, never after.
            let dropped = async {
                lock_schema(&mut tx, &schema).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE"
                )))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                Ok::<(), RepoError>(())
            }
            .await;
            match dropped {
                Ok(()) => tx.commit().await.map_err(db),
                Err(err) => Err(super::tenants::abort(tx, err).await),
            }
        };
        attempt
            .await
            .map_err(|e| step_error("cannot drop the tenant schema", &e))
    }
}

/// DNS records of tenants, kept in the `dns_records` table: `<slug>.<base domain>` as an A
/// record to the ingress address and `www.<slug>.<base domain>` as a CNAME to it.
#[derive(Debug, Clone)]
pub struct PgDns {
    pool: PgPool,
    base_domain: String,
    ingress: std::net::IpAddr,
}

/// TTL of the records, in seconds.
const DNS_TTL: i32 = 300;

impl PgDns {
    /// Records under `base_domain` pointing at `ingress`.
    pub fn new(pool: PgPool, base_domain: &str, ingress: std::net::IpAddr) -> Self {
        Self {
            pool,
            base_domain: base_domain.trim_end_matches('.').to_owned(),
            ingress,
        }
    }

    /// The records of `slug`: (name, type, value).
    fn records(&self, slug: &str) -> [(String, &'static str, String); 2] {
        let apex = format!("{slug}.{}", self.base_domain);
        let address_type = if self.ingress.is_ipv4() { "A" } else { "AAAA" };
        [
            (apex.clone(), address_type, self.ingress.to_string()),
            (format!("www.{apex}"), "CNAME", apex),
        ]
    }
}

#[async_trait]
impl DnsProvider for PgDns {
    async fn publish(&self, target: &ProvisioningTarget) -> Result<(), StepError> {
        let records = self.records(target.slug.as_str());
        let (names, rest): (Vec<String>, Vec<(&str, String)>) = records
            .into_iter()
            .map(|(name, kind, value)| (name, (kind, value)))
            .unzip();
        let (types, values): (Vec<&str>, Vec<String>) = rest.into_iter().unzip();
        // Records already there for this tenant are kept; one held by another tenant is a
        // conflict the operator must resolve.
        let taken: Vec<(String,)> = sqlx::query_as(
            "WITH wanted AS (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]) \
                 AS w(name, type, value)), \
             inserted AS (INSERT INTO dns_records (name, type, value, ttl, tenant_id) \
                 SELECT name, type, value, $4, $5 FROM wanted \
                 ON CONFLICT (name, type) DO NOTHING RETURNING name) \
             SELECT d.name FROM dns_records d JOIN wanted w USING (name, type) \
             WHERE d.tenant_id <> $5",
        )
        .bind(&names)
        .bind(&types)
        .bind(&values)
        .bind(DNS_TTL)
        .bind(target.tenant_id.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| step_error("cannot publish DNS records", &db(e)))?;
        if let Some((name,)) = taken.first() {
            return Err(StepError::permanent(
                "DNS_NAME_TAKEN",
                format!("{name} is held by another tenant"),
            ));
        }
        Ok(())
    }

    async fn withdraw(&self, tenant: TenantId) -> Result<(), StepError> {
        sqlx::query("DELETE FROM dns_records WHERE tenant_id = $1")
            .bind(tenant.as_uuid())
            .execute(&self.pool)
            .await
            .map_err(|e| step_error("cannot withdraw DNS records", &db(e)))?;
        Ok(())
    }
}

/// Billing customers and subscriptions, kept in `billing_subscriptions`.
#[derive(Debug, Clone)]
pub struct PgBilling {
    pool: PgPool,
}

impl PgBilling {
    /// Subscriptions in the control-plane database.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl BillingProvider for PgBilling {
    async fn subscribe(&self, target: &ProvisioningTarget) -> Result<(), StepError> {
        let id = target.tenant_id.as_uuid().simple();
        sqlx::query(
            "INSERT INTO billing_subscriptions \
                 (tenant_id, customer_id, subscription_id, plan_id, status) \
             VALUES ($1, $2, $3, $4, 'ACTIVE') \
             ON CONFLICT (tenant_id) DO UPDATE SET plan_id = EXCLUDED.plan_id, \
                 status = 'ACTIVE', cancelled_at = NULL",
        )
        .bind(target.tenant_id.as_uuid())
        .bind(format!("cus_{id}"))
        .bind(format!("sub_{id}"))
        .bind(target.plan_id.as_str())
        .execute(&self.pool)
        .await
        .map_err(|e| step_error("cannot subscribe the tenant", &db(e)))?;
        Ok(())
    }

    async fn cancel(&self, tenant: TenantId) -> Result<(), StepError> {
        sqlx::query(
            "UPDATE billing_subscriptions SET status = 'CANCELLED', cancelled_at = now() \
             WHERE tenant_id = $1 AND status = 'ACTIVE'",
        )
        .bind(tenant.as_uuid())
        .execute(&self.pool)
        .await
        .map_err(|e| step_error("cannot cancel the subscription", &db(e)))?;
        Ok(())
    }
}

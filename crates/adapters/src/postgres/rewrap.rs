//! Re-sealing at rest (`tenantd keys rewrap`): every envelope not sealed with the key
//! ring's primary key is opened and sealed again with it — the tenants' contact emails, the
//! users' emails in each tenant schema and the unclaimed first-API-key secrets. One batched
//! loop serves all three: rows are locked one batch at a time and skipped while busy, and
//! no tenant's version changes, so it is safe while the service runs.

use std::sync::Arc;

use sqlx::PgPool;
use tenantd_domain::ports::{EmailCipher, SecretSealer};
use tenantd_domain::{RepoError, TenantId};
use uuid::Uuid;

use super::PgTenantDatabases;
use super::errors::db;
use super::providers::quoted;
use super::store::in_tx;
use super::tables::tenants::placement;

/// Re-seals what a key ring sealed, with its primary key.
#[derive(Clone)]
pub struct PgRewrap {
    pool: PgPool,
    cipher: Arc<dyn EmailCipher>,
    sealer: Arc<dyn SecretSealer>,
    tenant_schemas: Option<PgTenantDatabases>,
}

impl std::fmt::Debug for PgRewrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRewrap")
            .field("tenant_schemas", &self.tenant_schemas)
            .finish_non_exhaustive()
    }
}

/// How many envelopes a rewrap re-sealed, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rewrapped {
    /// Tenants' contact emails.
    pub contact_emails: u64,
    /// Emails of the users in the tenants' own schemas.
    pub user_emails: u64,
    /// Sealed first-API-key secrets not claimed yet.
    pub initial_keys: u64,
}

/// One kind of envelope: where it lives and how it is re-sealed.
struct Envelopes<'a> {
    /// `<table>`, possibly schema-qualified.
    table: String,
    /// The row's id column (a UUID).
    id: &'static str,
    /// The envelope column.
    envelope: &'static str,
    /// The column naming the sealing key, when the table has one; else the key id is read
    /// from the envelope itself (version byte, key id length byte, key id, ...).
    key_id: Option<&'static str>,
    /// The tenant every row belongs to (a tenant schema's table); `None`: the id is the
    /// tenant's.
    tenant: Option<TenantId>,
    /// Opens an envelope of `tenant` and seals it again.
    reseal: &'a Reseal<'a>,
}

/// Opens an envelope of a tenant and seals it again: (envelope, key id).
type Reseal<'a> = dyn Fn(TenantId, &[u8]) -> Result<(Vec<u8>, String), RepoError> + Sync + 'a;

impl PgRewrap {
    /// A rewrap over `pool` with the ring's two faces. With `tenant_schemas` (the
    /// built-in example set, whose `users` hold sealed emails), the users of every tenant
    /// schema are re-sealed too, wherever its placement puts it.
    pub fn new(
        pool: PgPool,
        cipher: Arc<dyn EmailCipher>,
        sealer: Arc<dyn SecretSealer>,
        tenant_schemas: Option<PgTenantDatabases>,
    ) -> Self {
        Self {
            pool,
            cipher,
            sealer,
            tenant_schemas,
        }
    }

    /// Re-seals everything, `batch_size` rows per transaction; first keys are sealed for
    /// `key_purpose`.
    ///
    /// # Errors
    /// Store failures, or an envelope that does not open (nothing of that batch is
    /// written; what earlier batches re-sealed stays re-sealed).
    pub async fn all(
        &self,
        key_purpose: &'static str,
        batch_size: usize,
    ) -> Result<Rewrapped, RepoError> {
        Ok(Rewrapped {
            contact_emails: self.contact_emails(batch_size).await?,
            user_emails: self.user_emails(batch_size).await?,
            initial_keys: self.initial_keys(key_purpose, batch_size).await?,
        })
    }

    /// Re-seals the tenants' contact emails; returns how many.
    ///
    /// # Errors
    /// As [`PgRewrap::all`].
    pub async fn contact_emails(&self, batch_size: usize) -> Result<u64, RepoError> {
        let reseal = |tenant, envelope: &[u8]| self.reseal_email(tenant, envelope);
        self.run(
            &self.pool,
            &Envelopes {
                table: "tenants".into(),
                id: "tenant_id",
                envelope: "contact_email_sealed",
                key_id: Some("contact_email_key_id"),
                tenant: None,
                reseal: &reseal,
            },
            batch_size,
        )
        .await
    }

    /// Re-seals the emails of every tenant schema's users; returns how many.
    ///
    /// # Errors
    /// As [`PgRewrap::all`].
    pub async fn user_emails(&self, batch_size: usize) -> Result<u64, RepoError> {
        type Placed = (Uuid, Option<String>, Option<String>, Option<String>);
        let Some(databases) = &self.tenant_schemas else {
            return Ok(0);
        };
        let tenants: Vec<Placed> = sqlx::query_as(
            "SELECT tenant_id, tenant_database, dedicated_database, tenant_schema FROM tenants \
             WHERE tenant_schema IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let reseal = |tenant, envelope: &[u8]| self.reseal_email(tenant, envelope);
        let mut total = 0;
        for (id, database, dedicated, schema) in tenants {
            let tenant = tenant_of(id)?;
            let Some(placement) = placement(database, dedicated, schema)? else {
                continue;
            };
            let (pool, own) = databases
                .pool(&placement)
                .map_err(|e| RepoError::Unavailable(e.to_string()))?;
            let resealed = self
                .run(
                    &pool,
                    &Envelopes {
                        table: format!("{}.users", quoted(&placement.schema)),
                        id: "user_id",
                        envelope: "email_sealed",
                        key_id: Some("email_key_id"),
                        tenant: Some(tenant),
                        reseal: &reseal,
                    },
                    batch_size,
                )
                .await;
            if own {
                pool.close().await;
            }
            total += resealed?;
        }
        Ok(total)
    }

    /// Re-seals the first-API-key secrets not claimed yet (sealed for `purpose`); returns
    /// how many.
    ///
    /// # Errors
    /// As [`PgRewrap::all`].
    pub async fn initial_keys(
        &self,
        purpose: &'static str,
        batch_size: usize,
    ) -> Result<u64, RepoError> {
        let reseal = |tenant, envelope: &[u8]| {
            let secret = self
                .sealer
                .open_secret(tenant, purpose, envelope)
                .map_err(|e| RepoError::Internal(format!("tenant {tenant}: {e}")))?;
            let sealed = self.sealer.seal_secret(tenant, purpose, &secret);
            Ok((sealed, self.cipher.primary_key_id()))
        };
        self.run(
            &self.pool,
            &Envelopes {
                table: "initial_api_keys".into(),
                id: "tenant_id",
                envelope: "secret_sealed",
                key_id: None,
                tenant: None,
                reseal: &reseal,
            },
            batch_size,
        )
        .await
    }

    fn reseal_email(
        &self,
        tenant: TenantId,
        envelope: &[u8],
    ) -> Result<(Vec<u8>, String), RepoError> {
        let email = self
            .cipher
            .open(tenant, envelope)
            .map_err(|e| RepoError::Internal(format!("tenant {tenant}: {e}")))?;
        let sealed = self.cipher.seal(tenant, &email);
        Ok((sealed.envelope, sealed.key_id))
    }

    /// Re-seals `kind`'s envelopes in batches until none is left on an older key; returns
    /// how many. A table that does not exist (a tenant schema dropped meanwhile) has none.
    async fn run(
        &self,
        pool: &PgPool,
        kind: &Envelopes<'_>,
        batch_size: usize,
    ) -> Result<u64, RepoError> {
        let Envelopes {
            table,
            id,
            envelope,
            ..
        } = kind;
        let stale = match kind.key_id {
            Some(column) => format!("{column} <> $1"),
            None => format!(
                "{envelope} IS NOT NULL AND convert_from(substring({envelope} \
                 FROM 3 FOR get_byte({envelope}, 1)), 'UTF8') <> $1"
            ),
        };
        let select = format!(
            "SELECT {id}, {envelope} FROM {table} WHERE {stale} LIMIT $2 FOR UPDATE SKIP LOCKED"
        );
        let update = match kind.key_id {
            Some(column) => {
                format!("UPDATE {table} SET {envelope} = $2, {column} = $3 WHERE {id} = $1")
            }
            None => format!("UPDATE {table} SET {envelope} = $2 WHERE {id} = $1"),
        };
        let primary = self.cipher.primary_key_id();
        let limit = i64::try_from(batch_size.max(1)).unwrap_or(i64::MAX);
        let mut total = 0;
        loop {
            let resealed = in_tx(pool, async |tx| {
                let selected: Result<Vec<(Uuid, Vec<u8>)>, _> =
                    sqlx::query_as(sqlx::AssertSqlSafe(select.clone()))
                        .bind(&primary)
                        .bind(limit)
                        .fetch_all(&mut *tx)
                        .await;
                let rows = match selected {
                    Ok(rows) => rows,
                    // undefined_table, invalid_schema_name: dropped meanwhile.
                    Err(sqlx::Error::Database(e))
                        if matches!(e.code().as_deref(), Some("42P01" | "3F000")) =>
                    {
                        Vec::new()
                    }
                    Err(e) => return Err(db(e)),
                };
                for (row, sealed) in &rows {
                    let tenant = match kind.tenant {
                        Some(tenant) => tenant,
                        None => tenant_of(*row)?,
                    };
                    let (sealed, key_id) = (kind.reseal)(tenant, sealed)?;
                    let mut write = sqlx::query(sqlx::AssertSqlSafe(update.clone()))
                        .bind(row)
                        .bind(sealed);
                    if kind.key_id.is_some() {
                        write = write.bind(key_id);
                    }
                    write.execute(&mut *tx).await.map_err(db)?;
                }
                Ok(rows.len() as u64)
            })
            .await?;
            if resealed == 0 {
                return Ok(total);
            }
            total += resealed;
            tracing::info!(table = %table, rewrapped = total, "re-sealed with the primary key");
        }
    }
}

fn tenant_of(id: Uuid) -> Result<TenantId, RepoError> {
    TenantId::from_uuid(id)
        .map_err(|_| RepoError::Internal("stored tenant has an invalid id".into()))
}

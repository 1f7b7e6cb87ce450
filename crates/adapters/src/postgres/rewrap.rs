//! Re-sealing at rest (`tenantd keys rewrap`): the tenants' data keys wrapped by older ring
//! keys are rewrapped with the primary one (what they sealed stays as it is), and every
//! envelope still sealed by the ring itself (written before tenants had data keys) — the
//! tenants' contact emails, the users' emails in each tenant schema and the unclaimed
//! first-API-key secrets — is sealed again with its tenant's data key (made when it has
//! none). Rows are locked one batch at a time and skipped while busy, and no tenant's
//! version changes, so it is safe while the service runs. A tenant whose data key was
//! destroyed (its purge is under way) is left to its purge.

use std::sync::Arc;

use sqlx::{PgConnection, PgPool};
use tenantd_domain::ports::{
    CipherError, DataKeyRepository, EmailCipher, SealedEmail, SecretSealer, WrappedDataKey,
};
use tenantd_domain::{Reason, RepoError, TenantId};
use uuid::Uuid;

use super::errors::db;
use super::providers::quoted;
use super::store::in_tx;
use super::tables::tenants::placement;
use super::{PgStore, PgTenantDatabases, data_keys};

/// Re-seals what a key ring sealed: data keys with its primary key, the rest with the
/// tenants' data keys.
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

/// What a rewrap did, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rewrapped {
    /// Tenants' data keys rewrapped with the primary ring key.
    pub data_keys: u64,
    /// Tenants' contact emails moved from the ring to their tenant's data key.
    pub contact_emails: u64,
    /// Emails of the users in the tenants' own schemas, moved likewise.
    pub user_emails: u64,
    /// Sealed first-API-key secrets not claimed yet, moved likewise.
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
    /// The column naming the sealing key ([`SealedEmail::DATA_KEY`] once on the data key),
    /// when the table has one; else the envelope's version byte tells.
    key_id: Option<&'static str>,
    /// Whose data key seals the rows: the tenant of a tenant schema's table (its key read
    /// beforehand), or (`None`) the tenant whose id is the row's, its key read in the
    /// batch's transaction (the table is the control plane's).
    tenant: Option<(TenantId, WrappedDataKey)>,
    /// Opens an envelope of the ring and seals it with the data key: (envelope, key id).
    reseal: &'a Reseal<'a>,
}

/// Opens a ring envelope of a tenant and seals it with the tenant's data key.
type Reseal<'a> =
    dyn Fn(TenantId, &WrappedDataKey, &[u8]) -> Result<(Vec<u8>, String), RepoError> + Sync + 'a;

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
            data_keys: self.data_keys(batch_size).await?,
            contact_emails: self.contact_emails(batch_size).await?,
            user_emails: self.user_emails(batch_size).await?,
            initial_keys: self.initial_keys(key_purpose, batch_size).await?,
        })
    }

    /// Rewraps the tenants' data keys wrapped by older ring keys; returns how many.
    ///
    /// # Errors
    /// As [`PgRewrap::all`].
    pub async fn data_keys(&self, batch_size: usize) -> Result<u64, RepoError> {
        let keys = PgStore::new(self.pool.clone(), self.cipher.clone());
        let primary = self.cipher.primary_key_id();
        let mut total = 0;
        loop {
            let stale = keys.wrapped_by_other(&primary, batch_size.max(1)).await?;
            if stale.is_empty() {
                return Ok(total);
            }
            for (tenant, old) in stale {
                let new = self.cipher.rewrap_data_key(tenant, &old).map_err(|e| {
                    RepoError::Internal(format!("data key of tenant {tenant}: {e}"))
                })?;
                // `false`: rewrapped or destroyed meanwhile; either way no longer stale.
                if keys.replace(tenant, &old, &new).await? {
                    total += 1;
                }
            }
            tracing::info!(
                rewrapped = total,
                "data keys rewrapped with the primary key"
            );
        }
    }

    /// Moves the contact emails still sealed by the ring to their tenant's data key;
    /// returns how many.
    ///
    /// # Errors
    /// As [`PgRewrap::all`].
    pub async fn contact_emails(&self, batch_size: usize) -> Result<u64, RepoError> {
        let reseal = |tenant, key: &WrappedDataKey, envelope: &[u8]| {
            self.reseal_email(tenant, key, envelope)
        };
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

    /// Moves the emails of every tenant schema's users still sealed by the ring to their
    /// tenant's data key; returns how many.
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
        let reseal = |tenant, key: &WrappedDataKey, envelope: &[u8]| {
            self.reseal_email(tenant, key, envelope)
        };
        let mut total = 0;
        for (id, database, dedicated, schema) in tenants {
            let tenant = tenant_of(id)?;
            let Some(placement) = placement(database, dedicated, schema)? else {
                continue;
            };
            let Some(key) = self.key_of(tenant).await? else {
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
                        tenant: Some((tenant, key)),
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

    /// Moves the first-API-key secrets not claimed yet (sealed for `purpose`) still sealed
    /// by the ring to their tenant's data key; returns how many.
    ///
    /// # Errors
    /// As [`PgRewrap::all`].
    pub async fn initial_keys(
        &self,
        purpose: &'static str,
        batch_size: usize,
    ) -> Result<u64, RepoError> {
        let reseal = |tenant, key: &WrappedDataKey, envelope: &[u8]| {
            let secret = self
                .sealer
                .open_secret(tenant, purpose, envelope)
                .map_err(failed(tenant))?;
            let sealed = self
                .sealer
                .seal_with(tenant, key, purpose, &secret)
                .map_err(failed(tenant))?;
            Ok((sealed, SealedEmail::DATA_KEY.to_owned()))
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

    /// Opens a contact or user email sealed by the ring and seals it with `key`.
    fn reseal_email(
        &self,
        tenant: TenantId,
        key: &WrappedDataKey,
        envelope: &[u8],
    ) -> Result<(Vec<u8>, String), RepoError> {
        let email = self.cipher.open(tenant, envelope).map_err(failed(tenant))?;
        let sealed = self
            .cipher
            .seal_with_key(tenant, key, &email)
            .map_err(failed(tenant))?;
        Ok((sealed.envelope, sealed.key_id))
    }

    /// `tenant`'s data key (made if it has none); `None` once its purge destroyed it.
    async fn key_of(&self, tenant: TenantId) -> Result<Option<WrappedDataKey>, RepoError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let fresh = self.cipher.new_data_key(tenant);
        match data_keys::get_or_create(&mut conn, tenant, fresh).await {
            Ok(key) => Ok(Some(key)),
            Err(RepoError::Precondition(Reason::TenantPurged, _)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Re-seals `kind`'s ring envelopes in batches until none is left; returns how many. A
    /// table that does not exist (a tenant schema dropped meanwhile) has none.
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
        let on_ring = match kind.key_id {
            Some(column) => format!("{column} <> '{}'", SealedEmail::DATA_KEY),
            None => format!("{envelope} IS NOT NULL AND get_byte({envelope}, 0) = 1"),
        };
        // A destroyed key is never made again: those rows are the purge's.
        let stale = if kind.tenant.is_none() {
            format!(
                "{on_ring} AND NOT EXISTS (SELECT 1 FROM tenant_data_keys k \
                 WHERE k.tenant_id = {table}.{id} AND k.data_key_destroyed_at IS NOT NULL)"
            )
        } else {
            on_ring
        };
        let select = format!(
            "SELECT {id}, {envelope} FROM {table} WHERE {stale} LIMIT $1 FOR UPDATE SKIP LOCKED"
        );
        let update = match kind.key_id {
            Some(column) => {
                format!("UPDATE {table} SET {envelope} = $2, {column} = $3 WHERE {id} = $1")
            }
            None => format!("UPDATE {table} SET {envelope} = $2 WHERE {id} = $1"),
        };
        let limit = i64::try_from(batch_size.max(1)).unwrap_or(i64::MAX);
        let mut total = 0;
        loop {
            let resealed = in_tx(pool, async |tx| {
                let selected: Result<Vec<(Uuid, Vec<u8>)>, _> =
                    sqlx::query_as(sqlx::AssertSqlSafe(select.clone()))
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
                    let (tenant, key) = if let Some((tenant, key)) = &kind.tenant {
                        (*tenant, key.clone())
                    } else {
                        let tenant = tenant_of(*row)?;
                        (tenant, self.key_in(tx, tenant).await?)
                    };
                    let (sealed, key_id) = (kind.reseal)(tenant, &key, sealed)?;
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
            tracing::info!(table = %table, rewrapped = total, "sealed with the tenants' data keys");
        }
    }

    /// `tenant`'s data key (made if it has none) in the transaction `tx`.
    async fn key_in(
        &self,
        tx: &mut PgConnection,
        tenant: TenantId,
    ) -> Result<WrappedDataKey, RepoError> {
        let fresh = self.cipher.new_data_key(tenant);
        data_keys::get_or_create(tx, tenant, fresh).await
    }
}

/// What an envelope of `tenant` that does not open (or seal) becomes.
fn failed(tenant: TenantId) -> impl Fn(CipherError) -> RepoError {
    move |e| RepoError::Internal(format!("tenant {tenant}: {e}"))
}

fn tenant_of(id: Uuid) -> Result<TenantId, RepoError> {
    TenantId::from_uuid(id)
        .map_err(|_| RepoError::Internal("stored tenant has an invalid id".into()))
}

//! The PostgreSQL store: one pool and the contact-email cipher, shared by the port
//! implementations in the sibling files (one file per port), and [`in_tx`], the one
//! transaction helper every multi-statement write and snapshot read goes through. (The
//! outbox's claimed batch is the one transaction that outlives a call: the batch owns it
//! until it is finished or dropped.)

use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use sqlx::{PgConnection, PgPool};
use tenantd_domain::RepoError;
use tenantd_domain::ports::EmailCipher;

use super::errors::db;

/// The PostgreSQL store: implements the tenant, provisioning-run, API key, first-key,
/// event log, outbox and audit ports (see the sibling files). Contact emails are sealed
/// with `cipher` on the way in and opened on the way out; the database never sees them in
/// clear.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    cipher: Arc<dyn EmailCipher>,
    /// When this store last started a sweep of expired idempotency records (Unix seconds).
    pub(crate) last_idempotency_sweep: Arc<AtomicI64>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// A store over `pool` (migrated), sealing contact emails with `cipher`.
    pub fn new(pool: PgPool, cipher: Arc<dyn EmailCipher>) -> Self {
        Self {
            pool,
            cipher,
            last_idempotency_sweep: Arc::default(),
        }
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) fn cipher(&self) -> &dyn EmailCipher {
        &*self.cipher
    }

    /// Runs `work` in a transaction of the store's pool (see [`in_tx`]).
    pub(crate) async fn in_tx<T>(
        &self,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, RepoError>,
    ) -> Result<T, RepoError> {
        in_tx(&self.pool, work).await
    }

    /// The pool's connections now: (open, idle, maximum).
    pub fn pool_stats(&self) -> (u32, u32, u32) {
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX);
        (
            self.pool.size(),
            idle,
            self.pool.options().get_max_connections(),
        )
    }

    /// Whether the database answers a trivial query now.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] when it does not.
    pub async fn ping(&self) -> Result<(), RepoError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }
}

/// Runs `work` in a transaction on `pool`: committed when `work` succeeds, rolled back at
/// once when it fails (a dropped transaction would only be rolled back when its connection
/// is next used, holding its locks until then). What `work` returned is returned.
///
/// # Errors
/// `work`'s error, or the store's when the transaction cannot begin or commit (a commit
/// whose answer was lost may still have committed).
pub(crate) async fn in_tx<T>(
    pool: &PgPool,
    work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, RepoError>,
) -> Result<T, RepoError> {
    let mut tx = pool.begin().await.map_err(db)?;
    match work(&mut tx).await {
        Ok(value) => {
            tx.commit().await.map_err(db)?;
            Ok(value)
        }
        Err(err) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(error = %rollback, "rollback failed; the connection is discarded");
            }
            Err(err)
        }
    }
}

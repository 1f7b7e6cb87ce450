//! The PostgreSQL store: one pool and the contact-email cipher, shared by the port
//! implementations in the sibling files (one file per port), and [`in_tx`], the one
//! transaction helper every multi-statement write and snapshot read goes through. (The
//! outbox's claimed batch is the one transaction that outlives a call: the batch owns it
//! until it is finished or dropped.)

use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use sqlx::{Connection as _, PgConnection, PgPool};
use tenantd_domain::RepoError;
use tenantd_domain::ports::EmailCipher;

use super::errors::db;
use super::held::Held;

/// The PostgreSQL store: implements the tenant, provisioning-run, API key, first-key,
/// event log, outbox and audit ports (see the sibling files). Contact emails are sealed
/// with `cipher` on the way in and opened on the way out; the database never sees them in
/// clear.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Connections kept between calls (see `held.rs`).
    held: Arc<Held>,
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
    /// A store over `pool` (migrated), sealing contact emails with `cipher`, keeping most
    /// of the pool's connections between calls (see `held.rs`): for the pool of calls,
    /// which only the store uses.
    pub fn new(pool: PgPool, cipher: Arc<dyn EmailCipher>) -> Self {
        Self::with(Held::new(pool.clone()), pool, cipher)
    }

    /// A store over `pool` keeping no connection between calls: for a pool other code
    /// takes connections from too (background work shares its pool with the providers).
    pub fn sharing(pool: PgPool, cipher: Arc<dyn EmailCipher>) -> Self {
        Self::with(Held::none(pool.clone()), pool, cipher)
    }

    fn with(held: Arc<Held>, pool: PgPool, cipher: Arc<dyn EmailCipher>) -> Self {
        Self {
            held,
            pool,
            cipher,
            last_idempotency_sweep: Arc::default(),
        }
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    #[cfg(test)]
    pub(crate) fn held(&self) -> &Held {
        &self.held
    }

    pub(crate) fn cipher(&self) -> &dyn EmailCipher {
        &*self.cipher
    }

    /// Runs `work` on one of the store's connections, kept for the next call when `work`
    /// succeeds (see `held.rs`): for single statements, which `work` runs to completion.
    pub(crate) async fn on_conn<T>(
        &self,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        let mut lease = self.held.acquire().await?;
        let value = work(lease.conn()).await?;
        lease.finish();
        Ok(value)
    }

    /// Runs `work` in a transaction on one of the store's connections (see [`in_tx`]);
    /// the connection is kept for the next call once the transaction has ended cleanly.
    pub(crate) async fn in_tx<T>(
        &self,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, RepoError>,
    ) -> Result<T, RepoError> {
        let mut lease = self.held.acquire().await.map_err(db)?;
        let mut tx = lease.conn().begin().await.map_err(db)?;
        let result = work(&mut tx).await;
        let ended = match &result {
            Ok(_) => tx.commit().await.map_err(db),
            Err(_) => tx.rollback().await.map_err(|rollback| {
                tracing::warn!(error = %rollback, "rollback failed; the connection is discarded");
                db(rollback)
            }),
        };
        match (result, ended) {
            (Ok(value), Ok(())) => {
                lease.finish();
                Ok(value)
            }
            (Ok(_), Err(commit)) => Err(commit),
            (Err(err), Ok(())) => {
                lease.finish();
                Err(err)
            }
            (Err(err), Err(_)) => Err(err),
        }
    }

    /// The pool's connections now: (open, idle, maximum); the connections the store keeps
    /// idle between calls count as idle.
    pub fn pool_stats(&self) -> (u32, u32, u32) {
        let idle = u32::try_from(self.pool.num_idle() + self.held.idle_count()).unwrap_or(u32::MAX);
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
        self.on_conn(async |conn| sqlx::query("SELECT 1").execute(conn).await)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Whether every migration this build embeds is applied (a database restored from an
    /// older backup, or migrated by nobody yet, is not).
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] when the database does not answer;
    /// [`RepoError::Internal`] naming the newest migration missing.
    pub async fn migrated(&self) -> Result<(), RepoError> {
        let applied: Vec<i64> = self
            .on_conn(async |conn| {
                sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                    .fetch_all(conn)
                    .await
            })
            .await
            .map_err(db)?;
        let missing: Vec<i64> = super::MIGRATOR
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect();
        match missing.last() {
            None => Ok(()),
            Some(newest) => Err(RepoError::Internal(format!(
                "{} migrations not applied (the newest: {newest})",
                missing.len()
            ))),
        }
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

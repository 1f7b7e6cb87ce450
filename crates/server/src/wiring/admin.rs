//! The admin commands that open the configured store without serving it: `tenantd
//! migrate` and `tenantd keys rewrap`.

use std::sync::Arc;

use anyhow::Context as _;
use tenantd_adapters::postgres::{self, PgRewrap, Rewrapped};
use tenantd_application::INITIAL_KEY_PURPOSE;

use super::key_ring;
use crate::config::{Config, Store};

/// Applies the migrations of the configured database (`tenantd migrate`).
///
/// # Errors
/// When no database is configured, or it is unreachable, or a migration fails.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let Store::Postgres { url, pool, .. } = &config.store else {
        anyhow::bail!(
            "database-url: no database is configured (set DATABASE_URL or --database-url)"
        );
    };
    let pool = postgres::connect(url.expose(), pool)
        .await
        .context("database-url")?;
    postgres::migrate(&pool).await.context("database-url")?;
    pool.close().await;
    Ok(())
}

/// Re-seals everything still sealed with older keys (`tenantd keys rewrap`): contact
/// emails, the tenant schemas' user emails, unclaimed first-API-key secrets.
///
/// # Errors
/// When no database is configured, the keys are invalid, or the database fails.
pub async fn rewrap(config: &Config, batch_size: usize) -> anyhow::Result<Rewrapped> {
    let Store::Postgres { url, pool, .. } = &config.store else {
        anyhow::bail!(
            "database-url: no database is configured (set DATABASE_URL or --database-url)"
        );
    };
    let ring = Arc::new(key_ring(config)?);
    let pool = postgres::connect(url.expose(), pool)
        .await
        .context("database-url")?;
    let rewrapped = PgRewrap::new(
        pool.clone(),
        ring.clone(),
        ring,
        &config.tenants.schema_prefix,
    )
    .all(INITIAL_KEY_PURPOSE, batch_size)
    .await
    .map_err(|e| anyhow::anyhow!("rewrap: {e}"));
    pool.close().await;
    rewrapped
}

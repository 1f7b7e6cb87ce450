//! The admin commands that open the configured store without serving it: `tenantd
//! migrate`, `tenantd keys rewrap` and `tenantd tenant-migrations status`.

use std::sync::Arc;

use anyhow::Context as _;
use tenantd_adapters::postgres::{self, PgRewrap, PgStore, Rewrapped};
use tenantd_application::{INITIAL_KEY_PURPOSE, SchemaStatus};
use tenantd_domain::ports::{RolloutRepository as _, TenantSchemaRepository as _};
use tenantd_domain::tenant_schema::Rollout;

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
    let tenant_schemas = config
        .tenant_schemas
        .built_in()
        .then(|| super::tenant_databases(config, pool.clone(), ring.clone()))
        .transpose()?;
    let rewrapped = PgRewrap::new(pool.clone(), ring.clone(), ring, tenant_schemas)
        .all(INITIAL_KEY_PURPOSE, batch_size)
        .await
        .map_err(|e| anyhow::anyhow!("rewrap: {e}"));
    pool.close().await;
    rewrapped
}

/// How far the tenant schemas are (`tenantd tenant-migrations status`): schemas per
/// version against the configured set's newest, and the rollout running or paused.
///
/// # Errors
/// When no database is configured or it cannot be read.
pub async fn tenant_migration_status(
    config: &Config,
) -> anyhow::Result<(SchemaStatus, Option<Rollout>)> {
    let Store::Postgres { url, pool, .. } = &config.store else {
        anyhow::bail!(
            "database-url: tenant schemas are recorded in the database (set DATABASE_URL or --database-url)"
        );
    };
    let ring = Arc::new(key_ring(config)?);
    let pool = postgres::connect(url.expose(), pool)
        .await
        .context("database-url")?;
    postgres::migrate(&pool).await.context("database-url")?;
    let store = PgStore::sharing(pool.clone(), ring);
    let read = async {
        let versions = store.versions().await?;
        let active = store.active().await?;
        Ok::<_, tenantd_domain::RepoError>((versions, active))
    };
    let read = read.await;
    pool.close().await;
    let (versions, active) = read.map_err(|e| anyhow::anyhow!("database-url: {e}"))?;
    Ok((
        SchemaStatus {
            newest: config.tenant_schemas.migrations.newest(),
            versions,
        },
        active,
    ))
}

//! The cache decorators: [`TenantRepository`], [`ProvisioningRepository`],
//! [`PurgeRepository`] and [`ApiKeyRepository`] in front of a store, reading tenants and keys through the
//! in-process tier (when there is one, `local.rs`) and the [`RedisCache`], and
//! invalidating both after every write to what they cache.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tenantd_domain::ports::{
    ApiKeyRepository, ClaimedPurge, ClaimedRun, EmailCipher, IdempotencyRecord, Lease,
    ProvisioningRepository, PurgeRepository, PurgeWrite, RunWrite, TenantQuery, TenantRepository,
};
use tenantd_domain::provisioning::{ProvisioningRun, RunId};
use tenantd_domain::purge::Purge;
use tenantd_domain::{ApiKey, ApiKeyId, Event, RepoError, Tenant, TenantId};

use super::RedisCache;
use super::entries::{decode_key, decode_tenant, encode_key, encode_tenant};
use super::local::LocalTier;

/// The in-process tier of tenants.
pub type TenantTier = LocalTier<TenantId, Tenant>;
/// The in-process tier of API keys.
pub type ApiKeyTier = LocalTier<ApiKeyId, ApiKey>;

/// Reads `id` from `local` if it holds it, else with `read` (Redis, then the database),
/// keeping what was found in `local` unless it was invalidated meanwhile.
async fn through_local<K, V, Fut>(
    local: Option<&LocalTier<K, V>>,
    cache: &RedisCache,
    name: &'static str,
    id: K,
    read: impl FnOnce() -> Fut,
) -> Result<Option<V>, RepoError>
where
    K: std::hash::Hash + Eq + Send + Sync + Clone + 'static,
    V: Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Option<V>, RepoError>>,
{
    let Some(local) = local else {
        return read().await;
    };
    if let Some(value) = local.get(&id) {
        cache.observer().local_hit(name);
        return Ok(Some(value));
    }
    let epoch = local.epoch();
    let found = read().await?;
    if let Some(value) = &found {
        local.put(&id, value.clone(), epoch);
    }
    Ok(found)
}

const TENANT: &str = "tenant";
const API_KEY: &str = "api_key";

/// [`TenantRepository`] reading tenants through the cache.
pub struct CachedTenants {
    inner: Arc<dyn TenantRepository>,
    cache: Arc<RedisCache>,
    cipher: Arc<dyn EmailCipher>,
    local: Option<Arc<TenantTier>>,
}

impl std::fmt::Debug for CachedTenants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedTenants").finish_non_exhaustive()
    }
}

impl CachedTenants {
    /// `inner` behind `cache`; entries are sealed and opened with `cipher`.
    pub fn new(
        inner: Arc<dyn TenantRepository>,
        cache: Arc<RedisCache>,
        cipher: Arc<dyn EmailCipher>,
    ) -> Self {
        Self {
            inner,
            cache,
            cipher,
            local: None,
        }
    }

    /// With the in-process tier `local` in front of Redis.
    #[must_use]
    pub fn with_local(mut self, local: Arc<TenantTier>) -> Self {
        self.local = Some(local);
        self
    }
}

#[async_trait]
impl TenantRepository for CachedTenants {
    async fn create(
        &self,
        tenant: &Tenant,
        run: &ProvisioningRun,
        events: &[Event],
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<(), RepoError> {
        self.inner.create(tenant, run, events, idempotency).await
    }

    async fn get(&self, id: TenantId) -> Result<Option<Tenant>, RepoError> {
        let key = id.to_string();
        through_local(self.local.as_deref(), &self.cache, TENANT, id, || {
            self.cache.read_through(
                TENANT,
                &key,
                |bytes| decode_tenant(bytes, id, self.cipher.as_ref()),
                |tenant| encode_tenant(tenant, self.cipher.as_ref()),
                || self.inner.get(id),
            )
        })
        .await
    }

    async fn update(
        &self,
        tenant: &Tenant,
        expected_version: u64,
        events: &[Event],
    ) -> Result<(), RepoError> {
        let result = self.inner.update(tenant, expected_version, events).await;
        if let Some(local) = &self.local {
            local.invalidate(&tenant.id());
        }
        self.cache
            .drop_entry(TENANT, &tenant.id().to_string())
            .await;
        result
    }

    async fn list(&self, query: &TenantQuery) -> Result<Vec<Tenant>, RepoError> {
        self.inner.list(query).await
    }

    async fn find_idempotency(
        &self,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, RepoError> {
        self.inner.find_idempotency(request_id, now).await
    }
}

/// [`ProvisioningRepository`] dropping the cached tenant whenever its run is saved (the
/// tenant carries the run's summary, and a save may change its status).
pub struct CachedRuns {
    inner: Arc<dyn ProvisioningRepository>,
    cache: Arc<RedisCache>,
    local: Option<Arc<TenantTier>>,
}

impl std::fmt::Debug for CachedRuns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedRuns").finish_non_exhaustive()
    }
}

impl CachedRuns {
    /// `inner`, invalidating `cache`'s tenants.
    pub fn new(inner: Arc<dyn ProvisioningRepository>, cache: Arc<RedisCache>) -> Self {
        Self {
            inner,
            cache,
            local: None,
        }
    }

    /// Invalidating the in-process tier of tenants `local` too.
    #[must_use]
    pub fn with_local(mut self, local: Arc<TenantTier>) -> Self {
        self.local = Some(local);
        self
    }
}

#[async_trait]
impl ProvisioningRepository for CachedRuns {
    async fn latest(&self, tenant: TenantId) -> Result<Option<ProvisioningRun>, RepoError> {
        self.inner.latest(tenant).await
    }

    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: chrono::Duration,
    ) -> Result<Option<ClaimedRun>, RepoError> {
        self.inner.claim(owner, now, lease_for).await
    }

    async fn renew(
        &self,
        run: RunId,
        version: u64,
        lease: &Lease,
        until: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        self.inner.renew(run, version, lease, until).await
    }

    async fn release(&self, run: RunId, lease: &Lease) -> Result<(), RepoError> {
        self.inner.release(run, lease).await
    }

    async fn save(&self, write: RunWrite<'_>) -> Result<(), RepoError> {
        let result = self.inner.save(write).await;
        if let Some(local) = &self.local {
            local.invalidate(&write.run.tenant_id);
        }
        self.cache
            .drop_entry(TENANT, &write.run.tenant_id.to_string())
            .await;
        result
    }

    async fn overdue(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<TenantId>, RepoError> {
        self.inner.overdue(now, limit).await
    }

    async fn running(&self) -> Result<u64, RepoError> {
        self.inner.running().await
    }
}

/// [`PurgeRepository`] dropping the cached tenant whenever its purge changes it (the start
/// makes it PURGING, the end its tombstone).
pub struct CachedPurges {
    inner: Arc<dyn PurgeRepository>,
    cache: Arc<RedisCache>,
    local: Option<Arc<TenantTier>>,
}

impl std::fmt::Debug for CachedPurges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedPurges").finish_non_exhaustive()
    }
}

impl CachedPurges {
    /// `inner`, invalidating `cache`'s tenants.
    pub fn new(inner: Arc<dyn PurgeRepository>, cache: Arc<RedisCache>) -> Self {
        Self {
            inner,
            cache,
            local: None,
        }
    }

    /// Invalidating the in-process tier of tenants `local` too.
    #[must_use]
    pub fn with_local(mut self, local: Arc<TenantTier>) -> Self {
        self.local = Some(local);
        self
    }

    async fn invalidate(&self, tenant: TenantId) {
        if let Some(local) = &self.local {
            local.invalidate(&tenant);
        }
        self.cache.drop_entry(TENANT, &tenant.to_string()).await;
    }
}

#[async_trait]
impl PurgeRepository for CachedPurges {
    async fn start(
        &self,
        tenant: &Tenant,
        expected_version: u64,
        purge: &Purge,
        events: &[Event],
    ) -> Result<(), RepoError> {
        let result = self
            .inner
            .start(tenant, expected_version, purge, events)
            .await;
        self.invalidate(tenant.id()).await;
        result
    }

    async fn get(&self, tenant: TenantId) -> Result<Option<Purge>, RepoError> {
        self.inner.get(tenant).await
    }

    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: chrono::Duration,
    ) -> Result<Option<ClaimedPurge>, RepoError> {
        self.inner.claim(owner, now, lease_for).await
    }

    async fn renew(
        &self,
        tenant: TenantId,
        version: u64,
        lease: &Lease,
        until: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        self.inner.renew(tenant, version, lease, until).await
    }

    async fn release(&self, tenant: TenantId, lease: &Lease) -> Result<(), RepoError> {
        self.inner.release(tenant, lease).await
    }

    async fn save(&self, write: PurgeWrite<'_>) -> Result<(), RepoError> {
        let result = self.inner.save(write).await;
        if write.tenant.is_some() {
            self.invalidate(write.purge.tenant_id).await;
        }
        result
    }

    async fn purgeable(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<TenantId>, RepoError> {
        self.inner.purgeable(now, limit).await
    }

    async fn forget_requests(&self, tenant: TenantId) -> Result<u64, RepoError> {
        self.inner.forget_requests(tenant).await
    }

    async fn release_slugs(&self, before: DateTime<Utc>) -> Result<u64, RepoError> {
        self.inner.release_slugs(before).await
    }

    async fn running(&self) -> Result<u64, RepoError> {
        self.inner.running().await
    }
}

/// [`ApiKeyRepository`] reading keys through the cache.
pub struct CachedApiKeys {
    inner: Arc<dyn ApiKeyRepository>,
    cache: Arc<RedisCache>,
    local: Option<Arc<ApiKeyTier>>,
}

impl std::fmt::Debug for CachedApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedApiKeys").finish_non_exhaustive()
    }
}

impl CachedApiKeys {
    /// `inner` behind `cache`.
    pub fn new(inner: Arc<dyn ApiKeyRepository>, cache: Arc<RedisCache>) -> Self {
        Self {
            inner,
            cache,
            local: None,
        }
    }

    /// With the in-process tier `local` in front of Redis.
    #[must_use]
    pub fn with_local(mut self, local: Arc<ApiKeyTier>) -> Self {
        self.local = Some(local);
        self
    }

    fn forget_locally(&self, id: ApiKeyId) {
        if let Some(local) = &self.local {
            local.invalidate(&id);
        }
    }
}

#[async_trait]
impl ApiKeyRepository for CachedApiKeys {
    async fn create(
        &self,
        key: &ApiKey,
        events: &[Event],
        max_active: u32,
        now: DateTime<Utc>,
    ) -> Result<(), RepoError> {
        self.inner.create(key, events, max_active, now).await
    }

    async fn get(&self, id: ApiKeyId) -> Result<Option<ApiKey>, RepoError> {
        let key = id.0.to_string();
        through_local(self.local.as_deref(), &self.cache, API_KEY, id, || {
            self.cache.read_through(
                API_KEY,
                &key,
                |bytes| decode_key(bytes, id),
                encode_key,
                || self.inner.get(id),
            )
        })
        .await
    }

    async fn list(
        &self,
        tenant: TenantId,
        after: Option<ApiKeyId>,
        limit: usize,
        active_at: Option<DateTime<Utc>>,
    ) -> Result<Vec<ApiKey>, RepoError> {
        self.inner.list(tenant, after, limit, active_at).await
    }

    async fn revoke(
        &self,
        id: ApiKeyId,
        at: DateTime<Utc>,
        events: &[Event],
    ) -> Result<DateTime<Utc>, RepoError> {
        let result = self.inner.revoke(id, at, events).await;
        self.forget_locally(id);
        self.cache.drop_entry(API_KEY, &id.0.to_string()).await;
        result
    }

    async fn touch(&self, id: ApiKeyId, at: DateTime<Utc>) -> Result<(), RepoError> {
        let result = self.inner.touch(id, at).await;
        self.forget_locally(id);
        self.cache.drop_entry(API_KEY, &id.0.to_string()).await;
        result
    }
}

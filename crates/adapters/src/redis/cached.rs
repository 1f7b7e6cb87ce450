//! The cache decorators: [`TenantRepository`], [`ProvisioningRepository`] and
//! [`ApiKeyRepository`] in front of a store, reading tenants and keys through the
//! [`RedisCache`] and invalidating after every write to what it caches.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tenantd_domain::ports::{
    ApiKeyRepository, ClaimedRun, EmailCipher, IdempotencyRecord, Lease, ProvisioningRepository,
    RunWrite, TenantQuery, TenantRepository,
};
use tenantd_domain::provisioning::{ProvisioningRun, RunId};
use tenantd_domain::{ApiKey, ApiKeyId, Event, RepoError, Tenant, TenantId};

use super::RedisCache;
use super::entries::{decode_key, decode_tenant, encode_key, encode_tenant};

const TENANT: &str = "tenant";
const API_KEY: &str = "api_key";

/// [`TenantRepository`] reading tenants through the cache.
pub struct CachedTenants {
    inner: Arc<dyn TenantRepository>,
    cache: Arc<RedisCache>,
    cipher: Arc<dyn EmailCipher>,
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
        }
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
        self.cache
            .read_through(
                TENANT,
                &key,
                |bytes| decode_tenant(bytes, id, self.cipher.as_ref()),
                |tenant| encode_tenant(tenant, self.cipher.as_ref()),
                || self.inner.get(id),
            )
            .await
    }

    async fn update(
        &self,
        tenant: &Tenant,
        expected_version: u64,
        events: &[Event],
    ) -> Result<(), RepoError> {
        let result = self.inner.update(tenant, expected_version, events).await;
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
}

impl std::fmt::Debug for CachedRuns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedRuns").finish_non_exhaustive()
    }
}

impl CachedRuns {
    /// `inner`, invalidating `cache`'s tenants.
    pub fn new(inner: Arc<dyn ProvisioningRepository>, cache: Arc<RedisCache>) -> Self {
        Self { inner, cache }
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

/// [`ApiKeyRepository`] reading keys through the cache.
pub struct CachedApiKeys {
    inner: Arc<dyn ApiKeyRepository>,
    cache: Arc<RedisCache>,
}

impl std::fmt::Debug for CachedApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedApiKeys").finish_non_exhaustive()
    }
}

impl CachedApiKeys {
    /// `inner` behind `cache`.
    pub fn new(inner: Arc<dyn ApiKeyRepository>, cache: Arc<RedisCache>) -> Self {
        Self { inner, cache }
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
        self.cache
            .read_through(
                API_KEY,
                &key,
                |bytes| decode_key(bytes, id),
                encode_key,
                || self.inner.get(id),
            )
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
        self.cache.drop_entry(API_KEY, &id.0.to_string()).await;
        result
    }

    async fn touch(&self, id: ApiKeyId, at: DateTime<Utc>) -> Result<(), RepoError> {
        let result = self.inner.touch(id, at).await;
        self.cache.drop_entry(API_KEY, &id.0.to_string()).await;
        result
    }
}

//! Tenants, their event log and idempotency records in one mutex-guarded state.
//!
//! With a cipher (as the embedded mode runs it, with an ephemeral key), contact emails are
//! kept sealed here too: stored tenants carry a placeholder address and the envelope lives
//! beside them, opened on every read, like the PostgreSQL store does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tenantd_domain::ports::{
    ApiKeyRepository, AuditLog, ClaimedRun, EmailCipher, EventLog, IdempotencyRecord, InitialKey,
    InitialKeyOutcome, InitialKeyStore, Lease, Outbox, OutboxBacklog, OutboxBatch,
    ProvisioningRepository, RunWrite, TenantQuery, TenantRepository,
};
use tenantd_domain::provisioning::{ProvisioningRun, RunId, RunState};
use tenantd_domain::{
    ApiKey, ApiKeyId, AuditQuery, AuditRecord, ContactEmail, Event, EventId, RepoError, Tenant,
    TenantId, TenantStatus,
};

#[derive(Debug, Default)]
struct State {
    tenants: BTreeMap<TenantId, Tenant>,
    /// Keyed by event id: UUIDv7, so iteration is append order.
    events: BTreeMap<EventId, Event>,
    /// The outbox: events not yet published, in id order.
    unpublished: BTreeMap<EventId, TenantId>,
    /// Unpublished events a relay's batch holds.
    in_flight: HashSet<EventId>,
    idempotency: HashMap<String, IdempotencyRecord>,
    /// Sealed contact emails (envelope, blind index) of stored tenants, with a cipher.
    sealed: HashMap<TenantId, Sealed>,
    /// Sealed contact emails of idempotency responses, by request id, with a cipher.
    sealed_responses: HashMap<String, Sealed>,
    api_keys: BTreeMap<ApiKeyId, ApiKey>,
    /// Keyed by id (UUIDv7): time order. Bounded, oldest dropped first: the embedded mode
    /// keeps no more history than it can hold in memory.
    audit: BTreeMap<uuid::Uuid, AuditRecord>,
    /// Provisioning runs and the lease on each.
    runs: BTreeMap<RunId, (ProvisioningRun, Option<Lease>)>,
    /// Each tenant's latest run.
    latest_run: HashMap<TenantId, RunId>,
    /// First admin keys, by tenant.
    initial_keys: HashMap<TenantId, InitialKey>,
}

impl State {
    fn latest(&self, tenant: TenantId) -> Option<&ProvisioningRun> {
        let id = self.latest_run.get(&tenant)?;
        self.runs.get(id).map(|(run, _)| run)
    }

    /// Stores `key` unless its tenant is missing, deleted or at `max_active` active keys.
    fn insert_key(
        &mut self,
        key: &ApiKey,
        events: &[Event],
        max_active: u32,
        now: DateTime<Utc>,
    ) -> Result<(), RepoError> {
        match self.tenants.get(&key.tenant_id) {
            None => return Err(RepoError::NotFound),
            Some(t) if t.status() == TenantStatus::Deleted => {
                return Err(RepoError::Precondition(
                    "a deleted tenant cannot get API keys".into(),
                ));
            }
            Some(_) => {}
        }
        let active = self
            .api_keys
            .values()
            .filter(|k| k.tenant_id == key.tenant_id && k.is_active(now))
            .count();
        if active >= usize::try_from(max_active).unwrap_or(usize::MAX) {
            return Err(RepoError::LimitReached);
        }
        self.api_keys.insert(key.id, key.clone());
        append(self, events);
        Ok(())
    }
}

/// Most audit records the in-memory store keeps.
const MAX_AUDIT_RECORDS: usize = 100_000;

/// A sealed contact email and its blind index.
#[derive(Debug, Clone)]
struct Sealed {
    envelope: Vec<u8>,
    index: [u8; 32],
}

/// The in-memory tenant store; cheap to clone (clones share the state).
#[derive(Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    cipher: Option<Arc<dyn EmailCipher>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("sealed", &self.cipher.is_some())
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store keeping contact emails as given.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store keeping contact emails sealed with `cipher`.
    pub fn with_cipher(cipher: Arc<dyn EmailCipher>) -> Self {
        Self {
            state: Arc::default(),
            cipher: Some(cipher),
        }
    }

    /// The tenant as stored (placeholder email when sealing) and its sealed email.
    fn conceal(&self, tenant: &Tenant) -> (Tenant, Option<Sealed>) {
        let Some(cipher) = &self.cipher else {
            return (tenant.clone(), None);
        };
        let sealed = Sealed {
            envelope: cipher.seal(tenant.id(), tenant.contact_email()).envelope,
            index: cipher.blind_index(tenant.contact_email()),
        };
        let mut parts = tenant.parts().clone();
        parts.contact_email = placeholder();
        (Tenant::from_parts(parts), Some(sealed))
    }

    /// The tenant with its contact email opened and its latest run's summary.
    fn reveal(&self, state: &State, stored: &Tenant) -> Result<Tenant, RepoError> {
        let summary = state.latest(stored.id()).map(ProvisioningRun::summary);
        self.open(stored, state.sealed.get(&stored.id()))
            .map(|t| t.with_provisioning(summary))
    }

    /// The tenant with its contact email opened.
    fn open(&self, stored: &Tenant, sealed: Option<&Sealed>) -> Result<Tenant, RepoError> {
        let (Some(cipher), Some(sealed)) = (&self.cipher, sealed) else {
            return Ok(stored.clone());
        };
        let email = cipher.open(stored.id(), &sealed.envelope).map_err(|err| {
            tracing::error!(
                tenant_id = %stored.id(),
                error = %err,
                "ALERT: a stored contact email does not decrypt"
            );
            RepoError::Internal(format!(
                "contact email of tenant {} does not decrypt",
                stored.id()
            ))
        })?;
        let mut parts = stored.parts().clone();
        parts.contact_email = email;
        Ok(Tenant::from_parts(parts))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied change: every change
        // is validated before the first write.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The values of `map` with keys strictly greater than `after` (all of them without one),
/// in key order: the keyset pagination of every list here.
fn after_key<K: Ord, V>(map: &BTreeMap<K, V>, after: Option<K>) -> impl Iterator<Item = &V> {
    let start = after.map_or(Bound::Unbounded, Bound::Excluded);
    map.range((start, Bound::Unbounded)).map(|(_, v)| v)
}

/// What a sealed tenant carries instead of its address.
fn placeholder() -> ContactEmail {
    ContactEmail::parse("sealed@tenantd.invalid").unwrap_or_else(|_| unreachable!("valid"))
}

fn append(state: &mut State, events: &[Event]) {
    for event in events {
        state.events.insert(event.id, event.clone());
        state.unpublished.insert(event.id, event.tenant_id);
    }
}

#[async_trait]
impl TenantRepository for MemoryStore {
    async fn create(
        &self,
        tenant: &Tenant,
        run: &ProvisioningRun,
        events: &[Event],
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<(), RepoError> {
        let mut state = self.lock();
        if let Some(record) = &idempotency
            && state
                .idempotency
                .get(&record.request_id)
                .is_some_and(|held| held.expires_at > tenant.created_at())
        {
            return Err(RepoError::IdempotencyKeyTaken);
        }
        if state.tenants.values().any(|t| t.slug() == tenant.slug()) {
            return Err(RepoError::SlugTaken(tenant.slug().to_string()));
        }
        if state.tenants.contains_key(&tenant.id()) {
            return Err(RepoError::Internal("duplicate tenant id".into()));
        }
        let (stored, sealed) = self.conceal(tenant);
        state.tenants.insert(tenant.id(), stored);
        if let Some(sealed) = sealed {
            state.sealed.insert(tenant.id(), sealed);
        }
        state.runs.insert(run.id, (run.clone(), None));
        state.latest_run.insert(tenant.id(), run.id);
        append(&mut state, events);
        if let Some(mut record) = idempotency {
            // Expired records are forgotten now and then, so the map stays bounded by the
            // requests of one TTL.
            if state.idempotency.len() % 1024 == 1023 {
                let now = tenant.created_at();
                state.idempotency.retain(|_, r| r.expires_at > now);
            }
            let (response, sealed) = self.conceal(&record.response);
            record.response = response;
            if let Some(sealed) = sealed {
                state
                    .sealed_responses
                    .insert(record.request_id.clone(), sealed);
            }
            state.idempotency.insert(record.request_id.clone(), record);
        }
        Ok(())
    }

    async fn get(&self, id: TenantId) -> Result<Option<Tenant>, RepoError> {
        let state = self.lock();
        state
            .tenants
            .get(&id)
            .map(|t| self.reveal(&state, t))
            .transpose()
    }

    async fn update(
        &self,
        tenant: &Tenant,
        expected_version: u64,
        events: &[Event],
    ) -> Result<(), RepoError> {
        let mut state = self.lock();
        let stored = state
            .tenants
            .get_mut(&tenant.id())
            .ok_or(RepoError::NotFound)?;
        if stored.version() != expected_version {
            return Err(RepoError::VersionConflict);
        }
        let (concealed, sealed) = self.conceal(tenant);
        *stored = concealed;
        if let Some(sealed) = sealed {
            state.sealed.insert(tenant.id(), sealed);
        }
        append(&mut state, events);
        Ok(())
    }

    async fn list(&self, query: &TenantQuery) -> Result<Vec<Tenant>, RepoError> {
        let state = self.lock();
        let email = query.contact_email.as_ref();
        let index = email
            .zip(self.cipher.as_ref())
            .map(|(e, c)| c.blind_index(e));
        after_key(&state.tenants, query.after)
            .filter(|t| query.include_deleted || t.status() != TenantStatus::Deleted)
            .filter(|t| query.status.is_none_or(|s| t.status() == s))
            .filter(|t| query.plan_id.as_ref().is_none_or(|p| t.plan_id() == p))
            .filter(|t| t.labels().matches(&query.labels))
            .filter(|t| {
                query
                    .slug_prefix
                    .as_deref()
                    .is_none_or(|p| t.slug().as_str().starts_with(p))
            })
            .filter(|t| match (email, index) {
                (None, _) => true,
                (Some(_), Some(index)) => {
                    state.sealed.get(&t.id()).is_some_and(|s| s.index == index)
                }
                (Some(e), None) => t.contact_email().normalized() == e.normalized(),
            })
            .take(query.limit)
            .map(|t| self.reveal(&state, t))
            .collect()
    }

    async fn find_idempotency(
        &self,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, RepoError> {
        let state = self.lock();
        let Some(record) = state
            .idempotency
            .get(request_id)
            .filter(|r| r.expires_at > now)
        else {
            return Ok(None);
        };
        let mut record = record.clone();
        record.response = self.open(&record.response, state.sealed_responses.get(request_id))?;
        Ok(Some(record))
    }
}

#[async_trait]
impl EventLog for MemoryStore {
    async fn list(
        &self,
        tenant: Option<TenantId>,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<Event>, RepoError> {
        let state = self.lock();
        Ok(after_key(&state.events, after)
            .filter(|e| tenant.is_none_or(|t| e.tenant_id == t))
            .take(limit)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl ApiKeyRepository for MemoryStore {
    async fn create(
        &self,
        key: &ApiKey,
        events: &[Event],
        max_active: u32,
        now: DateTime<Utc>,
    ) -> Result<(), RepoError> {
        self.lock().insert_key(key, events, max_active, now)
    }

    async fn get(&self, id: ApiKeyId) -> Result<Option<ApiKey>, RepoError> {
        Ok(self.lock().api_keys.get(&id).cloned())
    }

    async fn list(
        &self,
        tenant: TenantId,
        after: Option<ApiKeyId>,
        limit: usize,
        active_at: Option<DateTime<Utc>>,
    ) -> Result<Vec<ApiKey>, RepoError> {
        let state = self.lock();
        Ok(after_key(&state.api_keys, after)
            .filter(|k| k.tenant_id == tenant)
            .filter(|k| active_at.is_none_or(|at| k.is_active(at)))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn revoke(
        &self,
        id: ApiKeyId,
        at: DateTime<Utc>,
        events: &[Event],
    ) -> Result<DateTime<Utc>, RepoError> {
        let mut state = self.lock();
        let key = state.api_keys.get_mut(&id).ok_or(RepoError::NotFound)?;
        if let Some(revoked_at) = key.revoked_at {
            return Ok(revoked_at);
        }
        key.revoked_at = Some(at);
        append(&mut state, events);
        Ok(at)
    }

    async fn touch(&self, id: ApiKeyId, at: DateTime<Utc>) -> Result<(), RepoError> {
        if let Some(key) = self.lock().api_keys.get_mut(&id) {
            key.last_used_at = Some(at);
        }
        Ok(())
    }
}

#[async_trait]
impl AuditLog for MemoryStore {
    async fn append(&self, records: &[AuditRecord]) -> Result<(), RepoError> {
        let mut state = self.lock();
        for record in records {
            state.audit.insert(record.id, record.clone());
        }
        while state.audit.len() > MAX_AUDIT_RECORDS {
            state.audit.pop_first();
        }
        Ok(())
    }

    async fn list(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, RepoError> {
        let state = self.lock();
        let end = query.before.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(state
            .audit
            .range((Bound::Unbounded, end))
            .rev()
            .map(|(_, r)| r)
            .filter(|r| query.matches(r))
            .take(query.limit)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl ProvisioningRepository for MemoryStore {
    async fn latest(&self, tenant: TenantId) -> Result<Option<ProvisioningRun>, RepoError> {
        Ok(self.lock().latest(tenant).cloned())
    }

    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: chrono::Duration,
    ) -> Result<Option<ClaimedRun>, RepoError> {
        let mut state = self.lock();
        let next = state
            .runs
            .values_mut()
            .filter(|(run, lease)| {
                run.due_at().is_some_and(|due| due <= now)
                    && lease.as_ref().is_none_or(|l| l.expires_at <= now)
            })
            .min_by_key(|(run, _)| run.due_at());
        let Some((run, held)) = next else {
            return Ok(None);
        };
        let lease = Lease {
            token: uuid::Uuid::new_v4(),
            owner: owner.to_owned(),
            expires_at: now + lease_for,
        };
        *held = Some(lease.clone());
        Ok(Some(ClaimedRun {
            run: run.clone(),
            lease,
        }))
    }

    async fn renew(
        &self,
        run: RunId,
        version: u64,
        lease: &Lease,
        until: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        let mut state = self.lock();
        match state.runs.get_mut(&run) {
            Some((stored, Some(held)))
                if held.token == lease.token && stored.version == version =>
            {
                held.expires_at = until;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, run: RunId, lease: &Lease) -> Result<(), RepoError> {
        let mut state = self.lock();
        if let Some((_, held)) = state.runs.get_mut(&run)
            && held.as_ref().is_some_and(|h| h.token == lease.token)
        {
            *held = None;
        }
        Ok(())
    }

    async fn save(&self, write: RunWrite<'_>) -> Result<(), RepoError> {
        let mut state = self.lock();
        let (stored, held) = state.runs.get(&write.run.id).ok_or(RepoError::NotFound)?;
        if let Some(lease) = write.lease
            && held.as_ref().is_none_or(|h| h.token != lease.token)
        {
            return Err(RepoError::LeaseLost);
        }
        if stored.version != write.expected_version {
            return Err(RepoError::VersionConflict);
        }
        // Check everything before the first write: the change lands whole or not at all.
        let tenant = match write.tenant {
            Some((tenant, expected)) => {
                let current = state.tenants.get(&tenant.id()).ok_or(RepoError::NotFound)?;
                if current.version() != expected {
                    return Err(RepoError::VersionConflict);
                }
                Some(self.conceal(tenant))
            }
            None => None,
        };
        let held = held.clone();
        state.runs.insert(write.run.id, (write.run.clone(), held));
        if let Some((concealed, sealed)) = tenant {
            let id = concealed.id();
            state.tenants.insert(id, concealed);
            if let Some(sealed) = sealed {
                state.sealed.insert(id, sealed);
            }
        }
        append(&mut state, write.events);
        Ok(())
    }

    async fn overdue(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<TenantId>, RepoError> {
        let state = self.lock();
        Ok(state
            .runs
            .values()
            .filter(|(run, _)| run.state == RunState::Running && run.deadline < now)
            .map(|(run, _)| run.tenant_id)
            .take(limit)
            .collect())
    }

    async fn running(&self) -> Result<u64, RepoError> {
        let state = self.lock();
        Ok(state
            .runs
            .values()
            .filter(|(run, _)| run.state == RunState::Running)
            .count() as u64)
    }
}

#[async_trait]
impl InitialKeyStore for MemoryStore {
    async fn create_initial(
        &self,
        key: &ApiKey,
        sealed_secret: &[u8],
        events: &[Event],
        max_active: u32,
        now: DateTime<Utc>,
    ) -> Result<InitialKeyOutcome, RepoError> {
        let mut state = self.lock();
        let present = state
            .initial_keys
            .get(&key.tenant_id)
            .is_some_and(|initial| {
                state
                    .api_keys
                    .get(&initial.key_id)
                    .is_some_and(|k| k.revoked_at.is_none())
            });
        if present {
            return Ok(InitialKeyOutcome::AlreadyPresent);
        }
        state.insert_key(key, events, max_active, now)?;
        state.initial_keys.insert(
            key.tenant_id,
            InitialKey {
                key_id: key.id,
                sealed_secret: Some(sealed_secret.to_vec()),
            },
        );
        Ok(InitialKeyOutcome::Created)
    }

    async fn initial(&self, tenant: TenantId) -> Result<Option<InitialKey>, RepoError> {
        Ok(self.lock().initial_keys.get(&tenant).cloned())
    }

    async fn take_initial_secret(
        &self,
        tenant: TenantId,
    ) -> Result<Option<(ApiKeyId, Vec<u8>)>, RepoError> {
        let mut state = self.lock();
        Ok(state.initial_keys.get_mut(&tenant).and_then(|initial| {
            initial
                .sealed_secret
                .take()
                .map(|sealed| (initial.key_id, sealed))
        }))
    }
}

/// A batch of the in-memory outbox: its events are in flight until it is finished or
/// dropped.
struct MemoryBatch {
    state: Arc<Mutex<State>>,
    events: Vec<Event>,
}

impl MemoryBatch {
    fn release(&self, published: &[EventId]) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for id in published {
            state.unpublished.remove(id);
        }
        for event in &self.events {
            state.in_flight.remove(&event.id);
        }
    }
}

impl Drop for MemoryBatch {
    fn drop(&mut self) {
        self.release(&[]);
    }
}

#[async_trait]
impl OutboxBatch for MemoryBatch {
    fn events(&self) -> &[Event] {
        &self.events
    }

    async fn finish(mut self: Box<Self>, published: &[EventId]) -> Result<(), RepoError> {
        self.release(published);
        // Released: nothing left for the drop to give back.
        self.events.clear();
        Ok(())
    }
}

#[async_trait]
impl Outbox for MemoryStore {
    async fn claim(
        &self,
        limit: usize,
        _hold: std::time::Duration,
    ) -> Result<Box<dyn OutboxBatch>, RepoError> {
        let mut state = self.lock();
        let mut blocked: HashSet<TenantId> = HashSet::new();
        let mut taken = Vec::new();
        for (id, tenant) in &state.unpublished {
            if taken.len() >= limit {
                break;
            }
            if blocked.contains(tenant) {
                continue;
            }
            if state.in_flight.contains(id) {
                // Held by another batch: its tenant's later events wait behind it.
                blocked.insert(*tenant);
                continue;
            }
            taken.push(*id);
        }
        let events: Vec<Event> = taken
            .iter()
            .filter_map(|id| state.events.get(id).cloned())
            .collect();
        state.in_flight.extend(taken);
        Ok(Box::new(MemoryBatch {
            state: self.state.clone(),
            events,
        }))
    }

    async fn backlog(&self) -> Result<OutboxBacklog, RepoError> {
        let state = self.lock();
        Ok(OutboxBacklog {
            events: state.unpublished.len() as u64,
            oldest: state
                .unpublished
                .keys()
                .next()
                .and_then(|id| state.events.get(id))
                .map(|e| e.occurred_at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Stores;
    use crate::crypto::KeyRing;

    fn ring() -> Arc<KeyRing> {
        Arc::new(
            KeyRing::parse(
                &KeyRing::generate_entry("test"),
                &KeyRing::generate_blind_index_key(),
            )
            .expect("generated keys are valid"),
        )
    }

    async fn stores() -> Stores {
        let store = MemoryStore::with_cipher(ring());
        Stores {
            tenants: Arc::new(store.clone()),
            runs: Arc::new(store.clone()),
            initial_keys: Arc::new(store.clone()),
            api_keys: Arc::new(store.clone()),
            audit: Arc::new(store.clone()),
            outbox: Arc::new(store.clone()),
            events: Arc::new(store),
            plans: Arc::new(crate::memory::MemoryPlanRepository::default()),
            guard: None,
        }
    }

    crate::repository_contract_tests!(stores);

    async fn plain_stores() -> Stores {
        let store = MemoryStore::new();
        Stores {
            tenants: Arc::new(store.clone()),
            runs: Arc::new(store.clone()),
            initial_keys: Arc::new(store.clone()),
            api_keys: Arc::new(store.clone()),
            audit: Arc::new(store.clone()),
            outbox: Arc::new(store.clone()),
            events: Arc::new(store),
            plans: Arc::new(crate::memory::MemoryPlanRepository::default()),
            guard: None,
        }
    }

    mod without_cipher {
        crate::repository_contract_tests!(super::plain_stores);
    }

    #[tokio::test]
    async fn a_sealing_store_holds_no_plaintext_email() {
        let store = MemoryStore::with_cipher(ring());
        let tenant = crate::contract::fixtures::tenant("sealed-acme", "pro", &[]);
        let run = crate::contract::fixtures::run_for(&tenant);
        TenantRepository::create(&store, &tenant, &run, &[], None)
            .await
            .expect("create");
        {
            let state = store.lock();
            let held = &state.tenants[&tenant.id()];
            assert_eq!(held.contact_email(), &placeholder());
            let envelope = &state.sealed[&tenant.id()].envelope;
            assert!(
                !envelope
                    .windows(5)
                    .any(|w| w.eq_ignore_ascii_case(b"sealed-acme".get(..5).unwrap_or_default()))
            );
        }
        let read = TenantRepository::get(&store, tenant.id())
            .await
            .expect("get")
            .expect("stored");
        assert_eq!(read, tenant.with_provisioning(Some(run.summary())));
    }
}

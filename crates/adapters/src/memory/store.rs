//! The in-memory store: one state behind one mutex, shared by the port implementations in
//! the sibling files (one file per port), so a change, its events and its idempotency
//! record are applied atomically, like a database transaction.
//!
//! The lock is held only for the map operations themselves: values are kept behind `Arc`,
//! so a read takes the `Arc`s it needs under the lock and clones, opens (decrypts) and
//! summarizes outside it, and a write seals and builds its values before taking it.
//!
//! With a cipher (as the embedded mode runs it, with an ephemeral key), contact emails are
//! kept sealed here too: stored tenants carry no address and the envelope lives beside
//! them, opened on every read, like the PostgreSQL store does.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use tenantd_domain::export::{Export, ExportId};
use tenantd_domain::ports::{EmailCipher, IdempotencyRecord, InitialKey, Lease, WrappedDataKey};
use tenantd_domain::provisioning::{ProvisioningRun, RunId, StepError};
use tenantd_domain::purge::Purge;
use tenantd_domain::tenant_schema::{Rollout, RolloutId, RolloutTenant};
use tenantd_domain::{
    ApiKey, ApiKeyId, AuditRecord, ContactEmail, Event, EventId, Reason, RepoError, Subject,
    Tenant, TenantId, TenantStatus,
};

/// A tenant as stored: its contact email taken out when sealed, with the envelope beside
/// it.
#[derive(Debug)]
pub(super) struct StoredTenant {
    pub(super) tenant: Tenant,
    pub(super) sealed: Option<Sealed>,
}

/// An idempotency record as stored: its response concealed like a stored tenant.
#[derive(Debug)]
pub(super) struct StoredRecord {
    pub(super) record: IdempotencyRecord,
    pub(super) sealed: Option<Sealed>,
}

/// A sealed contact email and its blind index.
#[derive(Debug, Clone)]
pub(super) struct Sealed {
    pub(super) envelope: Vec<u8>,
    pub(super) index: [u8; 32],
}

/// A tenant schema's record.
#[derive(Debug, Clone)]
pub(super) struct StoredSchema {
    pub(super) version: u32,
    pub(super) migrated_at: DateTime<Utc>,
    pub(super) last_error: Option<StepError>,
}

/// A rollout (its counts computed from its entries) and its tenants in wave and position
/// order.
#[derive(Debug, Clone)]
pub(super) struct StoredRollout {
    pub(super) rollout: Rollout,
    pub(super) tenants: Vec<StoredEntry>,
}

/// A rollout's tenant and the lease on it.
#[derive(Debug, Clone)]
pub(super) struct StoredEntry {
    pub(super) entry: RolloutTenant,
    pub(super) lease: Option<Lease>,
}

/// An export and the lease on it.
#[derive(Debug, Clone)]
pub(super) struct StoredExport {
    pub(super) export: Arc<Export>,
    pub(super) lease: Option<Lease>,
}

/// A purge and the lease on it.
#[derive(Debug, Clone)]
pub(super) struct StoredPurge {
    pub(super) purge: Arc<Purge>,
    pub(super) lease: Option<Lease>,
}

/// A run and the lease on it.
#[derive(Debug, Clone)]
pub(super) struct StoredRun {
    pub(super) run: Arc<ProvisioningRun>,
    pub(super) lease: Option<Lease>,
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) tenants: BTreeMap<TenantId, Arc<StoredTenant>>,
    /// Every tenant's slug (slugs never change): uniqueness without a scan.
    pub(super) slugs: HashSet<String>,
    /// Keyed by event id: UUIDv7, so iteration is append order.
    pub(super) events: BTreeMap<EventId, Arc<Event>>,
    /// The outbox: events not yet published, in id order.
    pub(super) unpublished: BTreeMap<EventId, Subject>,
    /// Unpublished events a relay's batch holds.
    pub(super) in_flight: HashSet<EventId>,
    /// Failed delivery attempts of unpublished events, and the last error.
    pub(super) delivery_attempts: HashMap<EventId, (u32, String)>,
    /// Unpublished events the relay gave up on (still in `unpublished`, never claimed),
    /// with when.
    pub(super) dead_letters: BTreeMap<EventId, chrono::DateTime<chrono::Utc>>,
    pub(super) idempotency: HashMap<String, Arc<StoredRecord>>,
    pub(super) api_keys: BTreeMap<ApiKeyId, Arc<ApiKey>>,
    /// Each tenant's API keys (keys are never removed), so quota checks need no scan.
    pub(super) tenant_keys: HashMap<TenantId, Vec<ApiKeyId>>,
    /// Keyed by id (UUIDv7): time order. Bounded, oldest dropped first: the embedded mode
    /// keeps no more history than it can hold in memory.
    pub(super) audit: BTreeMap<uuid::Uuid, Arc<AuditRecord>>,
    /// Provisioning runs and the lease on each; write them with [`State::put_run`].
    pub(super) runs: BTreeMap<RunId, StoredRun>,
    /// The runs a worker has something to do for, by when (`due_at`): claims read the
    /// earliest instead of every run.
    pub(super) due: BTreeSet<(DateTime<Utc>, RunId)>,
    /// Each tenant's latest run.
    pub(super) latest_run: HashMap<TenantId, RunId>,
    /// First admin keys, by tenant.
    pub(super) initial_keys: HashMap<TenantId, InitialKey>,
    /// Tenants' wrapped data keys (`None`: destroyed by the purge, never made again).
    pub(super) data_keys: HashMap<TenantId, Option<WrappedDataKey>>,
    /// Tenant schemas' versions.
    pub(super) schemas: BTreeMap<TenantId, StoredSchema>,
    /// Rollouts, by id (UUIDv7: creation order).
    pub(super) rollouts: BTreeMap<RolloutId, StoredRollout>,
    /// Purges and the lease on each, by tenant.
    pub(super) purges: BTreeMap<TenantId, StoredPurge>,
    /// Tombstones whose slug was freed for new tenants.
    pub(super) released_slugs: HashSet<TenantId>,
    /// Exports and the lease on each.
    pub(super) exports: BTreeMap<ExportId, StoredExport>,
}

impl State {
    /// Stores `run` (new or changed), keeping [`State::due`] in step.
    pub(super) fn put_run(&mut self, run: StoredRun) {
        let id = run.run.id;
        if let Some(due) = self.runs.get(&id).and_then(|old| old.run.due_at()) {
            self.due.remove(&(due, id));
        }
        if let Some(due) = run.run.due_at() {
            self.due.insert((due, id));
        }
        self.runs.insert(id, run);
    }

    /// The tenant's latest run.
    pub(super) fn latest(&self, tenant: TenantId) -> Option<&Arc<ProvisioningRun>> {
        let id = self.latest_run.get(&tenant)?;
        self.runs.get(id).map(|stored| &stored.run)
    }

    /// A stored tenant with its latest run, for [`MemoryStore::reveal`] outside the lock.
    pub(super) fn tenant_view(&self, stored: &Arc<StoredTenant>) -> TenantView {
        TenantView {
            stored: stored.clone(),
            run: self.latest(stored.tenant.id()).cloned(),
        }
    }

    /// Stores `key` unless its tenant is missing, deleted or at `max_active` active keys.
    pub(super) fn insert_key(
        &mut self,
        key: Arc<ApiKey>,
        events: Vec<Arc<Event>>,
        max_active: u32,
        now: DateTime<Utc>,
    ) -> Result<(), RepoError> {
        match self.tenants.get(&key.tenant_id) {
            None => return Err(RepoError::NotFound),
            Some(t) if t.tenant.status() == TenantStatus::Deleted => {
                return Err(RepoError::Precondition(
                    Reason::TenantDeleted,
                    "a deleted tenant cannot get API keys".into(),
                ));
            }
            Some(t) if t.tenant.status().is_purge() => {
                return Err(RepoError::Precondition(
                    Reason::TenantPurged,
                    "a purged tenant cannot get API keys".into(),
                ));
            }
            Some(_) => {}
        }
        let active = self
            .tenant_keys
            .get(&key.tenant_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.api_keys.get(id))
            .filter(|k| k.is_active(now))
            .count();
        if active >= usize::try_from(max_active).unwrap_or(usize::MAX) {
            return Err(RepoError::LimitReached);
        }
        self.tenant_keys
            .entry(key.tenant_id)
            .or_default()
            .push(key.id);
        self.api_keys.insert(key.id, key);
        self.append(events);
        Ok(())
    }

    /// Appends events to the log and the outbox.
    pub(super) fn append(&mut self, events: Vec<Arc<Event>>) {
        for event in events {
            self.unpublished.insert(event.id, event.subject);
            self.events.insert(event.id, event);
        }
    }
}

/// A stored tenant and its latest run, taken under the lock and revealed outside it.
#[derive(Debug)]
pub(super) struct TenantView {
    stored: Arc<StoredTenant>,
    run: Option<Arc<ProvisioningRun>>,
}

/// The in-memory store; cheap to clone (clones share the state).
#[derive(Clone, Default)]
pub struct MemoryStore {
    pub(super) state: Arc<Mutex<State>>,
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

    /// The state, locked. Callers keep the guard for map operations only.
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The blind index of `email`, when emails are sealed.
    pub(super) fn blind_index(&self, email: &ContactEmail) -> Option<[u8; 32]> {
        self.cipher.as_ref().map(|c| c.blind_index(email))
    }

    /// `tenant` as it is stored (no email when sealing, the envelope beside it).
    pub(super) fn conceal(&self, tenant: &Tenant) -> StoredTenant {
        let (Some(cipher), Some(email)) = (&self.cipher, tenant.contact_email()) else {
            return StoredTenant {
                tenant: tenant.clone(),
                sealed: None,
            };
        };
        let sealed = Sealed {
            envelope: cipher.seal(tenant.id(), email).envelope,
            index: cipher.blind_index(email),
        };
        let mut parts = tenant.parts().clone();
        parts.contact_email = None;
        StoredTenant {
            tenant: Tenant::from_parts(parts),
            sealed: Some(sealed),
        }
    }

    /// The tenant of `view` with its contact email opened and its latest run's summary.
    pub(super) fn reveal(&self, view: &TenantView) -> Result<Tenant, RepoError> {
        let summary = view.run.as_deref().map(ProvisioningRun::summary);
        self.open(&view.stored.tenant, view.stored.sealed.as_ref())
            .map(|t| t.with_provisioning(summary))
    }

    /// A stored tenant (or response) with its contact email opened from `sealed`.
    pub(super) fn open(
        &self,
        stored: &Tenant,
        sealed: Option<&Sealed>,
    ) -> Result<Tenant, RepoError> {
        let (Some(cipher), Some(sealed)) = (&self.cipher, sealed) else {
            return Ok(stored.clone());
        };
        let id = stored.id();
        let email = cipher.open(id, &sealed.envelope).map_err(|err| {
            tracing::error!(
                tenant_id = %id,
                error = %err,
                "ALERT: a stored contact email does not decrypt"
            );
            RepoError::Internal(format!("contact email of tenant {id} does not decrypt"))
        })?;
        let mut parts = stored.parts().clone();
        parts.contact_email = Some(email);
        Ok(Tenant::from_parts(parts))
    }
}

/// Locks `state`. A panic while holding the lock cannot leave a half-applied change: every
/// change is validated before the first write.
pub(super) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The values of `map` with keys strictly greater than `after` (all of them without one),
/// in key order: the keyset pagination of every list here.
pub(super) fn after_key<K: Ord, V>(
    map: &BTreeMap<K, V>,
    after: Option<K>,
) -> impl Iterator<Item = &V> {
    let start = after.map_or(Bound::Unbounded, Bound::Excluded);
    map.range((start, Bound::Unbounded)).map(|(_, v)| v)
}

/// `events` as the state keeps them.
pub(super) fn shared(events: &[Event]) -> Vec<Arc<Event>> {
    events.iter().cloned().map(Arc::new).collect()
}

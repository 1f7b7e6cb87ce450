//! The job queues of the durable runs in memory (provisioning runs, purges, exports): a
//! job and the lease on it, renewed and released only by its holder.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tenantd_domain::ports::Lease;

use super::store::{StoredExport, StoredPurge, StoredRun};

/// A stored job that workers lease.
pub(super) trait Leased {
    /// Its stored version.
    fn version(&self) -> u64;
    /// When a worker should next look at it.
    fn due_at(&self) -> Option<DateTime<Utc>>;
    /// The lease on it.
    fn lease(&self) -> Option<&Lease>;
    /// The lease on it, to change.
    fn lease_mut(&mut self) -> &mut Option<Lease>;
}

impl Leased for StoredRun {
    fn version(&self) -> u64 {
        self.run.version
    }
    fn due_at(&self) -> Option<DateTime<Utc>> {
        self.run.due_at()
    }
    fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }
    fn lease_mut(&mut self) -> &mut Option<Lease> {
        &mut self.lease
    }
}

impl Leased for StoredPurge {
    fn version(&self) -> u64 {
        self.purge.version
    }
    fn due_at(&self) -> Option<DateTime<Utc>> {
        self.purge.due_at()
    }
    fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }
    fn lease_mut(&mut self) -> &mut Option<Lease> {
        &mut self.lease
    }
}

impl Leased for StoredExport {
    fn version(&self) -> u64 {
        self.export.version
    }
    fn due_at(&self) -> Option<DateTime<Utc>> {
        self.export.due_at()
    }
    fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }
    fn lease_mut(&mut self) -> &mut Option<Lease> {
        &mut self.lease
    }
}

/// A new lease for `owner` from `now`.
pub(super) fn lease(owner: &str, now: DateTime<Utc>, lease_for: chrono::Duration) -> Lease {
    Lease {
        token: uuid::Uuid::new_v4(),
        owner: owner.to_owned(),
        expires_at: now + lease_for,
    }
}

/// Leases to `lease` the job of `jobs` due longest ago (at or before `now`) that no live
/// lease holds (a scan: these queues are short); the job, if there was one.
pub(super) fn claim_due<'a, K: Ord + Copy, V: Leased>(
    jobs: &'a mut BTreeMap<K, V>,
    now: DateTime<Utc>,
    lease: &Lease,
) -> Option<&'a mut V> {
    let next = jobs
        .iter()
        .filter(|(_, job)| job.lease().is_none_or(|held| held.expires_at <= now))
        .filter_map(|(key, job)| {
            job.due_at()
                .filter(|due| *due <= now)
                .map(|due| (due, *key))
        })
        .min()
        .map(|(_, key)| key)?;
    let job = jobs.get_mut(&next)?;
    *job.lease_mut() = Some(lease.clone());
    Some(job)
}

/// Extends `lease` on `job` to `until` while the job is at `version`; whether it did.
pub(super) fn renew<V: Leased>(
    job: Option<&mut V>,
    version: u64,
    lease: &Lease,
    until: DateTime<Utc>,
) -> bool {
    let Some(job) = job.filter(|job| job.version() == version) else {
        return false;
    };
    match job.lease_mut() {
        Some(held) if held.token == lease.token => {
            held.expires_at = until;
            true
        }
        _ => false,
    }
}

/// Gives `lease` on `job` up (a no-op when it is no longer held).
pub(super) fn release<V: Leased>(job: Option<&mut V>, lease: &Lease) {
    if let Some(job) = job {
        let held = job.lease_mut();
        if held.as_ref().is_some_and(|h| h.token == lease.token) {
            *held = None;
        }
    }
}

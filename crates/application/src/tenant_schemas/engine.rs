//! The rollout engine: workers claim a tenant of the running rollout under a lease,
//! migrate its schema (the versions it lacks, one transaction), and store the outcome with
//! the rollout's reaction — all under the lease, renewed while the migration runs. A worker
//! that loses its lease stops; the tenant's next worker applies whatever is still missing,
//! so no version is applied twice.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tenantd_domain::ports::{
    Clock, IdGenerator, Lease, RolloutRepository, TenantDatabases, TenantFinish,
};
use tenantd_domain::tenant_schema::{
    ClaimedTenant, Rollout, RolloutId, RolloutState, TenantOutcome,
};
use tenantd_domain::{Error, Event, EventId, EventKind, RepoError, Subject, TenantId};

use super::{MigrationObserver, PlacementPolicy, RolloutSettings, RolloutSignals};

/// The rollout engine of one replica. Cheap to clone; every worker is a clone.
#[derive(Clone)]
pub struct RolloutEngine {
    rollouts: Arc<dyn RolloutRepository>,
    databases: Arc<dyn TenantDatabases>,
    placement: Arc<PlacementPolicy>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    settings: RolloutSettings,
    signals: RolloutSignals,
    observer: Arc<dyn MigrationObserver>,
    capacity: Arc<Capacity>,
}

impl std::fmt::Debug for RolloutEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RolloutEngine")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// How many tenants this replica migrates now, and how many the rollout lets it (its
/// `max_parallel_per_replica`, read from the store at most once per poll interval).
#[derive(Debug)]
struct Capacity {
    in_flight: AtomicUsize,
    limit: AtomicU32,
    checked: Mutex<Option<Instant>>,
}

/// A slot of [`Capacity`], given back when dropped.
struct Slot(Arc<Capacity>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl RolloutEngine {
    /// An engine over its ports.
    #[expect(
        clippy::too_many_arguments,
        reason = "a composition root passes every port once"
    )]
    pub fn new(
        rollouts: Arc<dyn RolloutRepository>,
        databases: Arc<dyn TenantDatabases>,
        placement: Arc<PlacementPolicy>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
        settings: RolloutSettings,
        signals: RolloutSignals,
        observer: Arc<dyn MigrationObserver>,
    ) -> Self {
        Self {
            rollouts,
            databases,
            placement,
            clock,
            ids,
            settings,
            signals,
            observer,
            capacity: Arc::new(Capacity {
                in_flight: AtomicUsize::new(0),
                limit: AtomicU32::new(0),
                checked: Mutex::new(None),
            }),
        }
    }

    /// The engine's settings.
    pub fn settings(&self) -> &RolloutSettings {
        &self.settings
    }

    /// Claims one tenant as `worker` and migrates it, if the running rollout has one for
    /// this replica now. Returns whether there was one.
    ///
    /// # Errors
    /// Store failures (the tenant's lease lapses and another worker takes it).
    pub async fn work_once(&self, worker: &str) -> Result<bool, Error> {
        let Some(slot) = self.reserve().await? else {
            return Ok(false);
        };
        let lease_for = lease_span(self.settings.lease);
        let Some(claimed) = self
            .rollouts
            .claim(worker, self.clock.now(), lease_for)
            .await?
        else {
            return Ok(false);
        };
        self.capacity.limit.store(
            claimed.rollout.spec.max_parallel_per_replica,
            Ordering::Release,
        );
        let outcome = self.migrate(claimed).await;
        drop(slot);
        outcome.map(|()| true)
    }

    /// A slot when this replica migrates fewer tenants than the rollout allows it.
    async fn reserve(&self) -> Result<Option<Slot>, Error> {
        let stale = {
            let mut checked = self
                .capacity
                .checked
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let stale = checked.is_none_or(|at| at.elapsed() >= self.settings.poll_interval);
            if stale {
                *checked = Some(Instant::now());
            }
            stale
        };
        if stale {
            let limit = self
                .rollouts
                .active()
                .await?
                .map_or(0, |r| r.spec.max_parallel_per_replica);
            self.capacity.limit.store(limit, Ordering::Release);
        }
        let limit = usize::try_from(self.capacity.limit.load(Ordering::Acquire))
            .unwrap_or(usize::MAX)
            .min(self.settings.workers);
        // A tenant whose worker was lost is claimed whatever the limit: count it below.
        let limit = limit.max(1);
        let taken = self.capacity.in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(self.capacity.clone());
        Ok((taken < limit).then_some(slot))
    }

    async fn migrate(&self, claimed: ClaimedTenant) -> Result<(), Error> {
        let ClaimedTenant {
            rollout,
            tenant,
            placement,
            lease,
        } = claimed;
        let placement = placement.unwrap_or_else(|| self.placement.legacy(tenant.tenant_id));
        let target = rollout.spec.target_version;
        tracing::debug!(rollout_id = %rollout.id, tenant_id = %tenant.tenant_id, attempt = tenant.attempts, target_version = target, "migrating a tenant schema");
        let started = Instant::now();
        let work = self
            .databases
            .migrate(&placement, target, rollout.spec.limits);
        let Some(result) = self
            .leased(&rollout.id, &tenant.tenant_id, &lease, work)
            .await
        else {
            self.observer.tenant_migrated("lost", started.elapsed());
            tracing::warn!(rollout_id = %rollout.id, tenant_id = %tenant.tenant_id, "lost the lease on a tenant mid-migration; its next worker applies whatever is missing");
            return Ok(());
        };
        let elapsed = started.elapsed();
        let now = self.clock.now();
        let (outcome, result_label) = match result {
            Ok(Some(migrated)) => (
                TenantOutcome::Migrated {
                    from: migrated.from,
                    to: migrated.to,
                },
                "succeeded",
            ),
            Ok(None) => (TenantOutcome::Gone, "skipped"),
            Err(error) => (TenantOutcome::Failed(error), "failed"),
        };
        self.observer.tenant_migrated(result_label, elapsed);
        // From the version the rollout found it at: a worker taking over from one lost
        // after its migration committed finds the schema at the target already, and the
        // event of the change is still written once.
        let events = match &outcome {
            TenantOutcome::Migrated { from, to } if tenant.from_version.unwrap_or(*from) != *to => {
                vec![Event {
                    id: EventId(self.ids.new_v7()),
                    subject: Subject::Tenant(tenant.tenant_id),
                    occurred_at: now,
                    kind: EventKind::TenantSchemaMigrated {
                        rollout_id: rollout.id.to_string(),
                        from_version: tenant.from_version.unwrap_or(*from),
                        to_version: *to,
                        duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                    },
                }]
            }
            _ => Vec::new(),
        };
        match &outcome {
            TenantOutcome::Failed(error) => {
                tracing::warn!(rollout_id = %rollout.id, tenant_id = %tenant.tenant_id, reason = %error.reason, message = %error.message, "tenant schema migration failed; the schema stays at its version");
            }
            TenantOutcome::Gone => {
                tracing::info!(rollout_id = %rollout.id, tenant_id = %tenant.tenant_id, "tenant schema is gone; skipped");
            }
            TenantOutcome::Migrated { from, to } => {
                tracing::debug!(rollout_id = %rollout.id, tenant_id = %tenant.tenant_id, from, to, elapsed_ms = elapsed.as_millis(), "tenant schema migrated");
            }
        }
        let finish = TenantFinish {
            rollout: rollout.id,
            tenant: tenant.tenant_id,
            lease: &lease,
            outcome: &outcome,
            now,
            events: &events,
            state_event: EventId(self.ids.new_v7()),
        };
        match self.rollouts.finish(finish).await {
            Ok(after) => {
                self.signals.changed(after.id);
                if after.state != rollout.state || after.version != rollout.version {
                    announce(&after);
                }
                self.observer
                    .rollout_tenants(after.state.is_active().then_some(&after.counts));
                Ok(())
            }
            Err(RepoError::LeaseLost) => {
                tracing::warn!(rollout_id = %rollout.id, tenant_id = %tenant.tenant_id, "the tenant was taken over before its outcome was stored; its new worker stores it");
                Ok(())
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Runs `work` while renewing the lease every third of it: `None` when the lease was
    /// lost (or could not be renewed before it expired), and the work was dropped.
    async fn leased<T>(
        &self,
        rollout: &RolloutId,
        tenant: &TenantId,
        lease: &Lease,
        work: impl Future<Output = T>,
    ) -> Option<T> {
        let renew_every = (self.settings.lease / 3).max(Duration::from_millis(10));
        let mut held_until = lease.expires_at;
        tokio::pin!(work);
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
        loop {
            tokio::select! {
                done = &mut work => return Some(done),
                _ = ticker.tick() => {
                    let until = self.clock.now() + lease_span(self.settings.lease);
                    match self.rollouts.renew(*rollout, *tenant, lease, until).await {
                        Ok(true) => held_until = until,
                        Ok(false) => return None,
                        Err(err) if self.clock.now() < held_until => {
                            tracing::warn!(rollout_id = %rollout, error = %err, "cannot renew a rollout lease; retrying");
                        }
                        Err(err) => {
                            tracing::warn!(rollout_id = %rollout, error = %err, "the rollout lease expired unrenewed; abandoning the tenant");
                            return None;
                        }
                    }
                }
            }
        }
    }

    /// Waits until a worker should look for work again: woken (a rollout started or
    /// resumed here) or the poll interval.
    pub async fn idle(&self) {
        tokio::select! {
            () = self.signals.woken() => {}
            () = tokio::time::sleep(self.settings.poll_interval) => {}
        }
    }
}

/// Logs a rollout's new state.
fn announce(rollout: &Rollout) {
    let all = rollout.counts.all();
    let reason = rollout
        .reason
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    match rollout.state {
        RolloutState::Paused => {
            tracing::warn!(rollout_id = %rollout.id, failed = all.failed, reason = %reason, "tenant schema rollout paused");
        }
        RolloutState::Failed => {
            tracing::error!(rollout_id = %rollout.id, failed = all.failed, succeeded = all.succeeded, reason = %reason, "tenant schema rollout ended with failed tenants");
        }
        RolloutState::Succeeded => {
            tracing::info!(rollout_id = %rollout.id, tenants = all.total(), "tenant schema rollout succeeded");
        }
        RolloutState::Running | RolloutState::Cancelled => {}
    }
}

fn lease_span(lease: Duration) -> chrono::Duration {
    chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(30))
}

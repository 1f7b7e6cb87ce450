//! [`RolloutRepository`] in memory: every operation is applied under the store's lock, so
//! like PostgreSQL's row lock it sees the counts the one before left; the rules are the
//! domain's.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tenantd_domain::ports::{Lease, RolloutRepository, TenantFinish};
use tenantd_domain::tenant_schema::{
    Canary, ClaimedTenant, Requeue, Rollout, RolloutCommand, RolloutCounts, RolloutId,
    RolloutTenant, TenantOutcome, TenantRolloutState, Wave,
};
use tenantd_domain::{EventId, Reason, RepoError, TenantId};

use super::MemoryStore;
use super::store::{State, StoredEntry, StoredRollout, shared};

impl StoredRollout {
    /// The rollout with its counts.
    fn view(&self) -> Rollout {
        let mut rollout = self.rollout.clone();
        rollout.counts = counts(&self.tenants);
        rollout
    }
}

fn counts(entries: &[StoredEntry]) -> RolloutCounts {
    let mut counts = RolloutCounts::default();
    for stored in entries {
        counts
            .wave_mut(stored.entry.wave)
            .add(stored.entry.state, 1);
    }
    counts
}

impl State {
    fn active_rollout(&self) -> Option<&StoredRollout> {
        self.rollouts.values().find(|r| r.rollout.state.is_active())
    }

    /// Marks entry `index` of `rollout` RUNNING under `lease`.
    fn take(
        &mut self,
        rollout: RolloutId,
        index: usize,
        lease: Lease,
        now: DateTime<Utc>,
    ) -> Option<ClaimedTenant> {
        let stored = self.rollouts.get_mut(&rollout)?;
        let entry = &mut stored.tenants[index];
        entry.entry.state = TenantRolloutState::Running;
        entry.entry.attempts += 1;
        entry.entry.started_at.get_or_insert(now);
        entry.lease = Some(lease.clone());
        let tenant = entry.entry.clone();
        let view = stored.view();
        let placement = self
            .tenants
            .get(&tenant.tenant_id)
            .and_then(|t| t.tenant.placement().cloned());
        Some(ClaimedTenant {
            rollout: view,
            tenant,
            placement,
            lease,
        })
    }
}

fn in_progress(active: &Rollout) -> RepoError {
    RepoError::Precondition(
        Reason::RolloutInProgress,
        format!(
            "rollout {} is {}: one rollout at a time (cancel it, or wait for it to end)",
            active.id, active.state
        ),
    )
}

#[async_trait]
impl RolloutRepository for MemoryStore {
    async fn start(&self, rollout: &Rollout, state_event: EventId) -> Result<Rollout, RepoError> {
        let mut state = self.lock();
        if let Some(active) = state.active_rollout() {
            return Err(in_progress(&active.rollout));
        }
        let target = rollout.spec.target_version;
        let mut candidates: Vec<_> = state
            .schemas
            .iter()
            .filter(|(_, s)| s.version < target)
            .filter_map(|(id, s)| state.tenants.get(id).map(|t| (t.tenant.clone(), s.version)))
            .collect();
        candidates.sort_by_key(|(t, _)| (t.created_at(), t.id()));
        let mut positions = [0_u32; 2];
        let tenants = candidates
            .iter()
            .enumerate()
            .map(|(n, (tenant, version))| {
                let canary = match &rollout.spec.canary {
                    Canary::None => false,
                    Canary::Tenants(ids) => ids.contains(&tenant.id()),
                    Canary::Labels(labels) => labels
                        .iter()
                        .all(|(k, v)| tenant.labels().as_map().get(k) == Some(v)),
                    Canary::First(first) => u32::try_from(n).is_ok_and(|n| n < *first),
                };
                let wave = if canary { Wave::Canary } else { Wave::Rest };
                let slot = &mut positions[usize::from(wave.index())];
                let position = *slot;
                *slot += 1;
                StoredEntry {
                    entry: RolloutTenant {
                        rollout_id: rollout.id,
                        tenant_id: tenant.id(),
                        wave,
                        position,
                        state: TenantRolloutState::Pending,
                        attempts: 0,
                        from_version: Some(*version),
                        to_version: None,
                        error: None,
                        started_at: None,
                        finished_at: None,
                    },
                    lease: None,
                }
            })
            .collect::<Vec<_>>();
        let mut tenants = tenants;
        tenants.sort_by_key(|t| (t.entry.wave, t.entry.position));
        let mut stored = StoredRollout {
            rollout: rollout.clone(),
            tenants,
        };
        let mut view = stored.view();
        view.settle(rollout.created_at);
        stored.rollout = view.clone();
        state.rollouts.insert(rollout.id, stored);
        state.append(shared(&[view.state_event(state_event, rollout.created_at)]));
        Ok(view)
    }

    async fn get(&self, id: RolloutId) -> Result<Option<Rollout>, RepoError> {
        Ok(self.lock().rollouts.get(&id).map(StoredRollout::view))
    }

    async fn active(&self) -> Result<Option<Rollout>, RepoError> {
        Ok(self.lock().active_rollout().map(StoredRollout::view))
    }

    async fn list(
        &self,
        page_size: usize,
        after: Option<RolloutId>,
    ) -> Result<Vec<Rollout>, RepoError> {
        let state = self.lock();
        Ok(state
            .rollouts
            .values()
            .rev()
            .filter(|r| after.is_none_or(|a| r.rollout.id < a))
            .take(page_size)
            .map(StoredRollout::view)
            .collect())
    }

    async fn tenants(
        &self,
        id: RolloutId,
        state: Option<TenantRolloutState>,
        page_size: usize,
        after: Option<(Wave, u32)>,
    ) -> Result<Vec<RolloutTenant>, RepoError> {
        let store = self.lock();
        let Some(stored) = store.rollouts.get(&id) else {
            return Ok(Vec::new());
        };
        Ok(stored
            .tenants
            .iter()
            .map(|t| &t.entry)
            .filter(|t| after.is_none_or(|a| (t.wave, t.position) > a))
            .filter(|t| state.is_none_or(|s| t.state == s))
            .take(page_size)
            .cloned()
            .collect())
    }

    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: chrono::Duration,
    ) -> Result<Option<ClaimedTenant>, RepoError> {
        let lease = Lease {
            token: uuid::Uuid::new_v4(),
            owner: owner.to_owned(),
            expires_at: now + lease_for,
        };
        let mut state = self.lock();
        let lost = state.rollouts.values().find_map(|r| {
            r.tenants
                .iter()
                .position(|t| {
                    t.entry.state == TenantRolloutState::Running
                        && t.lease.as_ref().is_none_or(|l| l.expires_at <= now)
                })
                .map(|i| (r.rollout.id, i))
        });
        if let Some((rollout, index)) = lost {
            return Ok(state.take(rollout, index, lease, now));
        }
        let Some(running) = state
            .rollouts
            .values()
            .find(|r| r.rollout.state == tenantd_domain::tenant_schema::RolloutState::Running)
        else {
            return Ok(None);
        };
        let view = running.view();
        if view.counts.all().running >= u64::from(view.spec.max_parallel) {
            return Ok(None);
        }
        let Some(wave) = view.claimable_wave() else {
            return Ok(None);
        };
        let next = running
            .tenants
            .iter()
            .position(|t| t.entry.wave == wave && t.entry.state == TenantRolloutState::Pending);
        Ok(next.and_then(|index| state.take(view.id, index, lease, now)))
    }

    async fn renew(
        &self,
        rollout: RolloutId,
        tenant: TenantId,
        lease: &Lease,
        until: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        let mut state = self.lock();
        let held = state
            .rollouts
            .get_mut(&rollout)
            .and_then(|r| r.tenants.iter_mut().find(|t| t.entry.tenant_id == tenant))
            .filter(|t| {
                t.entry.state == TenantRolloutState::Running
                    && t.lease.as_ref().is_some_and(|l| l.token == lease.token)
            });
        Ok(held
            .and_then(|t| t.lease.as_mut())
            .map(|l| l.expires_at = until)
            .is_some())
    }

    async fn finish(&self, finish: TenantFinish<'_>) -> Result<Rollout, RepoError> {
        let mut state = self.lock();
        let stored = state
            .rollouts
            .get_mut(&finish.rollout)
            .ok_or(RepoError::NotFound)?;
        let entry = stored
            .tenants
            .iter_mut()
            .find(|t| t.entry.tenant_id == finish.tenant)
            .filter(|t| {
                t.entry.state == TenantRolloutState::Running
                    && t.lease
                        .as_ref()
                        .is_some_and(|l| l.token == finish.lease.token)
            })
            .ok_or(RepoError::LeaseLost)?;
        let outcome_state = finish.outcome.state();
        entry.entry.state = outcome_state;
        entry.entry.finished_at = Some(finish.now);
        entry.lease = None;
        match finish.outcome {
            TenantOutcome::Migrated { from, to } => {
                entry.entry.from_version.get_or_insert(*from);
                entry.entry.to_version = Some(*to);
                entry.entry.error = None;
            }
            TenantOutcome::Gone => entry.entry.error = None,
            TenantOutcome::Failed(error) => entry.entry.error = Some(error.clone()),
        }
        let wave = entry.entry.wave;
        let mut view = stored.view();
        let changed = view.after_finish(
            wave,
            outcome_state == TenantRolloutState::Failed,
            finish.now,
        );
        if changed {
            view.version += 1;
            stored.rollout = view.clone();
        }
        match finish.outcome {
            TenantOutcome::Migrated { to, .. } => {
                if let Some(schema) = state.schemas.get_mut(&finish.tenant) {
                    if schema.version != *to {
                        schema.version = *to;
                        schema.migrated_at = finish.now;
                    }
                    schema.last_error = None;
                }
            }
            TenantOutcome::Failed(error) => {
                if let Some(schema) = state.schemas.get_mut(&finish.tenant) {
                    schema.last_error = Some(error.clone());
                }
            }
            TenantOutcome::Gone => {
                state.schemas.remove(&finish.tenant);
            }
        }
        let mut events = shared(finish.events);
        if changed {
            events.extend(shared(&[view.state_event(finish.state_event, finish.now)]));
        }
        state.append(events);
        Ok(view)
    }

    async fn command(
        &self,
        id: RolloutId,
        command: RolloutCommand,
        now: DateTime<Utc>,
        state_event: EventId,
    ) -> Result<Rollout, RepoError> {
        let mut state = self.lock();
        let stored = state.rollouts.get_mut(&id).ok_or(RepoError::NotFound)?;
        let mut view = stored.view();
        let requeue = view.command(command, now)?;
        for entry in &mut stored.tenants {
            let e = &mut entry.entry;
            match (requeue, e.state) {
                (Requeue::Transient, TenantRolloutState::Failed)
                    if !e.error.as_ref().is_some_and(|err| err.permanent) =>
                {
                    e.state = TenantRolloutState::Pending;
                    e.finished_at = None;
                }
                (Requeue::AllFailed, TenantRolloutState::Failed) => {
                    e.state = TenantRolloutState::Pending;
                    e.finished_at = None;
                }
                (Requeue::CancelPending, TenantRolloutState::Pending) => {
                    e.state = TenantRolloutState::Cancelled;
                    e.finished_at = Some(now);
                }
                _ => {}
            }
        }
        view.counts = counts(&stored.tenants);
        if matches!(
            command,
            RolloutCommand::Resume | RolloutCommand::RetryFailed
        ) {
            view.accept_failures();
            view.settle(now);
        }
        view.version += 1;
        stored.rollout = view.clone();
        state.append(shared(&[view.state_event(state_event, now)]));
        Ok(view)
    }
}

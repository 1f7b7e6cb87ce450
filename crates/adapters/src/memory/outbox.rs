//! [`Outbox`] in memory: the relay side of the event log, with the same per-tenant order
//! rule as PostgreSQL's, and its dead letters.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tenantd_domain::ports::{
    BatchOutcome, DeadLetter, DeadLetterSelection, Outbox, OutboxBacklog, OutboxBatch,
    UndecodableEvent,
};
use tenantd_domain::{Event, EventId, RepoError, Subject, TenantId};

use super::MemoryStore;
use super::store::{State, lock};

/// A batch of the in-memory outbox: its events are in flight until it is finished or
/// dropped.
struct MemoryBatch {
    state: Arc<Mutex<State>>,
    events: Vec<Event>,
}

impl MemoryBatch {
    fn release(&self, outcome: &BatchOutcome) {
        let mut state = lock(&self.state);
        for id in &outcome.published {
            state.unpublished.remove(id);
            state.delivery_attempts.remove(id);
        }
        let now = chrono::Utc::now();
        for (failure, dead) in outcome
            .failed
            .iter()
            .map(|f| (f, false))
            .chain(outcome.dead_lettered.iter().map(|f| (f, true)))
        {
            if !self.events.iter().any(|e| e.id == failure.event_id) {
                continue;
            }
            let attempts = state
                .delivery_attempts
                .entry(failure.event_id)
                .or_insert((0, String::new()));
            attempts.0 = attempts.0.saturating_add(1);
            attempts.1.clone_from(&failure.error);
            if dead {
                state.dead_letters.insert(failure.event_id, now);
            }
        }
        for event in &self.events {
            state.in_flight.remove(&event.id);
        }
    }
}

impl Drop for MemoryBatch {
    fn drop(&mut self) {
        self.release(&BatchOutcome::default());
    }
}

#[async_trait]
impl OutboxBatch for MemoryBatch {
    fn events(&self) -> &[Event] {
        &self.events
    }

    fn undecodable(&self) -> &[UndecodableEvent] {
        // What is stored in memory is the event itself: it always reads back.
        &[]
    }

    fn attempts(&self, event: EventId) -> u32 {
        lock(&self.state)
            .delivery_attempts
            .get(&event)
            .map_or(0, |(attempts, _)| *attempts)
    }

    async fn finish(mut self: Box<Self>, outcome: &BatchOutcome) -> Result<(), RepoError> {
        self.release(outcome);
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
        let taken: Vec<Arc<Event>> = {
            let mut state = self.lock();
            let mut blocked: HashSet<Subject> = HashSet::new();
            let mut taken = Vec::new();
            for (id, subject) in &state.unpublished {
                if taken.len() >= limit {
                    break;
                }
                if blocked.contains(subject) || state.dead_letters.contains_key(id) {
                    continue;
                }
                if state.in_flight.contains(id) {
                    // Held by another batch: its tenant's later events wait behind it.
                    blocked.insert(*subject);
                    continue;
                }
                taken.push(*id);
            }
            let events = taken
                .iter()
                .filter_map(|id| state.events.get(id).cloned())
                .collect();
            state.in_flight.extend(taken);
            events
        };
        Ok(Box::new(MemoryBatch {
            state: self.state.clone(),
            events: taken.iter().map(|e| Event::clone(e)).collect(),
        }))
    }

    async fn backlog(&self) -> Result<OutboxBacklog, RepoError> {
        let state = self.lock();
        let dead_letters = state.dead_letters.len();
        Ok(OutboxBacklog {
            events: state.unpublished.len().saturating_sub(dead_letters) as u64,
            oldest: state
                .unpublished
                .keys()
                .find(|id| !state.dead_letters.contains_key(id))
                .and_then(|id| state.events.get(id))
                .map(|e| e.occurred_at),
            dead_letters: dead_letters as u64,
        })
    }

    async fn dead_letters(
        &self,
        tenant: Option<TenantId>,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, RepoError> {
        let state = self.lock();
        let from = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        Ok(state
            .dead_letters
            .range((from, std::ops::Bound::Unbounded))
            .filter_map(|(id, at)| Some((state.events.get(id)?, at)))
            .filter(|(event, _)| tenant.is_none_or(|t| event.subject.tenant() == Some(t)))
            .take(limit)
            .map(|(event, at)| {
                let (attempts, error) = state
                    .delivery_attempts
                    .get(&event.id)
                    .cloned()
                    .unwrap_or_default();
                DeadLetter {
                    event_id: event.id,
                    tenant_id: event.subject.tenant().map(|t| t.as_uuid()),
                    rollout_id: match event.subject {
                        Subject::Rollout(rollout) => Some(rollout.0),
                        Subject::Tenant(_) => None,
                    },
                    event_type: event.kind.type_name().to_owned(),
                    occurred_at: event.occurred_at,
                    delivery_attempts: attempts,
                    last_error: error,
                    dead_lettered_at: *at,
                }
            })
            .collect())
    }

    async fn retry_dead_letters(
        &self,
        selection: &DeadLetterSelection,
    ) -> Result<Vec<EventId>, RepoError> {
        let mut state = self.lock();
        let retried: Vec<EventId> = match selection {
            DeadLetterSelection::Events(ids) => {
                let mut ids: Vec<EventId> = ids
                    .iter()
                    .copied()
                    .filter(|id| state.dead_letters.contains_key(id))
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                ids
            }
            DeadLetterSelection::Tenant(tenant) => state
                .dead_letters
                .keys()
                .copied()
                .filter(|id| {
                    state
                        .unpublished
                        .get(id)
                        .is_some_and(|s| s.tenant() == Some(*tenant))
                })
                .collect(),
        };
        for id in &retried {
            state.dead_letters.remove(id);
            state.delivery_attempts.remove(id);
        }
        Ok(retried)
    }
}

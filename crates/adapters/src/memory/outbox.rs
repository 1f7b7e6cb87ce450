//! [`Outbox`] in memory: the relay side of the event log, with the same per-tenant order
//! rule as PostgreSQL's.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tenantd_domain::ports::{Outbox, OutboxBacklog, OutboxBatch};
use tenantd_domain::{Event, EventId, RepoError, Subject};

use super::MemoryStore;
use super::store::{State, lock};

/// A batch of the in-memory outbox: its events are in flight until it is finished or
/// dropped.
struct MemoryBatch {
    state: Arc<Mutex<State>>,
    events: Vec<Event>,
}

impl MemoryBatch {
    fn release(&self, published: &[EventId]) {
        let mut state = lock(&self.state);
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
        let taken: Vec<Arc<Event>> = {
            let mut state = self.lock();
            let mut blocked: HashSet<Subject> = HashSet::new();
            let mut taken = Vec::new();
            for (id, subject) in &state.unpublished {
                if taken.len() >= limit {
                    break;
                }
                if blocked.contains(subject) {
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

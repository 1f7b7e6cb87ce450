//! Lifecycle events: the event log (the outbox's read side), the outbox the relay claims
//! batches from, and the broker the relay publishes to.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{Event, EventId, RepoError, TenantId};

/// The lifecycle event log (the outbox), read side. Events are appended by the
/// repositories in the same unit of work as the change.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Events in id order after `after`, only of `tenant` if given, at most `limit`.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`] on store failure.
    async fn list(
        &self,
        tenant: Option<TenantId>,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<Event>, RepoError>;
}

/// How far behind the event relay is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxBacklog {
    /// Events not yet published.
    pub events: u64,
    /// When the oldest of them was written.
    pub oldest: Option<DateTime<Utc>>,
}

/// Unpublished events claimed by one relay: no other relay publishes them (or a later
/// event of the same tenants) until the batch is finished or dropped. Dropping it without
/// [`OutboxBatch::finish`] gives every event back.
#[async_trait]
pub trait OutboxBatch: Send {
    /// The claimed events: oldest first, each tenant's in the order they happened.
    fn events(&self) -> &[Event];

    /// Marks `published` (a subset of [`OutboxBatch::events`]) as published and gives the
    /// rest back.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`]: nothing is marked (the events
    /// will be published again: delivery is at least once).
    async fn finish(self: Box<Self>, published: &[EventId]) -> Result<(), RepoError>;
}

/// The outbox, relay side: events written with their change, waiting to be published.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Claims at most `limit` unpublished events, oldest first, skipping those another
    /// relay holds and any event of a tenant with an earlier event still unpublished
    /// outside the batch (so each tenant's events go out in order). The claim lasts at
    /// least `hold` (the longest publishing may take); a relay that dies or hangs loses it
    /// after that.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn claim(
        &self,
        limit: usize,
        hold: std::time::Duration,
    ) -> Result<Box<dyn OutboxBatch>, RepoError>;

    /// How many events wait, and since when.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn backlog(&self) -> Result<OutboxBacklog, RepoError>;
}

/// Why an event was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event not delivered: {0}")]
pub struct PublishError(pub String);

/// Where events are published (a message broker).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait EventPublisher: Send + Sync {
    /// Publishes `events` in order, each tenant's in order, and waits for the broker to
    /// confirm each delivery (or give up on it). One outcome per event, in the same order.
    async fn publish(&self, events: &[Event]) -> Vec<Result<(), PublishError>>;

    /// Waits at most `timeout` for deliveries still in flight.
    ///
    /// # Errors
    /// When some were still undelivered at the timeout.
    async fn flush(&self, timeout: std::time::Duration) -> Result<(), PublishError>;
}

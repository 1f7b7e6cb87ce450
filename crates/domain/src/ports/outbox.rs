//! Lifecycle events: the event log (the outbox's read side), the outbox the relay claims
//! batches from, and the broker the relay publishes to.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use uuid::Uuid;

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
    /// Events the relay gave up on (not among `events`).
    pub dead_letters: u64,
}

/// An event the relay gave up on: out of the outbox (its tenant's later events go on
/// without it) until an operator puts it back ([`Outbox::retry_dead_letters`]). The event
/// itself stays in the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The event.
    pub event_id: EventId,
    /// Its tenant, for a tenant's event (as stored: it may not be a valid tenant id).
    pub tenant_id: Option<Uuid>,
    /// Its rollout, for a rollout's event.
    pub rollout_id: Option<Uuid>,
    /// Its type as stored (`tenant.v1.TenantCreated`).
    pub event_type: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Failed deliveries before the relay gave up.
    pub delivery_attempts: u32,
    /// Why the last one failed.
    pub last_error: String,
    /// When it became a dead letter.
    pub dead_lettered_at: DateTime<Utc>,
}

/// Which dead letters to put back in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterSelection {
    /// These events (ids that are not dead letters are left alone).
    Events(Vec<EventId>),
    /// Every dead letter of this tenant.
    Tenant(TenantId),
}

/// A claimed event that could not be read back from the store (its stored form does not
/// decode as the event type it names); its subject's later events are not in the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndecodableEvent {
    /// The event.
    pub event_id: EventId,
    /// Why it does not decode.
    pub error: String,
}

/// A delivery that failed, as the relay reports it when it finishes a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedDelivery {
    /// The event.
    pub event_id: EventId,
    /// Why (a broker's or decoder's message: never an event's content).
    pub error: String,
}

/// What became of a claimed batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Delivered: marked published.
    pub published: Vec<EventId>,
    /// Attempted and failed: their failed attempts count one up, and they wait in the
    /// outbox for the next attempt.
    pub failed: Vec<FailedDelivery>,
    /// Given up on: moved out of the outbox to the dead letters.
    pub dead_lettered: Vec<FailedDelivery>,
}

impl BatchOutcome {
    /// Only `published` delivered, nothing failed.
    pub fn published(published: &[EventId]) -> Self {
        Self {
            published: published.to_vec(),
            ..Self::default()
        }
    }
}

/// Unpublished events claimed by one relay: no other relay publishes them (or a later
/// event of the same tenants) until the batch is finished or dropped. Dropping it without
/// [`OutboxBatch::finish`] gives every event back.
#[async_trait]
pub trait OutboxBatch: Send {
    /// The claimed events: oldest first, each tenant's in the order they happened.
    fn events(&self) -> &[Event];

    /// Claimed events that do not decode (a store this version cannot read: none in
    /// memory). An event of a type this version does not know is never among them: a
    /// newer replica may publish it, so it is held (not claimed) with an alert.
    fn undecodable(&self) -> &[UndecodableEvent];

    /// Failed delivery attempts of a claimed event so far (recorded by earlier
    /// [`OutboxBatch::finish`]es).
    fn attempts(&self, event: EventId) -> u32;

    /// Records `outcome` (its ids are claimed events, each in one list at most) and gives
    /// the batch back.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`]: nothing is recorded (the
    /// events will be published again: delivery is at least once).
    async fn finish(self: Box<Self>, outcome: &BatchOutcome) -> Result<(), RepoError>;
}

/// The outbox, relay side: events written with their change, waiting to be published.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
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

    /// How many events wait, and since when (dead letters do not wait: they are counted
    /// apart).
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn backlog(&self) -> Result<OutboxBacklog, RepoError>;

    /// Dead letters in event id order after `after`, only of `tenant` if given, at most
    /// `limit`.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn dead_letters(
        &self,
        tenant: Option<TenantId>,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, RepoError>;

    /// Puts the selected dead letters back in the outbox with no failed attempts (the
    /// relay delivers them again, after later events of their tenant that went out
    /// meanwhile); returns the ids put back, in id order.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`]: nothing is put back.
    async fn retry_dead_letters(
        &self,
        selection: &DeadLetterSelection,
    ) -> Result<Vec<EventId>, RepoError>;
}

/// Why an event was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event not delivered: {message}")]
pub struct PublishError {
    /// What the broker (or the client library) said.
    pub message: String,
    /// Whether trying again cannot help: this very message cannot be sent (larger than the
    /// producer's limit), rather than the broker failing every message at the moment.
    pub permanent: bool,
}

impl PublishError {
    /// A failure that may pass (a broker down or slow, a timeout).
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: false,
        }
    }

    /// A failure of this message that no retry can mend.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: true,
        }
    }
}

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

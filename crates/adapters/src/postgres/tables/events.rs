//! The `tenant_events` table (the outbox): appended to in every change's transaction.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use tenantd_domain::{Event, EventId, EventKind, RepoError, TenantId};
use uuid::Uuid;

use crate::postgres::errors::db;

/// The columns [`EventRow`] reads.
pub(crate) const EVENT_COLUMNS: &str = "event_id, tenant_id, payload, occurred_at";

/// One `tenant_events` row.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct EventRow {
    pub event_id: Uuid,
    pub tenant_id: Uuid,
    pub payload: Json<EventKind>,
    pub occurred_at: DateTime<Utc>,
}

impl TryFrom<EventRow> for Event {
    type Error = RepoError;

    fn try_from(row: EventRow) -> Result<Self, RepoError> {
        Ok(Event {
            id: EventId(row.event_id),
            tenant_id: TenantId::from_uuid(row.tenant_id)
                .map_err(|_| RepoError::Internal("stored event has an invalid tenant id".into()))?,
            occurred_at: row.occurred_at,
            kind: row.payload.0,
        })
    }
}

/// Appends `events` (one statement), inside the change's transaction.
pub(crate) async fn append(tx: &mut PgConnection, events: &[Event]) -> Result<(), RepoError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut insert = QueryBuilder::<Postgres>::new(
        "INSERT INTO tenant_events (event_id, tenant_id, event_type, payload, occurred_at) ",
    );
    insert.push_values(events, |mut row, event| {
        row.push_bind(event.id.0)
            .push_bind(event.tenant_id.as_uuid())
            .push_bind(event.kind.type_name())
            .push_bind(Json(&event.kind))
            .push_bind(event.occurred_at);
    });
    insert.build().execute(tx).await.map_err(db)?;
    Ok(())
}

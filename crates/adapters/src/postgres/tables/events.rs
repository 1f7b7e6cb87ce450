//! The `tenant_events` table (the outbox): appended to in every change's transaction.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use tenantd_domain::tenant_schema::RolloutId;
use tenantd_domain::{Event, EventId, EventKind, RepoError, Subject, TenantId};
use uuid::Uuid;

use crate::postgres::errors::db;

/// The columns [`EventRow`] reads.
pub(crate) const EVENT_COLUMNS: &str = "event_id, tenant_id, rollout_id, payload, occurred_at";

/// One `tenant_events` row: a tenant's event, or a rollout's.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct EventRow {
    pub event_id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub rollout_id: Option<Uuid>,
    /// Decoded per row in [`Event::try_from`], so that one row that does not decode (a
    /// newer version's event type, say) fails only itself, not the whole query.
    pub payload: Json<serde_json::Value>,
    pub occurred_at: DateTime<Utc>,
}

impl EventRow {
    /// The id of the event's subject (the order the relay keeps).
    pub(crate) fn subject_id(&self) -> Option<Uuid> {
        self.tenant_id.or(self.rollout_id)
    }
}

impl TryFrom<EventRow> for Event {
    type Error = RepoError;

    fn try_from(row: EventRow) -> Result<Self, RepoError> {
        let subject = match (row.tenant_id, row.rollout_id) {
            (Some(tenant), None) => Subject::Tenant(TenantId::from_uuid(tenant).map_err(|_| {
                RepoError::Internal("stored event has an invalid tenant id".into())
            })?),
            (None, Some(rollout)) => Subject::Rollout(RolloutId(rollout)),
            _ => {
                return Err(RepoError::Internal(
                    "stored event has no single subject".into(),
                ));
            }
        };
        let kind = serde_json::from_value::<EventKind>(row.payload.0).map_err(|err| {
            RepoError::Internal(format!("stored event payload does not decode: {err}"))
        })?;
        Ok(Event {
            id: EventId(row.event_id),
            subject,
            occurred_at: row.occurred_at,
            kind,
        })
    }
}

/// Pushes the `INSERT` of `events` for each row of `rows` (a CTE's name: a row inserts
/// them, none inserts nothing).
pub(crate) fn push_insert(sql: &mut QueryBuilder<Postgres>, events: &[Event], rows: &str) {
    let ids: Vec<Uuid> = events.iter().map(|e| e.id.0).collect();
    let tenants: Vec<Option<Uuid>> = events
        .iter()
        .map(|e| e.subject.tenant().map(|t| t.as_uuid()))
        .collect();
    let rollouts: Vec<Option<Uuid>> = events
        .iter()
        .map(|e| match e.subject {
            Subject::Rollout(rollout) => Some(rollout.0),
            Subject::Tenant(_) => None,
        })
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e.kind.type_name()).collect();
    let payloads: Vec<Json<&EventKind>> = events.iter().map(|e| Json(&e.kind)).collect();
    let at: Vec<DateTime<Utc>> = events.iter().map(|e| e.occurred_at).collect();
    sql.push(format!(
        "INSERT INTO tenant_events (event_id, tenant_id, rollout_id, event_type, payload, \
         occurred_at) SELECT u.* FROM {rows}, UNNEST("
    ));
    let mut arrays = sql.separated(", ");
    arrays
        .push_bind(ids)
        .push_unseparated("::uuid[]")
        .push_bind(tenants)
        .push_unseparated("::uuid[]")
        .push_bind(rollouts)
        .push_unseparated("::uuid[]")
        .push_bind(types)
        .push_unseparated("::text[]")
        .push_bind(payloads)
        .push_unseparated("::jsonb[]")
        .push_bind(at)
        .push_unseparated("::timestamptz[]");
    sql.push(") AS u");
}

/// Appends `events` (one statement), inside the change's transaction.
pub(crate) async fn append(tx: &mut PgConnection, events: &[Event]) -> Result<(), RepoError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut insert = QueryBuilder::<Postgres>::new(
        "INSERT INTO tenant_events (event_id, tenant_id, rollout_id, event_type, payload, \
         occurred_at) ",
    );
    insert.push_values(events, |mut row, event| {
        let rollout = match event.subject {
            Subject::Rollout(rollout) => Some(rollout.0),
            Subject::Tenant(_) => None,
        };
        row.push_bind(event.id.0)
            .push_bind(event.subject.tenant().map(|t| t.as_uuid()))
            .push_bind(rollout)
            .push_bind(event.kind.type_name())
            .push_bind(Json(&event.kind))
            .push_bind(event.occurred_at);
    });
    insert.build().execute(tx).await.map_err(db)?;
    Ok(())
}

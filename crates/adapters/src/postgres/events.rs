//! [`EventLog`] on PostgreSQL: the lifecycle events in the outbox table, in id order.

use async_trait::async_trait;
use sqlx::{Postgres, QueryBuilder};
use tenantd_domain::ports::EventLog;
use tenantd_domain::{Event, EventId, RepoError, TenantId};
use uuid::Uuid;

use super::PgStore;
use super::errors::db;
use super::tables::events::{EVENT_COLUMNS, EventRow};

#[async_trait]
impl EventLog for PgStore {
    async fn list(
        &self,
        tenant: Option<TenantId>,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<Event>, RepoError> {
        let mut sql = QueryBuilder::<Postgres>::new(format!(
            "SELECT {EVENT_COLUMNS} FROM tenant_events WHERE true"
        ));
        if let Some(tenant) = tenant {
            sql.push(" AND tenant_id = ").push_bind(tenant.as_uuid());
        }
        if let Some(after) = after {
            sql.push(" AND event_id > ").push_bind::<Uuid>(after.0);
        }
        sql.push(" ORDER BY event_id LIMIT ")
            .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows: Vec<EventRow> = self
            .on_conn(async |conn| sql.build_query_as().fetch_all(conn).await)
            .await
            .map_err(db)?;
        rows.into_iter().map(Event::try_from).collect()
    }
}

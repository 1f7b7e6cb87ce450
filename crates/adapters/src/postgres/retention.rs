//! [`Retention`] on PostgreSQL: batched deletes of the oldest rows past retention, each
//! batch one statement skipping rows another replica's trim (or the relay) holds, and the
//! rows of tenants under legal hold.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tenantd_domain::RepoError;
use tenantd_domain::ports::{RetainedTable, Retention};

use super::PgStore;
use super::errors::db;

#[async_trait]
impl Retention for PgStore {
    async fn trim(
        &self,
        table: RetainedTable,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<u64, RepoError> {
        let statement = match table {
            // Only published events: an event the broker never confirmed is never lost.
            // Nothing of a tenant under legal hold.
            RetainedTable::Events => {
                "DELETE FROM tenant_events WHERE event_id IN (SELECT e.event_id \
                 FROM tenant_events e LEFT JOIN tenants t ON t.tenant_id = e.tenant_id \
                 WHERE e.occurred_at < $1 AND e.published_at IS NOT NULL \
                   AND t.legal_hold_since IS NULL \
                 ORDER BY e.occurred_at LIMIT $2 FOR UPDATE OF e SKIP LOCKED)"
            }
            RetainedTable::Audit => {
                "DELETE FROM audit_records WHERE audit_id IN (SELECT a.audit_id \
                 FROM audit_records a LEFT JOIN tenants t ON t.tenant_id = a.tenant_id \
                 WHERE a.at < $1 AND t.legal_hold_since IS NULL \
                 ORDER BY a.at LIMIT $2 FOR UPDATE OF a SKIP LOCKED)"
            }
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let deleted = self
            .on_conn(async |conn| {
                sqlx::query(statement)
                    .bind(before)
                    .bind(limit)
                    .execute(conn)
                    .await
            })
            .await
            .map_err(db)?;
        Ok(deleted.rows_affected())
    }

    async fn oldest(&self, table: RetainedTable) -> Result<Option<DateTime<Utc>>, RepoError> {
        let statement = match table {
            RetainedTable::Events => {
                "SELECT min(occurred_at) FROM tenant_events WHERE published_at IS NOT NULL"
            }
            RetainedTable::Audit => "SELECT min(at) FROM audit_records",
        };
        let (oldest,): (Option<DateTime<Utc>>,) = self
            .on_conn(async |conn| sqlx::query_as(statement).fetch_one(conn).await)
            .await
            .map_err(db)?;
        Ok(oldest)
    }
}

//! The job queues of the durable runs (provisioning runs, purges, exports): each table has
//! `due_at`, `lease_owner`, `lease_token`, `lease_expires_at` and `version` columns. A claim
//! takes the row due longest ago that no live lease holds, with `FOR UPDATE SKIP LOCKED` so
//! concurrent claimers never get the same one; the lease token then fences every write.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tenantd_domain::ports::Lease;
use uuid::Uuid;

/// One queue: its table and key column.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Queue {
    /// The table.
    pub(crate) table: &'static str,
    /// Its primary key column (a UUID).
    pub(crate) key: &'static str,
}

impl Queue {
    /// A new lease for `owner` from `now`.
    pub(crate) fn lease(owner: &str, now: DateTime<Utc>, lease_for: chrono::Duration) -> Lease {
        Lease {
            token: Uuid::new_v4(),
            owner: owner.to_owned(),
            expires_at: now + lease_for,
        }
    }

    /// The claim statement, returning `columns` of the claimed row: `$1` now, `$2` the
    /// owner, `$3` the token, `$4` the lease's expiry (bind them with [`Queue::bind_claim`]).
    pub(crate) fn claim_sql(&self, columns: &str) -> String {
        let Self { table, key } = self;
        format!(
            "UPDATE {table} SET lease_owner = $2, lease_token = $3, lease_expires_at = $4 \
             WHERE {key} = (SELECT {key} FROM {table} \
                 WHERE due_at <= $1 AND (lease_expires_at IS NULL OR lease_expires_at <= $1) \
                 ORDER BY due_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING {columns}"
        )
    }

    /// Binds a claim's parameters in [`Queue::claim_sql`]'s order.
    pub(crate) fn bind_claim<'q, O>(
        query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
        now: DateTime<Utc>,
        lease: &'q Lease,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
        query
            .bind(now)
            .bind(&lease.owner)
            .bind(lease.token)
            .bind(lease.expires_at)
    }

    /// Extends `lease` on row `id` to `until` while the row is still at `version`;
    /// whether it did.
    pub(crate) async fn renew(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        version: i64,
        lease: &Lease,
        until: DateTime<Utc>,
    ) -> Result<bool, sqlx::Error> {
        let Self { table, key } = self;
        let renewed = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET lease_expires_at = $3 \
             WHERE {key} = $1 AND lease_token = $2 AND version = $4"
        )))
        .bind(id)
        .bind(lease.token)
        .bind(until)
        .bind(version)
        .execute(conn)
        .await?
        .rows_affected();
        Ok(renewed == 1)
    }

    /// Gives `lease` on row `id` up (a no-op when it is no longer held).
    pub(crate) async fn release(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        lease: &Lease,
    ) -> Result<(), sqlx::Error> {
        let Self { table, key } = self;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL \
             WHERE {key} = $1 AND lease_token = $2"
        )))
        .bind(id)
        .bind(lease.token)
        .execute(conn)
        .await
        .map(drop)
    }
}

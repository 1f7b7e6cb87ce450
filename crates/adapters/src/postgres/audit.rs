//! The audit log in PostgreSQL: batched inserts (idempotent on the record id), keyset reads
//! newest first.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder};
use tenantd_domain::ports::AuditLog;
use tenantd_domain::{AuditQuery, AuditRecord, RepoError, TenantId};
use uuid::Uuid;

use super::PgStore;
use super::errors::db;

#[derive(sqlx::FromRow)]
struct AuditRow {
    audit_id: Uuid,
    principal: String,
    method: String,
    tenant_id: Option<Uuid>,
    code: String,
    at: DateTime<Utc>,
    request_id: String,
}

impl From<AuditRow> for AuditRecord {
    fn from(row: AuditRow) -> Self {
        Self {
            id: row.audit_id,
            principal: row.principal,
            method: row.method,
            tenant_id: row.tenant_id.and_then(|t| TenantId::from_uuid(t).ok()),
            code: row.code,
            at: row.at,
            request_id: row.request_id,
        }
    }
}

#[async_trait]
impl AuditLog for PgStore {
    async fn append(&self, records: &[AuditRecord]) -> Result<(), RepoError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut insert = QueryBuilder::<Postgres>::new(
            "INSERT INTO audit_records (audit_id, principal, method, tenant_id, code, at, request_id) ",
        );
        insert.push_values(records, |mut row, r| {
            row.push_bind(r.id)
                .push_bind(&r.principal)
                .push_bind(&r.method)
                .push_bind(r.tenant_id.map(|t| t.as_uuid()))
                .push_bind(&r.code)
                .push_bind(r.at)
                .push_bind(&r.request_id);
        });
        insert.push(" ON CONFLICT (audit_id) DO NOTHING");
        insert.build().execute(self.pool()).await.map_err(db)?;
        Ok(())
    }

    async fn list(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, RepoError> {
        let mut sql = QueryBuilder::<Postgres>::new(
            "SELECT audit_id, principal, method, tenant_id, code, at, request_id \
             FROM audit_records WHERE true",
        );
        if let Some(before) = query.before {
            sql.push(" AND audit_id < ").push_bind(before);
        }
        if let Some(tenant) = query.tenant_id {
            sql.push(" AND tenant_id = ").push_bind(tenant.as_uuid());
        }
        if let Some(principal) = &query.principal {
            sql.push(" AND principal = ").push_bind(principal.clone());
        }
        if let Some(method) = &query.method {
            sql.push(" AND method = ").push_bind(method.clone());
        }
        if let Some(start) = query.start {
            sql.push(" AND at >= ").push_bind(start);
        }
        if let Some(end) = query.end {
            sql.push(" AND at < ").push_bind(end);
        }
        sql.push(" ORDER BY audit_id DESC LIMIT ")
            .push_bind(i64::try_from(query.limit).unwrap_or(i64::MAX));
        let rows: Vec<AuditRow> = sql
            .build_query_as()
            .fetch_all(self.pool())
            .await
            .map_err(db)?;
        Ok(rows.into_iter().map(AuditRecord::from).collect())
    }
}

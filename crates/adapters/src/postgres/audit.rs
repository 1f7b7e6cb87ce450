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
        // One statement of fixed shape whatever the batch's size: arrays of the columns,
        // unnested (one prepared statement, one round trip).
        let mut ids = Vec::with_capacity(records.len());
        let mut principals = Vec::with_capacity(records.len());
        let mut methods = Vec::with_capacity(records.len());
        let mut tenants = Vec::with_capacity(records.len());
        let mut codes = Vec::with_capacity(records.len());
        let mut ats = Vec::with_capacity(records.len());
        let mut request_ids = Vec::with_capacity(records.len());
        for r in records {
            ids.push(r.id);
            principals.push(r.principal.as_str());
            methods.push(r.method.as_str());
            tenants.push(r.tenant_id.map(|t| t.as_uuid()));
            codes.push(r.code.as_str());
            ats.push(r.at);
            request_ids.push(r.request_id.as_str());
        }
        self.on_conn(async |conn| sqlx::query(
            "INSERT INTO audit_records (audit_id, principal, method, tenant_id, code, at, request_id) \
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::text[], \
                                  $6::timestamptz[], $7::text[]) \
             ON CONFLICT (audit_id) DO NOTHING",
        )
        .bind(&ids)
        .bind(&principals)
        .bind(&methods)
        .bind(&tenants)
        .bind(&codes)
        .bind(&ats)
        .bind(&request_ids)
        .execute(conn)
        .await).await
        .map_err(db)?;
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
        let rows: Vec<AuditRow> = self
            .on_conn(async |conn| sql.build_query_as().fetch_all(conn).await)
            .await
            .map_err(db)?;
        Ok(rows.into_iter().map(AuditRecord::from).collect())
    }
}

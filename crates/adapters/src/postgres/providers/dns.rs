//! The DNS step's provider on PostgreSQL: records kept in the `dns_records` table, the
//! control plane being their source of truth.

use async_trait::async_trait;
use sqlx::PgPool;
use tenantd_domain::TenantId;
use tenantd_domain::ports::{DnsProvider, DnsRecord, ProvisioningTarget};
use tenantd_domain::provisioning::StepError;

use super::step_error;
use crate::postgres::errors::db;

/// DNS records of tenants, kept in the `dns_records` table: `<slug>.<base domain>` as an A
/// record to the ingress address and `www.<slug>.<base domain>` as a CNAME to it.
#[derive(Debug, Clone)]
pub struct PgDns {
    pool: PgPool,
    base_domain: String,
    ingress: std::net::IpAddr,
}

/// TTL of the records, in seconds.
const DNS_TTL: i32 = 300;

impl PgDns {
    /// Records under `base_domain` pointing at `ingress`.
    pub fn new(pool: PgPool, base_domain: &str, ingress: std::net::IpAddr) -> Self {
        Self {
            pool,
            base_domain: base_domain.to_owned(),
            ingress,
        }
    }
}

#[async_trait]
impl DnsProvider for PgDns {
    async fn publish(&self, target: &ProvisioningTarget) -> Result<(), StepError> {
        let records = DnsRecord::of_tenant(&target.slug, &self.base_domain, self.ingress);
        let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
        let types: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
        let values: Vec<&str> = records.iter().map(|r| r.value.as_str()).collect();
        // All or nothing: when another tenant holds one of the names, none is written (a
        // conflict the operator must resolve); this tenant's own records are kept as they
        // are, so publishing again changes nothing.
        let taken: Vec<(String,)> = sqlx::query_as(
            "WITH wanted AS (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]) \
                 AS w(name, type, value)), \
             taken AS (SELECT d.name FROM dns_records d JOIN wanted w USING (name, type) \
                 WHERE d.tenant_id <> $5), \
             inserted AS (INSERT INTO dns_records (name, type, value, ttl, tenant_id) \
                 SELECT name, type, value, $4, $5 FROM wanted \
                 WHERE NOT EXISTS (SELECT 1 FROM taken) \
                 ON CONFLICT (name, type) DO NOTHING RETURNING name) \
             SELECT name FROM taken ORDER BY name",
        )
        .bind(&names)
        .bind(&types)
        .bind(&values)
        .bind(DNS_TTL)
        .bind(target.tenant_id.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| step_error("cannot publish DNS records", &db(e)))?;
        if let Some((name,)) = taken.first() {
            return Err(StepError::permanent(
                "DNS_NAME_TAKEN",
                format!("{name} is held by another tenant"),
            ));
        }
        Ok(())
    }

    async fn withdraw(&self, tenant: TenantId) -> Result<(), StepError> {
        sqlx::query("DELETE FROM dns_records WHERE tenant_id = $1")
            .bind(tenant.as_uuid())
            .execute(&self.pool)
            .await
            .map_err(|e| step_error("cannot withdraw DNS records", &db(e)))?;
        Ok(())
    }

    async fn records(&self, tenant: TenantId) -> Result<Vec<DnsRecord>, StepError> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT name, type, value FROM dns_records WHERE tenant_id = $1 ORDER BY name, type",
        )
        .bind(tenant.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| step_error("cannot read DNS records", &db(e)))?;
        Ok(rows
            .into_iter()
            .map(|(name, kind, value)| DnsRecord { name, kind, value })
            .collect())
    }
}

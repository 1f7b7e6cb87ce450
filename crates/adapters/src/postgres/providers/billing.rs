//! The BILLING step's provider on PostgreSQL: customers and subscriptions kept in
//! `billing_subscriptions`.

use async_trait::async_trait;
use sqlx::PgPool;
use tenantd_domain::ports::{BillingProvider, ProvisioningTarget, Subscription};
use tenantd_domain::provisioning::StepError;
use tenantd_domain::{PlanId, TenantId};

use super::step_error;
use crate::postgres::errors::db;

/// Billing customers and subscriptions, kept in `billing_subscriptions`.
#[derive(Debug, Clone)]
pub struct PgBilling {
    pool: PgPool,
}

impl PgBilling {
    /// Subscriptions in the control-plane database.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl BillingProvider for PgBilling {
    async fn subscribe(&self, target: &ProvisioningTarget) -> Result<(), StepError> {
        let id = target.tenant_id.as_uuid().simple();
        sqlx::query(
            "INSERT INTO billing_subscriptions \
                 (tenant_id, customer_id, subscription_id, plan_id, status) \
             VALUES ($1, $2, $3, $4, 'ACTIVE') \
             ON CONFLICT (tenant_id) DO UPDATE SET plan_id = EXCLUDED.plan_id, \
                 status = 'ACTIVE', cancelled_at = NULL",
        )
        .bind(target.tenant_id.as_uuid())
        .bind(format!("cus_{id}"))
        .bind(format!("sub_{id}"))
        .bind(target.plan_id.as_str())
        .execute(&self.pool)
        .await
        .map_err(|e| step_error("cannot subscribe the tenant", &db(e)))?;
        Ok(())
    }

    async fn cancel(&self, tenant: TenantId) -> Result<(), StepError> {
        sqlx::query(
            "UPDATE billing_subscriptions SET status = 'CANCELLED', cancelled_at = now() \
             WHERE tenant_id = $1 AND status = 'ACTIVE'",
        )
        .bind(tenant.as_uuid())
        .execute(&self.pool)
        .await
        .map_err(|e| step_error("cannot cancel the subscription", &db(e)))?;
        Ok(())
    }

    async fn subscription(&self, tenant: TenantId) -> Result<Option<Subscription>, StepError> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT plan_id, status FROM billing_subscriptions WHERE tenant_id = $1",
        )
        .bind(tenant.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| step_error("cannot read the subscription", &db(e)))?;
        Ok(row.map(|(plan_id, status)| Subscription {
            plan_id: PlanId::new(plan_id),
            active: status == "ACTIVE",
        }))
    }
}

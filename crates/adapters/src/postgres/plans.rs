//! The plan catalogue, seeded by the migrations.

use async_trait::async_trait;
use sqlx::PgPool;
use tenantd_domain::ports::PlanRepository;
use tenantd_domain::{Plan, PlanId, PlanQuotas, RepoError};

use super::errors::db;

/// Plans in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgPlanRepository {
    pool: PgPool,
}

impl PgPlanRepository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[derive(sqlx::FromRow)]
struct PlanRow {
    plan_id: String,
    display_name: String,
    max_api_keys: i32,
    requests_per_second: i32,
    max_users: i32,
}

impl From<PlanRow> for Plan {
    fn from(row: PlanRow) -> Self {
        let quota = |n: i32| u32::try_from(n).unwrap_or(0);
        Self {
            id: PlanId::new(row.plan_id),
            display_name: row.display_name,
            quotas: PlanQuotas {
                max_api_keys: quota(row.max_api_keys),
                requests_per_second: quota(row.requests_per_second),
                max_users: quota(row.max_users),
            },
        }
    }
}

const COLUMNS: &str = "plan_id, display_name, max_api_keys, requests_per_second, max_users";

#[async_trait]
impl PlanRepository for PgPlanRepository {
    async fn list(&self) -> Result<Vec<Plan>, RepoError> {
        let rows: Vec<PlanRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM plans ORDER BY plan_id"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.into_iter().map(Plan::from).collect())
    }

    async fn get(&self, id: &PlanId) -> Result<Option<Plan>, RepoError> {
        let row: Option<PlanRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM plans WHERE plan_id = $1"
        )))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(row.map(Plan::from))
    }
}

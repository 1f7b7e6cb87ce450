//! The `tenants` table: its row, its reads (with the latest run's summary) and the two
//! writes both the tenant and the run repositories make (insert, versioned update).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use tenantd_domain::ports::{CipherError, EmailCipher, WrappedDataKey};
use tenantd_domain::provisioning::{RunId, RunState, RunSummary, StepKind};
use tenantd_domain::tenant_schema::Placement;
use tenantd_domain::{
    DisplayName, Labels, LegalHold, PlanId, RepoError, Slug, Tenant, TenantConfig, TenantId,
    TenantParts, TenantStatus,
};
use uuid::Uuid;

use crate::postgres::data_keys;
use crate::postgres::errors::db;

/// `SELECT` of tenants with their latest run's summary (columns of [`RunSummaryColumns`],
/// kept on the row by migration 0009's trigger) and their data key (which their contact
/// email opens with); append `WHERE ...` on `tenants`' own column names.
pub(crate) const SELECT_TENANTS: &str = "SELECT tenant_id, slug, display_name, plan_id, status, \
     status_reason, status_before_delete, contact_email_sealed, contact_email_key_id, \
     contact_email_index, labels, config, created_at, updated_at, deleted_at, purge_at, \
     purged_at, version, tenant_database, dedicated_database, tenant_schema, legal_hold_reason, legal_hold_since, \
     latest_run_id AS run_id, latest_run_state AS run_state, \
     latest_run_current_step AS current_step, latest_run_completed_steps AS completed_steps, \
     latest_run_total_steps AS total_steps, data_key_sealed, data_key_id \
     FROM tenants LEFT JOIN tenant_data_keys USING (tenant_id)";

/// GetTenant's statement: [`SELECT_TENANTS`] of one tenant by id (`$1`), one primary-key read.
pub(crate) static SELECT_TENANT_BY_ID: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{SELECT_TENANTS} WHERE tenant_id = $1"));

/// The latest run's summary as [`SELECT_TENANTS`] reads it (all NULL without a run), as
/// `ProvisioningRun::summary` computed it when the run was last written.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub(crate) struct RunSummaryColumns {
    run_id: Option<Uuid>,
    run_state: Option<String>,
    current_step: Option<String>,
    completed_steps: Option<i32>,
    total_steps: Option<i32>,
}

impl RunSummaryColumns {
    fn summary(self) -> Result<Option<RunSummary>, RepoError> {
        let (Some(run_id), Some(state)) = (self.run_id, self.run_state) else {
            return Ok(None);
        };
        Ok(Some(RunSummary {
            run_id: RunId(run_id),
            state: RunState::parse(&state).ok_or_else(|| corrupt("run state"))?,
            current_step: self
                .current_step
                .map(|k| StepKind::parse(&k).ok_or_else(|| corrupt("run step")))
                .transpose()?,
            completed_steps: u32::try_from(self.completed_steps.unwrap_or(0)).unwrap_or(0),
            total_steps: u32::try_from(self.total_steps.unwrap_or(0)).unwrap_or(0),
        }))
    }
}

/// One `tenants` row; also the JSON snapshot kept as an idempotent create's response.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub(crate) struct TenantRow {
    pub tenant_id: Uuid,
    pub slug: String,
    pub display_name: String,
    pub plan_id: String,
    pub status: String,
    pub status_reason: String,
    pub status_before_delete: Option<String>,
    /// The sealed address (NULL, with the key id and the index, for a tombstone).
    pub contact_email_sealed: Option<Vec<u8>>,
    pub contact_email_key_id: Option<String>,
    pub contact_email_index: Option<Vec<u8>>,
    pub labels: Json<BTreeMap<String, String>>,
    pub config: Json<serde_json::Map<String, serde_json::Value>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub purge_at: Option<DateTime<Utc>>,
    /// When its purge finished.
    #[serde(default)]
    pub purged_at: Option<DateTime<Utc>>,
    pub version: i64,
    /// Where its data lives (all NULL: not recorded).
    #[serde(default)]
    pub tenant_database: Option<String>,
    /// Its own database, when dedicated.
    #[serde(default)]
    pub dedicated_database: Option<String>,
    /// Its schema.
    #[serde(default)]
    pub tenant_schema: Option<String>,
    /// Why it is under legal hold (NULL: not held).
    #[serde(default)]
    pub legal_hold_reason: Option<String>,
    /// Since when it is held.
    #[serde(default)]
    pub legal_hold_since: Option<DateTime<Utc>>,
    /// The run summary the tenant carried: kept in a create's response snapshot (so a
    /// replay answers exactly as the create did); never a column.
    #[sqlx(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<SummarySnapshot>,
    /// The latest run, as [`SELECT_TENANTS`] reads it.
    #[sqlx(flatten)]
    #[serde(skip)]
    pub latest_run: RunSummaryColumns,
    /// The tenant's wrapped data key, as [`SELECT_TENANTS`] joins it (NULL: none, or
    /// destroyed); never in a snapshot.
    #[serde(skip)]
    pub data_key_sealed: Option<Vec<u8>>,
    /// The id of the ring key that wrapped it.
    #[serde(skip)]
    pub data_key_id: Option<String>,
}

/// A run summary in a response snapshot.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct SummarySnapshot {
    run_id: Uuid,
    state: String,
    current_step: Option<String>,
    completed_steps: u32,
    total_steps: u32,
}

impl SummarySnapshot {
    fn of(summary: &RunSummary) -> Self {
        Self {
            run_id: summary.run_id.0,
            state: summary.state.as_str().to_owned(),
            current_step: summary.current_step.map(|k| k.as_str().to_owned()),
            completed_steps: summary.completed_steps,
            total_steps: summary.total_steps,
        }
    }

    fn summary(self) -> Result<RunSummary, RepoError> {
        Ok(RunSummary {
            run_id: RunId(self.run_id),
            state: RunState::parse(&self.state).ok_or_else(|| corrupt("run state"))?,
            current_step: self
                .current_step
                .map(|k| StepKind::parse(&k).ok_or_else(|| corrupt("run step")))
                .transpose()?,
            completed_steps: self.completed_steps,
            total_steps: self.total_steps,
        })
    }
}

impl TenantRow {
    /// The row of `tenant`, its contact email sealed by `cipher` with the tenant's data
    /// `key` (which it must have when it has an email).
    ///
    /// # Errors
    /// [`RepoError::Internal`] when the email has no key to be sealed with, or the key does
    /// not unwrap.
    pub(crate) fn seal(
        tenant: &Tenant,
        cipher: &dyn EmailCipher,
        key: Option<&WrappedDataKey>,
    ) -> Result<Self, RepoError> {
        let p = tenant.parts();
        let sealed = p
            .contact_email
            .as_ref()
            .map(|email| {
                let key = key.ok_or_else(|| {
                    RepoError::Internal(format!("tenant {} has no data key", p.id))
                })?;
                let sealed = cipher.seal_with_key(p.id, key, email).map_err(|err| {
                    RepoError::Internal(format!(
                        "data key of tenant {} does not unwrap: {err}",
                        p.id
                    ))
                })?;
                Ok::<_, RepoError>((sealed, cipher.blind_index(email).to_vec()))
            })
            .transpose()?;
        let (sealed, index) = sealed.unzip();
        Ok(Self {
            tenant_id: p.id.as_uuid(),
            slug: p.slug.as_str().to_owned(),
            display_name: p.display_name.as_str().to_owned(),
            plan_id: p.plan_id.as_str().to_owned(),
            status: p.status.as_str().to_owned(),
            status_reason: p.status_reason.clone(),
            status_before_delete: p.status_before_delete.map(|s| s.as_str().to_owned()),
            contact_email_key_id: sealed.as_ref().map(|s| s.key_id.clone()),
            contact_email_sealed: sealed.map(|s| s.envelope),
            contact_email_index: index,
            labels: Json(p.labels.as_map().clone()),
            config: Json(p.config.as_map().clone()),
            created_at: p.created_at,
            updated_at: p.updated_at,
            deleted_at: p.deleted_at,
            purge_at: p.purge_at,
            purged_at: p.purged_at,
            version: i64::try_from(p.version).unwrap_or(i64::MAX),
            tenant_database: p.placement.as_ref().map(|at| at.tenant_database.clone()),
            dedicated_database: p.placement.as_ref().and_then(|at| at.dedicated.clone()),
            tenant_schema: p.placement.as_ref().map(|at| at.schema.clone()),
            legal_hold_reason: p.legal_hold.as_ref().map(|hold| hold.reason.clone()),
            legal_hold_since: p.legal_hold.as_ref().map(|hold| hold.since),
            provisioning: p.provisioning.as_ref().map(SummarySnapshot::of),
            latest_run: RunSummaryColumns::default(),
            data_key_sealed: key.map(|k| k.envelope.clone()),
            data_key_id: key.map(|k| k.key_id.clone()),
        })
    }
}

fn corrupt(what: &str) -> RepoError {
    RepoError::Internal(format!("stored tenant has an invalid {what}"))
}

fn status(text: &str) -> Result<TenantStatus, RepoError> {
    TenantStatus::ALL
        .into_iter()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| corrupt("status"))
}

impl TenantRow {
    /// The tenant of this row, its contact email opened by `cipher` (with the row's data
    /// key when it was sealed with one).
    ///
    /// A purging tenant whose data key is destroyed has no contact email any more. Any
    /// other envelope that does not open is an alert, not a bad row: tampering, a
    /// ciphertext copied from another tenant, or a key missing from the ring.
    pub(crate) fn open(mut self, cipher: &dyn EmailCipher) -> Result<Tenant, RepoError> {
        let id = TenantId::from_uuid(self.tenant_id).map_err(|_| corrupt("id"))?;
        let key = match (self.data_key_sealed.take(), self.data_key_id.take()) {
            (Some(envelope), Some(key_id)) => Some(WrappedDataKey { envelope, key_id }),
            _ => None,
        };
        let shredded = matches!(
            status(&self.status)?,
            TenantStatus::Purging | TenantStatus::Purged
        );
        let contact_email = match self.contact_email_sealed.as_deref() {
            None => None,
            Some(sealed) => match cipher.open_with_key(id, key.as_ref(), sealed) {
                Ok(email) => Some(email),
                Err(CipherError::NoDataKey) if shredded => None,
                Err(err) => {
                    tracing::error!(
                        tenant_id = %id,
                        key_id = self.contact_email_key_id.as_deref().unwrap_or_default(),
                        error = %err,
                        "ALERT: a stored contact email does not decrypt (tampering, a row copied between tenants, or a key missing from the ring)"
                    );
                    return Err(RepoError::Internal(format!(
                        "contact email of tenant {id} does not decrypt"
                    )));
                }
            },
        };
        let row = self;
        Ok(Tenant::from_parts(TenantParts {
            id,
            slug: Slug::from_stored(row.slug),
            display_name: DisplayName::parse(&row.display_name)
                .map_err(|_| corrupt("display name"))?,
            plan_id: PlanId::new(row.plan_id),
            status: status(&row.status)?,
            status_reason: row.status_reason,
            contact_email,
            labels: Labels::parse(row.labels.0).map_err(|_| corrupt("labels"))?,
            config: TenantConfig::parse(row.config.0).map_err(|_| corrupt("config"))?,
            created_at: row.created_at,
            updated_at: row.updated_at,
            deleted_at: row.deleted_at,
            purge_at: row.purge_at,
            purged_at: row.purged_at,
            status_before_delete: row
                .status_before_delete
                .as_deref()
                .map(status)
                .transpose()?,
            version: u64::try_from(row.version).map_err(|_| corrupt("version"))?,
            provisioning: match row.latest_run.summary()? {
                Some(latest) => Some(latest),
                None => row.provisioning.map(SummarySnapshot::summary).transpose()?,
            },
            placement: placement(
                row.tenant_database,
                row.dedicated_database,
                row.tenant_schema,
            )?,
            legal_hold: match (row.legal_hold_reason, row.legal_hold_since) {
                (Some(reason), Some(since)) => Some(LegalHold { reason, since }),
                (None, None) => None,
                _ => return Err(corrupt("legal hold")),
            },
        }))
    }
}

/// The placement of the `tenant_database`, `dedicated_database` and `tenant_schema`
/// columns (all NULL: not recorded).
pub(crate) fn placement(
    tenant_database: Option<String>,
    dedicated: Option<String>,
    schema: Option<String>,
) -> Result<Option<Placement>, RepoError> {
    match (tenant_database, schema) {
        (Some(tenant_database), Some(schema)) => Ok(Some(Placement {
            tenant_database,
            dedicated,
            schema,
        })),
        (None, None) if dedicated.is_none() => Ok(None),
        _ => Err(corrupt("placement")),
    }
}

/// The columns a tenant's changes write, in the order [`bind_mutable`] binds them.
const MUTABLE_COLUMNS: &str = "display_name, plan_id, status, status_reason, \
     status_before_delete, contact_email_sealed, contact_email_key_id, contact_email_index, \
     labels, config, updated_at, deleted_at, purge_at, version, legal_hold_reason, \
     legal_hold_since, purged_at";

/// Binds the [`MUTABLE_COLUMNS`] of `row`, in order.
fn bind_mutable<'q>(
    query: Query<'q, Postgres, PgArguments>,
    row: &TenantRow,
) -> Query<'q, Postgres, PgArguments> {
    query
        .bind(&row.display_name)
        .bind(&row.plan_id)
        .bind(&row.status)
        .bind(&row.status_reason)
        .bind(&row.status_before_delete)
        .bind(&row.contact_email_sealed)
        .bind(&row.contact_email_key_id)
        .bind(&row.contact_email_index)
        .bind(&row.labels)
        .bind(&row.config)
        .bind(row.updated_at)
        .bind(row.deleted_at)
        .bind(row.purge_at)
        .bind(row.version)
        .bind(&row.legal_hold_reason)
        .bind(row.legal_hold_since)
        .bind(row.purged_at)
}

/// Pushes `INSERT INTO tenants (...) SELECT <row's values>` (no `FROM`: the caller may
/// append a `WHERE`), with the latest run's `summary` on the row.
pub(crate) fn push_insert(sql: &mut QueryBuilder<Postgres>, row: &TenantRow, summary: &RunSummary) {
    sql.push(format!(
        "INSERT INTO tenants (tenant_id, slug, created_at, tenant_database, dedicated_database, \
         tenant_schema, {MUTABLE_COLUMNS}, latest_run_id, latest_run_state, \
         latest_run_current_step, latest_run_completed_steps, latest_run_total_steps) SELECT "
    ));
    let mut values = sql.separated(", ");
    values
        .push_bind(row.tenant_id)
        .push_bind(&row.slug)
        .push_bind(row.created_at)
        .push_bind(&row.tenant_database)
        .push_bind(&row.dedicated_database)
        .push_bind(&row.tenant_schema)
        .push_bind(&row.display_name)
        .push_bind(&row.plan_id)
        .push_bind(&row.status)
        .push_bind(&row.status_reason)
        .push_bind(&row.status_before_delete)
        .push_bind(&row.contact_email_sealed)
        .push_bind(&row.contact_email_key_id)
        .push_bind(&row.contact_email_index)
        .push_bind(&row.labels)
        .push_bind(&row.config)
        .push_bind(row.updated_at)
        .push_bind(row.deleted_at)
        .push_bind(row.purge_at)
        .push_bind(row.version)
        .push_bind(&row.legal_hold_reason)
        .push_bind(row.legal_hold_since)
        .push_bind(row.purged_at)
        .push_bind(summary.run_id.0)
        .push_bind(summary.state.as_str())
        .push_bind(summary.current_step.map(StepKind::as_str))
        .push_bind(i32::try_from(summary.completed_steps).unwrap_or(i32::MAX))
        .push_bind(i32::try_from(summary.total_steps).unwrap_or(i32::MAX));
}

/// Replaces `tenant`'s row if it is still at `expected_version`.
///
/// # Errors
/// [`RepoError::VersionConflict`] when its version differs; [`RepoError::NotFound`] when
/// there is no such tenant; store failures.
pub(crate) async fn update(
    tx: &mut PgConnection,
    tenant: &Tenant,
    expected_version: u64,
    cipher: &dyn EmailCipher,
) -> Result<(), RepoError> {
    let key = match tenant.contact_email() {
        Some(_) => {
            let fresh = cipher.new_data_key(tenant.id());
            Some(data_keys::get_or_create(tx, tenant.id(), fresh).await?)
        }
        None => None,
    };
    let row = TenantRow::seal(tenant, cipher, key.as_ref())?;
    let expected = i64::try_from(expected_version).map_err(|_| RepoError::VersionConflict)?;
    let update = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE tenants SET ({MUTABLE_COLUMNS}) = \
         ($3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) \
         WHERE tenant_id = $1 AND version = $2"
    )))
    .bind(row.tenant_id)
    .bind(expected);
    let updated = bind_mutable(update, &row)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
    if updated == 1 {
        return Ok(());
    }
    let exists = sqlx::query("SELECT 1 FROM tenants WHERE tenant_id = $1")
        .bind(row.tenant_id)
        .fetch_optional(tx)
        .await
        .map_err(db)?
        .is_some();
    Err(if exists {
        RepoError::VersionConflict
    } else {
        RepoError::NotFound
    })
}

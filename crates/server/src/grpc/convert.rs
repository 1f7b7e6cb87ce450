//! Conversions between the generated `tenant.v1` messages and domain values: timestamps,
//! `google.protobuf.Struct` <-> JSON objects, tenants, plans and events. Requests are
//! converted into plain use-case inputs; validation happens in the use cases.

use chrono::{DateTime, Utc};
use prost_types::{ListValue, Struct, Timestamp, Value, value::Kind};
use serde_json::{Map, Number, Value as Json};
use tenantd_domain::export::{Export, ExportState};
use tenantd_domain::ports::DeadLetter;
use tenantd_domain::provisioning::{
    ProvisioningRun, RunState, RunSummary, Step, StepError, StepKind, StepState,
};
use tenantd_domain::purge::{Purge, PurgeStepKind, PurgeStepState};
use tenantd_domain::tenant_schema::{Placement, RolloutState};
use tenantd_domain::{
    ApiKey, AuditRecord, Error, Event, EventKind, FieldViolation, Plan, Subject, Tenant,
    TenantStatus,
};

use crate::proto;

/// Deepest nesting accepted in `config` (prost already bounds decoding at 100).
const MAX_DEPTH: usize = 32;

/// A domain time as a protobuf timestamp.
pub fn timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf `Struct` as a JSON object; `field` names it in errors.
///
/// # Errors
/// [`Error::InvalidArgument`] for non-finite numbers or nesting deeper than 32 levels.
pub fn struct_to_json(value: Struct, field: &str) -> Result<Map<String, Json>, Error> {
    fields_to_json(value.fields, 0)
        .map_err(|why| Error::invalid_fields(vec![FieldViolation::new(field, why)]))
}

fn fields_to_json(
    fields: impl IntoIterator<Item = (String, Value)>,
    depth: usize,
) -> Result<Map<String, Json>, &'static str> {
    fields
        .into_iter()
        .map(|(k, v)| Ok((k, value_to_json(v, depth + 1)?)))
        .collect()
}

fn value_to_json(value: Value, depth: usize) -> Result<Json, &'static str> {
    if depth > MAX_DEPTH {
        return Err("is nested more than 32 levels deep");
    }
    Ok(match value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(b),
        Some(Kind::StringValue(s)) => Json::String(s),
        Some(Kind::NumberValue(n)) => {
            Json::Number(Number::from_f64(n).ok_or("numbers must be finite")?)
        }
        Some(Kind::StructValue(s)) => Json::Object(fields_to_json(s.fields, depth)?),
        Some(Kind::ListValue(list)) => Json::Array(
            list.values
                .into_iter()
                .map(|v| value_to_json(v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// A JSON object as a protobuf `Struct`.
pub fn json_to_struct(object: &Map<String, Json>) -> Struct {
    Struct {
        fields: object
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(value: &Json) -> Value {
    let kind = match value {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        Json::Object(object) => Kind::StructValue(json_to_struct(object)),
    };
    Value { kind: Some(kind) }
}

/// The API enum of a domain status.
pub fn status_to_proto(status: TenantStatus) -> proto::TenantStatus {
    match status {
        TenantStatus::Provisioning => proto::TenantStatus::Provisioning,
        TenantStatus::Active => proto::TenantStatus::Active,
        TenantStatus::Suspended => proto::TenantStatus::Suspended,
        TenantStatus::Failed => proto::TenantStatus::Failed,
        TenantStatus::Cancelled => proto::TenantStatus::Cancelled,
        TenantStatus::Deleted => proto::TenantStatus::Deleted,
        TenantStatus::Purging => proto::TenantStatus::Purging,
        TenantStatus::Purged => proto::TenantStatus::Purged,
    }
}

/// A status filter from the API: UNSPECIFIED means none.
///
/// # Errors
/// [`Error::InvalidArgument`] on `field` for a number that is no `TenantStatus`.
pub fn status_filter(value: i32, field: &str) -> Result<Option<TenantStatus>, Error> {
    let status = proto::TenantStatus::try_from(value)
        .map_err(|_| Error::invalid(field, "is not a TenantStatus value"))?;
    Ok(match status {
        proto::TenantStatus::Unspecified => None,
        proto::TenantStatus::Provisioning => Some(TenantStatus::Provisioning),
        proto::TenantStatus::Active => Some(TenantStatus::Active),
        proto::TenantStatus::Suspended => Some(TenantStatus::Suspended),
        proto::TenantStatus::Failed => Some(TenantStatus::Failed),
        proto::TenantStatus::Cancelled => Some(TenantStatus::Cancelled),
        proto::TenantStatus::Deleted => Some(TenantStatus::Deleted),
        proto::TenantStatus::Purging => Some(TenantStatus::Purging),
        proto::TenantStatus::Purged => Some(TenantStatus::Purged),
    })
}

impl From<&Tenant> for proto::Tenant {
    fn from(tenant: &Tenant) -> Self {
        Self {
            tenant_id: tenant.id().to_string(),
            slug: tenant.slug().to_string(),
            display_name: tenant.display_name().as_str().to_owned(),
            plan_id: tenant.plan_id().to_string(),
            status: status_to_proto(tenant.status()).into(),
            status_reason: tenant.status_reason().to_owned(),
            contact_email: tenant
                .contact_email()
                .map(|email| email.expose().to_owned())
                .unwrap_or_default(),
            labels: tenant.labels().as_map().clone(),
            config: Some(json_to_struct(tenant.config().as_map())),
            provisioning: tenant.provisioning().map(proto::ProvisioningSummary::from),
            create_time: Some(timestamp(tenant.created_at())),
            update_time: Some(timestamp(tenant.updated_at())),
            delete_time: tenant.deleted_at().map(timestamp),
            purge_time: tenant.purge_at().map(timestamp),
            etag: tenant.etag(),
            placement: tenant.placement().map(placement),
            legal_hold: tenant.legal_hold().map(|hold| proto::LegalHold {
                reason: hold.reason.clone(),
                set_time: Some(timestamp(hold.since)),
            }),
            purged_time: tenant.purged_at().map(timestamp),
        }
    }
}

impl From<&Purge> for proto::Purge {
    fn from(purge: &Purge) -> Self {
        Self {
            tenant_id: purge.tenant_id.to_string(),
            done: purge.is_done(),
            forced: purge.forced,
            requested_by: purge.requested_by.clone(),
            steps: purge
                .steps
                .iter()
                .map(|step| proto::PurgeStep {
                    kind: purge_step_kind(step.kind).into(),
                    state: match step.state {
                        PurgeStepState::Pending => proto::PurgeStepState::Pending,
                        PurgeStepState::Running => proto::PurgeStepState::Running,
                        PurgeStepState::Succeeded => proto::PurgeStepState::Succeeded,
                    }
                    .into(),
                    attempts: i32::try_from(step.attempts).unwrap_or(i32::MAX),
                    last_error: step.last_error.as_ref().map(step_error),
                    start_time: step.started_at.map(timestamp),
                    finish_time: step.finished_at.map(timestamp),
                    next_attempt_time: step.next_attempt_at.map(timestamp),
                })
                .collect(),
            create_time: Some(timestamp(purge.created_at)),
            finish_time: purge.finished_at.map(timestamp),
        }
    }
}

impl From<&Export> for proto::Export {
    fn from(export: &Export) -> Self {
        let archive = export.archive.as_ref();
        Self {
            export_id: export.id.to_string(),
            tenant_id: export.tenant_id.to_string(),
            state: match export.state {
                ExportState::Running => proto::ExportState::Running,
                ExportState::Succeeded => proto::ExportState::Succeeded,
                ExportState::Failed => proto::ExportState::Failed,
            }
            .into(),
            requested_by: export.requested_by.clone(),
            attempts: i32::try_from(export.attempts).unwrap_or(i32::MAX),
            last_error: export.last_error.as_ref().map(step_error),
            create_time: Some(timestamp(export.created_at)),
            finish_time: export.finished_at.map(timestamp),
            expire_time: Some(timestamp(export.expires_at)),
            next_attempt_time: export.next_attempt_at.map(timestamp),
            size: archive.map_or(0, |a| i64::try_from(a.size).unwrap_or(i64::MAX)),
            sha256: archive.map(|a| a.sha256.clone()).unwrap_or_default(),
            files: archive.map_or(0, |a| i32::try_from(a.files).unwrap_or(i32::MAX)),
            files_written: i32::try_from(export.progress.files).unwrap_or(i32::MAX),
            bytes_written: i64::try_from(export.progress.bytes).unwrap_or(i64::MAX),
        }
    }
}

fn purge_step_kind(kind: PurgeStepKind) -> proto::PurgeStepKind {
    match kind {
        PurgeStepKind::Database => proto::PurgeStepKind::Database,
        PurgeStepKind::Dns => proto::PurgeStepKind::Dns,
        PurgeStepKind::Billing => proto::PurgeStepKind::Billing,
        PurgeStepKind::ApiKeys => proto::PurgeStepKind::ApiKeys,
        PurgeStepKind::Idempotency => proto::PurgeStepKind::Idempotency,
        PurgeStepKind::Exports => proto::PurgeStepKind::Exports,
        PurgeStepKind::DataKey => proto::PurgeStepKind::DataKey,
        PurgeStepKind::Tombstone => proto::PurgeStepKind::Tombstone,
    }
}

impl From<&ApiKey> for proto::ApiKey {
    fn from(key: &ApiKey) -> Self {
        Self {
            key_id: key.id.to_string(),
            tenant_id: key.tenant_id.to_string(),
            display_name: key.display_name.clone(),
            scopes: key.scopes.clone(),
            create_time: Some(timestamp(key.created_at)),
            expire_time: key.expires_at.map(timestamp),
            revoke_time: key.revoked_at.map(timestamp),
            last_used_time: key.last_used_at.map(timestamp),
        }
    }
}

/// A protobuf timestamp as a domain time; `field` names it in errors.
///
/// # Errors
/// [`Error::InvalidArgument`] for a timestamp outside chrono's range or with bad nanos.
pub fn time(value: &Timestamp, field: &str) -> Result<DateTime<Utc>, Error> {
    use chrono::Datelike as _;
    u32::try_from(value.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(value.seconds, nanos))
        .filter(|t| (1..=9999).contains(&t.year()))
        .ok_or_else(|| Error::invalid(field, "is not a valid timestamp"))
}

impl From<&AuditRecord> for proto::AuditRecord {
    fn from(record: &AuditRecord) -> Self {
        Self {
            audit_id: record.id.to_string(),
            principal: record.principal.clone(),
            method: record.method.clone(),
            tenant_id: record.tenant_id.map(|t| t.to_string()).unwrap_or_default(),
            code: record.code.clone(),
            time: Some(timestamp(record.at)),
            request_id: record.request_id.clone(),
        }
    }
}

impl From<&DeadLetter> for proto::DeadLetter {
    fn from(dead: &DeadLetter) -> Self {
        let id = |id: Option<uuid::Uuid>| id.map(|id| id.to_string()).unwrap_or_default();
        Self {
            event_id: dead.event_id.0.to_string(),
            tenant_id: id(dead.tenant_id),
            rollout_id: id(dead.rollout_id),
            event_type: dead.event_type.clone(),
            occur_time: Some(timestamp(dead.occurred_at)),
            delivery_attempts: i32::try_from(dead.delivery_attempts).unwrap_or(i32::MAX),
            last_error: dead.last_error.clone(),
            dead_letter_time: Some(timestamp(dead.dead_lettered_at)),
        }
    }
}

impl From<&Plan> for proto::Plan {
    fn from(plan: &Plan) -> Self {
        let quota = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        Self {
            plan_id: plan.id.to_string(),
            display_name: plan.display_name.clone(),
            quotas: Some(proto::PlanQuotas {
                max_api_keys: quota(plan.quotas.max_api_keys),
                requests_per_second: quota(plan.quotas.requests_per_second),
                max_users: quota(plan.quotas.max_users),
            }),
        }
    }
}

/// The payload of an event.
#[expect(
    clippy::too_many_lines,
    reason = "one arm per event kind, field for field: a flat table reads best"
)]
fn payload(kind: &EventKind) -> proto::tenant_event::Payload {
    use proto::tenant_event::Payload;
    match kind {
        EventKind::TenantCreated {
            slug,
            display_name,
            plan_id,
            labels,
        } => Payload::TenantCreated(proto::TenantCreated {
            slug: slug.clone(),
            display_name: display_name.clone(),
            plan_id: plan_id.clone(),
            labels: labels.clone(),
        }),
        EventKind::TenantUpdated {
            changed_fields,
            plan_id,
            display_name,
            labels,
        } => Payload::TenantUpdated(proto::TenantUpdated {
            changed_fields: changed_fields.clone(),
            plan_id: plan_id.clone(),
            display_name: display_name.clone(),
            labels: labels.clone(),
        }),
        EventKind::TenantActivated { plan_id } => {
            Payload::TenantActivated(proto::TenantActivated {
                plan_id: plan_id.clone(),
            })
        }
        EventKind::TenantSuspended { reason } => Payload::TenantSuspended(proto::TenantSuspended {
            reason: reason.clone(),
        }),
        EventKind::TenantResumed => Payload::TenantResumed(proto::TenantResumed {}),
        EventKind::TenantDeleted { purge_at } => Payload::TenantDeleted(proto::TenantDeleted {
            purge_time: Some(timestamp(*purge_at)),
        }),
        EventKind::TenantUndeleted { status } => Payload::TenantUndeleted(proto::TenantUndeleted {
            status: status_to_proto(*status).into(),
        }),
        EventKind::TenantLegalHoldSet { reason } => {
            Payload::TenantLegalHoldSet(proto::TenantLegalHoldSet {
                reason: reason.clone(),
            })
        }
        EventKind::TenantLegalHoldReleased { reason, purge_at } => {
            Payload::TenantLegalHoldReleased(proto::TenantLegalHoldReleased {
                reason: reason.clone(),
                purge_time: purge_at.map(timestamp),
            })
        }
        EventKind::TenantPurgeStarted { forced } => {
            Payload::TenantPurgeStarted(proto::TenantPurgeStarted { forced: *forced })
        }
        EventKind::TenantPurged => Payload::TenantPurged(proto::TenantPurged {}),
        EventKind::ApiKeyCreated { key_id, scopes } => {
            Payload::ApiKeyCreated(proto::ApiKeyCreated {
                key_id: key_id.clone(),
                scopes: scopes.clone(),
            })
        }
        EventKind::ApiKeyRevoked { key_id } => Payload::ApiKeyRevoked(proto::ApiKeyRevoked {
            key_id: key_id.clone(),
        }),
        EventKind::ProvisioningStepChanged {
            run_id,
            step,
            state,
            attempt,
            error,
        } => Payload::ProvisioningStepChanged(proto::ProvisioningStepChanged {
            run_id: run_id.clone(),
            step: step_kind(*step).into(),
            state: step_state(*state).into(),
            attempt: count(*attempt),
            error: error.as_ref().map(step_error),
        }),
        EventKind::ProvisioningFailed {
            run_id,
            failed_step,
            error,
        } => Payload::ProvisioningFailed(proto::ProvisioningFailed {
            run_id: run_id.clone(),
            failed_step: step_kind(*failed_step).into(),
            error: Some(step_error(error)),
        }),
        EventKind::ProvisioningCancelled { run_id, reason } => {
            Payload::ProvisioningCancelled(proto::ProvisioningCancelled {
                run_id: run_id.clone(),
                reason: reason.clone(),
            })
        }
        EventKind::WelcomeNotificationRequested { slug, display_name } => {
            Payload::WelcomeNotificationRequested(proto::WelcomeNotificationRequested {
                slug: slug.clone(),
                display_name: display_name.clone(),
            })
        }
        EventKind::TenantSchemaMigrated { .. } => {
            Payload::TenantSchemaMigrated(tenant_schema_migrated(kind).unwrap_or_default())
        }
        EventKind::RolloutStateChanged { .. } => {
            Payload::RolloutStateChanged(rollout_state_changed(kind).unwrap_or_default())
        }
    }
}

impl From<&Event> for proto::TenantEvent {
    fn from(event: &Event) -> Self {
        let payload = payload(&event.kind);
        let rollout_id = match event.subject {
            Subject::Rollout(rollout) => rollout.to_string(),
            Subject::Tenant(_) => String::new(),
        };
        Self {
            event_id: event.id.0.to_string(),
            tenant_id: event
                .subject
                .tenant()
                .map(|t| t.to_string())
                .unwrap_or_default(),
            rollout_id,
            occur_time: Some(timestamp(event.occurred_at)),
            payload: Some(payload),
        }
    }
}

/// The payload of a `TenantSchemaMigrated` event.
fn tenant_schema_migrated(kind: &EventKind) -> Option<proto::TenantSchemaMigrated> {
    let EventKind::TenantSchemaMigrated {
        rollout_id,
        from_version,
        to_version,
        duration_ms,
    } = kind
    else {
        return None;
    };
    Some(proto::TenantSchemaMigrated {
        rollout_id: rollout_id.clone(),
        from_version: count(*from_version),
        to_version: count(*to_version),
        duration_ms: i64::try_from(*duration_ms).unwrap_or(i64::MAX),
    })
}

/// The payload of a `RolloutStateChanged` event.
fn rollout_state_changed(kind: &EventKind) -> Option<proto::RolloutStateChanged> {
    let EventKind::RolloutStateChanged {
        rollout_id,
        state,
        target_version,
        reason,
        tenants,
        succeeded,
        failed,
    } = kind
    else {
        return None;
    };
    Some(proto::RolloutStateChanged {
        rollout_id: rollout_id.clone(),
        state: RolloutState::parse(state)
            .map_or(proto::RolloutState::Unspecified, rollout_state)
            .into(),
        target_version: count(*target_version),
        reason: reason.as_ref().map(step_error),
        tenants: wide(*tenants),
        succeeded: wide(*succeeded),
        failed: wide(*failed),
    })
}

/// A count as the API's int64.
pub(crate) fn wide(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A rollout state as the API's enum.
pub(crate) fn rollout_state(state: RolloutState) -> proto::RolloutState {
    match state {
        RolloutState::Running => proto::RolloutState::Running,
        RolloutState::Paused => proto::RolloutState::Paused,
        RolloutState::Succeeded => proto::RolloutState::Succeeded,
        RolloutState::Failed => proto::RolloutState::Failed,
        RolloutState::Cancelled => proto::RolloutState::Cancelled,
    }
}

/// A placement as the API shows it.
pub(crate) fn placement(placement: &Placement) -> proto::TenantPlacement {
    proto::TenantPlacement {
        tenant_database: placement.tenant_database.clone(),
        dedicated_database: placement.dedicated.clone().unwrap_or_default(),
        schema: placement.schema.clone(),
    }
}

pub(crate) fn count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn step_kind(kind: StepKind) -> proto::StepKind {
    match kind {
        StepKind::Database => proto::StepKind::Database,
        StepKind::Dns => proto::StepKind::Dns,
        StepKind::Credentials => proto::StepKind::Credentials,
        StepKind::Billing => proto::StepKind::Billing,
        StepKind::Notification => proto::StepKind::Notification,
    }
}

fn step_state(state: StepState) -> proto::StepState {
    match state {
        StepState::Pending => proto::StepState::Pending,
        StepState::Running => proto::StepState::Running,
        StepState::Succeeded => proto::StepState::Succeeded,
        StepState::Failed => proto::StepState::Failed,
        StepState::Cancelled => proto::StepState::Cancelled,
        StepState::Compensated => proto::StepState::Compensated,
    }
}

fn run_state(state: RunState) -> proto::RunState {
    match state {
        RunState::Running => proto::RunState::Running,
        RunState::Succeeded => proto::RunState::Succeeded,
        RunState::Failed => proto::RunState::Failed,
        RunState::Cancelled => proto::RunState::Cancelled,
    }
}

pub(crate) fn step_error(error: &StepError) -> proto::StepError {
    proto::StepError {
        reason: error.reason.clone(),
        message: error.message.clone(),
    }
}

impl From<&RunSummary> for proto::ProvisioningSummary {
    fn from(summary: &RunSummary) -> Self {
        Self {
            run_id: summary.run_id.to_string(),
            state: run_state(summary.state).into(),
            current_step: summary
                .current_step
                .map_or(proto::StepKind::Unspecified, step_kind)
                .into(),
            completed_steps: count(summary.completed_steps),
            total_steps: count(summary.total_steps),
        }
    }
}

impl From<&Step> for proto::ProvisioningStep {
    fn from(step: &Step) -> Self {
        Self {
            kind: step_kind(step.kind).into(),
            state: step_state(step.state).into(),
            attempts: count(step.attempts),
            last_error: step.last_error.as_ref().map(step_error),
            start_time: step.started_at.map(timestamp),
            finish_time: step.finished_at.map(timestamp),
            next_attempt_time: step
                .next_attempt_at
                .filter(|_| step.state == StepState::Pending)
                .map(timestamp),
        }
    }
}

impl From<&ProvisioningRun> for proto::ProvisioningRun {
    fn from(run: &ProvisioningRun) -> Self {
        Self {
            run_id: run.id.to_string(),
            tenant_id: run.tenant_id.to_string(),
            state: run_state(run.state).into(),
            steps: run
                .steps
                .iter()
                .map(proto::ProvisioningStep::from)
                .collect(),
            create_time: Some(timestamp(run.created_at)),
            finish_time: run.finished_at.map(timestamp),
            deadline: Some(timestamp(run.deadline)),
            error: run.error.as_ref().map(step_error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_round_trips_through_json() {
        let json = serde_json::json!({"region": "eu", "seats": 10.0, "sso": true, "tags": ["a", null], "nested": {"x": 1.5}});
        let Json::Object(object) = json else {
            unreachable!()
        };
        let back = struct_to_json(json_to_struct(&object), "tenant.config").unwrap();
        assert_eq!(back, object);
    }

    #[test]
    fn non_finite_numbers_and_deep_nesting_are_invalid() {
        let nan = Struct {
            fields: [(
                "x".to_owned(),
                Value {
                    kind: Some(Kind::NumberValue(f64::NAN)),
                },
            )]
            .into(),
        };
        let err = struct_to_json(nan, "tenant.config").unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { violations: v, .. } if v[0].field == "tenant.config")
        );

        let mut deep = Value {
            kind: Some(Kind::BoolValue(true)),
        };
        for _ in 0..40 {
            deep = Value {
                kind: Some(Kind::StructValue(Struct {
                    fields: [("n".to_owned(), deep)].into(),
                })),
            };
        }
        let root = Struct {
            fields: [("root".to_owned(), deep)].into(),
        };
        assert!(struct_to_json(root, "tenant.config").is_err());
    }

    #[test]
    fn unknown_status_numbers_are_invalid() {
        assert_eq!(status_filter(0, "status").unwrap(), None);
        assert_eq!(
            status_filter(2, "status").unwrap(),
            Some(TenantStatus::Active)
        );
        assert!(status_filter(99, "status").is_err());
    }
}

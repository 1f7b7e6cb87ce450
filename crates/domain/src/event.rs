//! Lifecycle events: written in the same unit of work as the change they describe (the
//! transactional outbox), listed over gRPC and relayed to Kafka.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::provisioning::{StepError, StepKind, StepState};
use crate::tenant_schema::RolloutId;
use crate::{TenantId, TenantStatus};

/// An event's id: a UUIDv7, stable across redeliveries (consumers de-duplicate on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(pub Uuid);

/// What an event is about: one tenant, or one rollout of the tenant schema (a change of
/// the fleet, not of a tenant). Events of one subject are published in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    /// A tenant.
    Tenant(TenantId),
    /// A rollout.
    Rollout(RolloutId),
}

impl Subject {
    /// The subject's id (the Kafka key, the order relays keep).
    pub fn id(&self) -> Uuid {
        match self {
            Self::Tenant(tenant) => tenant.as_uuid(),
            Self::Rollout(rollout) => rollout.0,
        }
    }

    /// The tenant, for a tenant's event.
    pub fn tenant(&self) -> Option<TenantId> {
        match self {
            Self::Tenant(tenant) => Some(*tenant),
            Self::Rollout(_) => None,
        }
    }
}

impl From<TenantId> for Subject {
    fn from(tenant: TenantId) -> Self {
        Self::Tenant(tenant)
    }
}

/// One lifecycle event of a tenant (or of a rollout).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Id, time-ordered.
    pub id: EventId,
    /// What it is about.
    pub subject: Subject,
    /// When the change happened.
    pub occurred_at: DateTime<Utc>,
    /// What happened. Never carries an email address or a secret.
    pub kind: EventKind,
}

/// What happened, with the facts a consumer needs. Its serde form (internally tagged by
/// `type`) is how stores keep events; renaming a variant or field is a data migration.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A tenant was created.
    TenantCreated {
        /// Slug.
        slug: String,
        /// Display name.
        display_name: String,
        /// Plan.
        plan_id: String,
        /// Labels.
        labels: BTreeMap<String, String>,
    },
    /// Descriptive fields changed.
    TenantUpdated {
        /// Paths of the fields that changed (`display_name`, `labels`, ...).
        changed_fields: Vec<String>,
        /// Plan after the change.
        plan_id: String,
        /// Display name after the change.
        display_name: String,
        /// Labels after the change.
        labels: BTreeMap<String, String>,
    },
    /// Provisioning finished: the tenant is ACTIVE.
    TenantActivated {
        /// Plan.
        plan_id: String,
    },
    /// The tenant was suspended.
    TenantSuspended {
        /// Why.
        reason: String,
    },
    /// The tenant was resumed.
    TenantResumed,
    /// The tenant was soft-deleted.
    TenantDeleted {
        /// When it becomes purgeable.
        purge_at: DateTime<Utc>,
    },
    /// The tenant was restored.
    TenantUndeleted {
        /// The status it returned to.
        status: TenantStatus,
    },
    /// The tenant was put under legal hold (or its hold's reason changed).
    TenantLegalHoldSet {
        /// Why.
        reason: String,
    },
    /// The tenant's legal hold was released.
    TenantLegalHoldReleased {
        /// Why.
        reason: String,
        /// A soft-deleted tenant's purge time after the release.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        purge_at: Option<DateTime<Utc>>,
    },
    /// The deleted tenant's purge started (status PURGING): no way back from here.
    TenantPurgeStarted {
        /// Whether it was forced before the tenant's purge time.
        forced: bool,
    },
    /// The purge finished: only the tenant's tombstone is left.
    TenantPurged,
    /// An API key was created.
    ApiKeyCreated {
        /// The key's id.
        key_id: String,
        /// Its scopes.
        scopes: Vec<String>,
    },
    /// An API key was revoked.
    ApiKeyRevoked {
        /// The key's id.
        key_id: String,
    },
    /// A provisioning step changed state.
    ProvisioningStepChanged {
        /// The run.
        run_id: String,
        /// The step.
        step: StepKind,
        /// Its new state.
        state: StepState,
        /// The attempt number.
        attempt: u32,
        /// The failure, when an attempt failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<StepError>,
    },
    /// A provisioning run failed: the dead letter, with the cause.
    ProvisioningFailed {
        /// The run.
        run_id: String,
        /// The step that exhausted its attempts.
        failed_step: StepKind,
        /// The cause.
        error: StepError,
    },
    /// A provisioning run was cancelled (on request or by its deadline).
    ProvisioningCancelled {
        /// The run.
        run_id: String,
        /// Why.
        reason: String,
    },
    /// A mailer should send the welcome message. Carries no address.
    WelcomeNotificationRequested {
        /// The tenant's slug.
        slug: String,
        /// Its display name.
        display_name: String,
    },
    /// The tenant's schema changed version: made by provisioning or migrated by a rollout.
    TenantSchemaMigrated {
        /// The rollout, when one migrated it (empty: provisioning made it).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        rollout_id: String,
        /// The version before (0: no schema).
        from_version: u32,
        /// The version now.
        to_version: u32,
        /// How long the migration took, in milliseconds.
        duration_ms: u64,
    },
    /// A rollout started, paused, resumed, or ended (subject: the rollout).
    RolloutStateChanged {
        /// The rollout.
        rollout_id: String,
        /// Its new state (`RUNNING`, `PAUSED`, `SUCCEEDED`, `FAILED`, `CANCELLED`).
        state: String,
        /// The version it brings tenants to.
        target_version: u32,
        /// Why it paused, failed or was cancelled.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<StepError>,
        /// Its tenants.
        tenants: u64,
        /// Those at the target so far.
        succeeded: u64,
        /// Those that failed so far.
        failed: u64,
    },
}

impl EventKind {
    /// Every event type this version knows, as [`EventKind::type_name`] names them.
    pub const TYPE_NAMES: [&'static str; 19] = [
        "tenant.v1.TenantCreated",
        "tenant.v1.TenantUpdated",
        "tenant.v1.TenantActivated",
        "tenant.v1.TenantSuspended",
        "tenant.v1.TenantResumed",
        "tenant.v1.TenantDeleted",
        "tenant.v1.TenantUndeleted",
        "tenant.v1.TenantLegalHoldSet",
        "tenant.v1.TenantLegalHoldReleased",
        "tenant.v1.TenantPurgeStarted",
        "tenant.v1.TenantPurged",
        "tenant.v1.ApiKeyCreated",
        "tenant.v1.ApiKeyRevoked",
        "tenant.v1.ProvisioningStepChanged",
        "tenant.v1.ProvisioningFailed",
        "tenant.v1.ProvisioningCancelled",
        "tenant.v1.WelcomeNotificationRequested",
        "tenant.v1.TenantSchemaMigrated",
        "tenant.v1.RolloutStateChanged",
    ];

    /// Whether `name` is an event type of this version (another version's events may
    /// carry types this one does not know).
    pub fn is_known_type(name: &str) -> bool {
        Self::TYPE_NAMES.contains(&name)
    }

    /// The event type, as used for CloudEvents `ce_type` (`tenant.v1.TenantCreated`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::TenantCreated { .. } => "tenant.v1.TenantCreated",
            Self::TenantUpdated { .. } => "tenant.v1.TenantUpdated",
            Self::TenantActivated { .. } => "tenant.v1.TenantActivated",
            Self::TenantSuspended { .. } => "tenant.v1.TenantSuspended",
            Self::TenantResumed => "tenant.v1.TenantResumed",
            Self::TenantDeleted { .. } => "tenant.v1.TenantDeleted",
            Self::TenantUndeleted { .. } => "tenant.v1.TenantUndeleted",
            Self::TenantLegalHoldSet { .. } => "tenant.v1.TenantLegalHoldSet",
            Self::TenantLegalHoldReleased { .. } => "tenant.v1.TenantLegalHoldReleased",
            Self::TenantPurgeStarted { .. } => "tenant.v1.TenantPurgeStarted",
            Self::TenantPurged => "tenant.v1.TenantPurged",
            Self::ApiKeyCreated { .. } => "tenant.v1.ApiKeyCreated",
            Self::ApiKeyRevoked { .. } => "tenant.v1.ApiKeyRevoked",
            Self::ProvisioningStepChanged { .. } => "tenant.v1.ProvisioningStepChanged",
            Self::ProvisioningFailed { .. } => "tenant.v1.ProvisioningFailed",
            Self::ProvisioningCancelled { .. } => "tenant.v1.ProvisioningCancelled",
            Self::WelcomeNotificationRequested { .. } => "tenant.v1.WelcomeNotificationRequested",
            Self::TenantSchemaMigrated { .. } => "tenant.v1.TenantSchemaMigrated",
            Self::RolloutStateChanged { .. } => "tenant.v1.RolloutStateChanged",
        }
    }
}

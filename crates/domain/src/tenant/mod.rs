//! The Tenant aggregate: its identity, descriptive fields and lifecycle. Every state change
//! goes through a method that checks the transition, bumps the version (the etag) and
//! stamps the update time.

mod fields;
mod id;
mod slug;
mod status;

use chrono::{DateTime, Duration, Utc};

pub use fields::{ContactEmail, DisplayName, Labels, TenantConfig};
pub use id::TenantId;
pub use slug::Slug;
pub use status::TenantStatus;

use crate::provisioning::RunSummary;
use crate::tenant_schema::Placement;
use crate::{Error, PlanId, Reason};

/// The validated fields of a tenant to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTenant {
    /// The unique DNS label.
    pub slug: Slug,
    /// Human-readable name.
    pub display_name: DisplayName,
    /// The plan (checked to exist by the use case).
    pub plan_id: PlanId,
    /// Contact address.
    pub contact_email: ContactEmail,
    /// Free-form labels.
    pub labels: Labels,
    /// Free-form configuration.
    pub config: TenantConfig,
}

/// Every field of a tenant, for adapters that store and restore it. Building a [`Tenant`]
/// from parts trusts the store: use cases create tenants with [`Tenant::create`].
#[derive(Debug, Clone, PartialEq)]
pub struct TenantParts {
    /// Id.
    pub id: TenantId,
    /// Slug.
    pub slug: Slug,
    /// Display name.
    pub display_name: DisplayName,
    /// Plan.
    pub plan_id: PlanId,
    /// Lifecycle status.
    pub status: TenantStatus,
    /// Why the tenant is in its status (may be empty).
    pub status_reason: String,
    /// Contact address; `None` once purged (a tombstone keeps no address).
    pub contact_email: Option<ContactEmail>,
    /// Labels.
    pub labels: Labels,
    /// Configuration.
    pub config: TenantConfig,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Soft-deletion time.
    pub deleted_at: Option<DateTime<Utc>>,
    /// Purge time of a soft-deleted tenant.
    pub purge_at: Option<DateTime<Utc>>,
    /// Status to restore on undelete.
    pub status_before_delete: Option<TenantStatus>,
    /// When its purge finished (it is a tombstone since).
    pub purged_at: Option<DateTime<Utc>>,
    /// Optimistic-concurrency version, 1 on creation, +1 per change.
    pub version: u64,
    /// The latest provisioning run, as stores read it (output only: never written back
    /// through the tenant).
    pub provisioning: Option<RunSummary>,
    /// Where its data lives, decided when it is created (`None`: created before placements
    /// were recorded, or by a replica that does not record them: the default placement).
    pub placement: Option<Placement>,
    /// Its legal hold, while it has one.
    pub legal_hold: Option<LegalHold>,
}

/// A legal hold: while it lasts, the tenant is never purged and its deletion retention
/// does not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegalHold {
    /// Why (a case or ticket reference, say).
    pub reason: String,
    /// When it was set.
    pub since: DateTime<Utc>,
}

/// A tenant. Fields are read through accessors; changes go through lifecycle methods.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant(TenantParts);

impl Tenant {
    /// A new tenant in PROVISIONING, version 1.
    pub fn create(id: TenantId, new: NewTenant, now: DateTime<Utc>) -> Self {
        Self(TenantParts {
            id,
            slug: new.slug,
            display_name: new.display_name,
            plan_id: new.plan_id,
            status: TenantStatus::Provisioning,
            status_reason: String::new(),
            contact_email: Some(new.contact_email),
            labels: new.labels,
            config: new.config,
            created_at: now,
            updated_at: now,
            deleted_at: None,
            purge_at: None,
            status_before_delete: None,
            purged_at: None,
            version: 1,
            provisioning: None,
            placement: None,
            legal_hold: None,
        })
    }

    /// The new tenant placed at `placement` (decided once, when it is created).
    #[must_use]
    pub fn placed(mut self, placement: Placement) -> Self {
        self.0.placement = Some(placement);
        self
    }

    /// Where its data lives, if recorded.
    pub fn placement(&self) -> Option<&Placement> {
        self.0.placement.as_ref()
    }

    /// The same tenant showing `summary` as its provisioning run.
    #[must_use]
    pub fn with_provisioning(mut self, summary: Option<RunSummary>) -> Self {
        self.0.provisioning = summary;
        self
    }

    /// The latest provisioning run's summary, if the store read it.
    pub fn provisioning(&self) -> Option<&RunSummary> {
        self.0.provisioning.as_ref()
    }

    /// Rebuilds a stored tenant.
    pub fn from_parts(parts: TenantParts) -> Self {
        Self(parts)
    }

    /// All fields, by reference.
    pub fn parts(&self) -> &TenantParts {
        &self.0
    }

    /// Id.
    pub fn id(&self) -> TenantId {
        self.0.id
    }
    /// Slug.
    pub fn slug(&self) -> &Slug {
        &self.0.slug
    }
    /// Display name.
    pub fn display_name(&self) -> &DisplayName {
        &self.0.display_name
    }
    /// Plan.
    pub fn plan_id(&self) -> &PlanId {
        &self.0.plan_id
    }
    /// Status.
    pub fn status(&self) -> TenantStatus {
        self.0.status
    }
    /// Why the tenant is in its status.
    pub fn status_reason(&self) -> &str {
        &self.0.status_reason
    }
    /// Contact address; `None` for a tombstone.
    pub fn contact_email(&self) -> Option<&ContactEmail> {
        self.0.contact_email.as_ref()
    }
    /// Labels.
    pub fn labels(&self) -> &Labels {
        &self.0.labels
    }
    /// Configuration.
    pub fn config(&self) -> &TenantConfig {
        &self.0.config
    }
    /// Creation time.
    pub fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// Last change.
    pub fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// Soft-deletion time.
    pub fn deleted_at(&self) -> Option<DateTime<Utc>> {
        self.0.deleted_at
    }
    /// Purge time.
    pub fn purge_at(&self) -> Option<DateTime<Utc>> {
        self.0.purge_at
    }
    /// When its purge finished.
    pub fn purged_at(&self) -> Option<DateTime<Utc>> {
        self.0.purged_at
    }

    /// The legal hold, while there is one.
    pub fn legal_hold(&self) -> Option<&LegalHold> {
        self.0.legal_hold.as_ref()
    }
    /// Version (1, 2, ...).
    pub fn version(&self) -> u64 {
        self.0.version
    }

    /// The opaque etag for this version.
    pub fn etag(&self) -> String {
        format!("v{}", self.0.version)
    }

    /// Checks a caller-supplied etag; an empty one means "no check".
    ///
    /// # Errors
    /// [`Error::Aborted`] when `etag` is set and is not this version's.
    pub fn check_etag(&self, etag: &str) -> Result<(), Error> {
        if etag.is_empty() || etag == self.etag() {
            Ok(())
        } else {
            Err(Error::aborted(
                Reason::EtagMismatch,
                format!(
                    "etag {etag:?} is stale: the tenant is at {:?}; read it again",
                    self.etag()
                ),
            ))
        }
    }

    /// Changes the descriptive fields given as `Some`. Not allowed on a deleted tenant.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] when the tenant is DELETED.
    pub fn update(&mut self, change: TenantChange, now: DateTime<Utc>) -> Result<(), Error> {
        self.ensure_updatable()?;
        let parts = &mut self.0;
        if let Some(v) = change.display_name {
            parts.display_name = v;
        }
        if let Some(v) = change.plan_id {
            parts.plan_id = v;
        }
        if let Some(v) = change.contact_email {
            parts.contact_email = Some(v);
        }
        if let Some(v) = change.labels {
            parts.labels = v;
        }
        if let Some(v) = change.config {
            parts.config = v;
        }
        self.touch(now);
        Ok(())
    }

    /// Whether descriptive fields may change: not on a deleted tenant.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] when the tenant is DELETED.
    pub fn ensure_updatable(&self) -> Result<(), Error> {
        self.ensure_not_purge()?;
        if self.0.status == TenantStatus::Deleted {
            Err(Error::precondition(
                Reason::TenantDeleted,
                "a deleted tenant cannot be updated; undelete it first",
            ))
        } else {
            Ok(())
        }
    }

    /// Whether anything but its purge may change the tenant: not once its purge started.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`]: `PURGE_IN_PROGRESS` while PURGING, `TENANT_PURGED`
    /// once PURGED.
    pub fn ensure_not_purge(&self) -> Result<(), Error> {
        match self.0.status {
            TenantStatus::Purging => Err(Error::precondition(
                Reason::PurgeInProgress,
                "the tenant is being purged; it can no longer be changed or restored",
            )),
            TenantStatus::Purged => Err(Error::precondition(
                Reason::TenantPurged,
                "the tenant was purged; only its tombstone is left",
            )),
            _ => Ok(()),
        }
    }

    /// PROVISIONING -> ACTIVE.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] from any other status.
    pub fn activate(&mut self, now: DateTime<Utc>) -> Result<(), Error> {
        self.require(TenantStatus::Provisioning, "activated")?;
        self.transition(TenantStatus::Active, String::new(), now)
    }

    /// Records how provisioning ended: PROVISIONING -> `outcome` (ACTIVE, FAILED or
    /// CANCELLED) with `reason`. A tenant deleted while its run went on keeps DELETED, and
    /// `outcome` becomes the status an undelete restores. Returns whether anything changed
    /// (nothing does for a tenant in any other status).
    ///
    /// # Errors
    /// [`Error::Internal`] when `outcome` is not an end of provisioning.
    pub fn settle_provisioning(
        &mut self,
        outcome: TenantStatus,
        reason: String,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        if !matches!(
            outcome,
            TenantStatus::Active | TenantStatus::Failed | TenantStatus::Cancelled
        ) {
            return Err(Error::Internal(format!(
                "{outcome} is not an outcome of provisioning"
            )));
        }
        match (self.0.status, self.0.status_before_delete) {
            (TenantStatus::Provisioning, _) => {
                self.transition(outcome, reason, now)?;
                Ok(true)
            }
            (TenantStatus::Deleted, Some(TenantStatus::Provisioning)) => {
                self.0.status_before_delete = Some(outcome);
                self.0.status_reason = reason;
                self.touch(now);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// FAILED | CANCELLED -> PROVISIONING, for a retried run.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] from any other status.
    pub fn restart_provisioning(&mut self, now: DateTime<Utc>) -> Result<(), Error> {
        self.transition(TenantStatus::Provisioning, String::new(), now)
    }

    /// ACTIVE -> SUSPENDED, recording why.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] from any other status.
    pub fn suspend(&mut self, reason: String, now: DateTime<Utc>) -> Result<(), Error> {
        self.transition(TenantStatus::Suspended, reason, now)
    }

    /// SUSPENDED -> ACTIVE.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] from any other status.
    pub fn resume(&mut self, now: DateTime<Utc>) -> Result<(), Error> {
        self.require(TenantStatus::Suspended, "resumed")?;
        self.transition(TenantStatus::Active, String::new(), now)
    }

    /// Soft-deletes: DELETED until `now + retention`, then purgeable.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] when already deleted.
    pub fn delete(&mut self, retention: Duration, now: DateTime<Utc>) -> Result<(), Error> {
        let before = self.0.status;
        self.transition(TenantStatus::Deleted, String::new(), now)?;
        self.0.status_before_delete = Some(before);
        self.0.deleted_at = Some(now);
        self.0.purge_at = Some(now + retention);
        Ok(())
    }

    /// Restores a soft-deleted tenant to the status it had before deletion.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] when the tenant is not deleted or its purge time passed
    /// (a held tenant's purge time does not run out).
    pub fn undelete(&mut self, now: DateTime<Utc>) -> Result<TenantStatus, Error> {
        self.ensure_not_purge()?;
        if self.0.status != TenantStatus::Deleted {
            return Err(Error::precondition(
                Reason::InvalidTransition,
                format!("tenant is {}, not DELETED", self.0.status),
            ));
        }
        if self.0.legal_hold.is_none() && self.0.purge_at.is_some_and(|purge| purge <= now) {
            return Err(Error::precondition(
                Reason::PurgeTimePassed,
                "the tenant's purge time has passed; it can no longer be restored",
            ));
        }
        let restored = self
            .0
            .status_before_delete
            .take()
            .unwrap_or(TenantStatus::Active);
        self.0.status = restored;
        self.0.deleted_at = None;
        self.0.purge_at = None;
        self.touch(now);
        Ok(restored)
    }

    /// Puts the tenant under legal hold for `reason` (already held: the reason is replaced,
    /// the hold keeps its start). Any status until its purge starts.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] once the purge started (see [`Self::ensure_not_purge`]).
    pub fn set_legal_hold(&mut self, reason: String, now: DateTime<Utc>) -> Result<(), Error> {
        self.ensure_not_purge()?;
        let since = self.0.legal_hold.as_ref().map_or(now, |hold| hold.since);
        self.0.legal_hold = Some(LegalHold { reason, since });
        self.touch(now);
        Ok(())
    }

    /// DELETED -> PURGING: its purge run starts, and from here nothing restores it.
    /// `force` purges before the purge time.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`]: `PURGE_IN_PROGRESS` or `TENANT_PURGED` when its purge
    /// started already, `INVALID_TRANSITION` when it is not DELETED, `LEGAL_HOLD` while it
    /// is held, `PURGE_TIME_NOT_REACHED` without `force` before its purge time.
    pub fn begin_purge(&mut self, force: bool, now: DateTime<Utc>) -> Result<(), Error> {
        self.ensure_not_purge()?;
        if self.0.status != TenantStatus::Deleted {
            return Err(Error::precondition(
                Reason::InvalidTransition,
                format!(
                    "tenant is {}; only a DELETED tenant can be purged",
                    self.0.status
                ),
            ));
        }
        if self.0.legal_hold.is_some() {
            return Err(Error::precondition(
                Reason::LegalHold,
                "the tenant is under legal hold; release the hold before purging it",
            ));
        }
        if let Some(purge_at) = self.0.purge_at.filter(|at| !force && *at > now) {
            return Err(Error::precondition(
                Reason::PurgeTimeNotReached,
                format!(
                    "the tenant's retention runs until {}; purge it with force to purge it now",
                    purge_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            ));
        }
        self.transition(TenantStatus::Purging, String::new(), now)
    }

    /// PURGING -> PURGED: the tenant becomes its tombstone. Id, slug, plan, placement and
    /// timestamps stay (ids and events stay resolvable, the slug stays reserved); the
    /// address, labels and configuration go, and the display name becomes the slug.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] unless the tenant is PURGING.
    pub fn tombstone(&mut self, now: DateTime<Utc>) -> Result<(), Error> {
        if self.0.status == TenantStatus::Purged {
            self.ensure_not_purge()?;
        }
        self.require(TenantStatus::Purging, "tombstoned")?;
        let parts = &mut self.0;
        parts.display_name = DisplayName::parse(parts.slug.as_str())
            .map_err(|_| Error::Internal("a slug is not a display name".to_owned()))?;
        parts.contact_email = None;
        parts.labels = Labels::default();
        parts.config = TenantConfig::default();
        parts.status_before_delete = None;
        parts.legal_hold = None;
        parts.purged_at = Some(now);
        self.transition(TenantStatus::Purged, String::new(), now)
    }

    /// Releases the legal hold. The retention of a soft-deleted tenant did not run while it
    /// was held: its purge time moves out by the time it was held while deleted.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] (`NO_LEGAL_HOLD`) when the tenant is not held.
    pub fn release_legal_hold(&mut self, now: DateTime<Utc>) -> Result<(), Error> {
        let Some(hold) = self.0.legal_hold.take() else {
            return Err(Error::precondition(
                Reason::NoLegalHold,
                "the tenant has no legal hold to release",
            ));
        };
        if let (Some(purge), Some(deleted)) = (self.0.purge_at, self.0.deleted_at) {
            let held_while_deleted = now - hold.since.max(deleted);
            if held_while_deleted > Duration::zero() {
                self.0.purge_at = Some(purge + held_while_deleted);
            }
        }
        self.touch(now);
        Ok(())
    }

    /// Several operations lead to the same status (activate and resume both reach ACTIVE);
    /// each is only legal from its own starting status.
    fn require(&self, from: TenantStatus, operation: &str) -> Result<(), Error> {
        if self.0.status == from {
            Ok(())
        } else {
            Err(Error::precondition(
                Reason::InvalidTransition,
                format!(
                    "tenant is {}; only a {from} tenant can be {operation}",
                    self.0.status
                ),
            ))
        }
    }

    fn transition(
        &mut self,
        next: TenantStatus,
        reason: String,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        if self.0.status.is_purge() && next != TenantStatus::Purged {
            self.ensure_not_purge()?;
        }
        if !self.0.status.can_become(next) {
            return Err(Error::precondition(
                Reason::InvalidTransition,
                format!("tenant is {}; it cannot become {next}", self.0.status),
            ));
        }
        self.0.status = next;
        self.0.status_reason = reason;
        self.touch(now);
        Ok(())
    }

    fn touch(&mut self, now: DateTime<Utc>) {
        self.0.version += 1;
        self.0.updated_at = now;
    }
}

/// A change to a tenant's descriptive fields: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantChange {
    /// New display name.
    pub display_name: Option<DisplayName>,
    /// New plan.
    pub plan_id: Option<PlanId>,
    /// New contact address.
    pub contact_email: Option<ContactEmail>,
    /// New labels (replacing all).
    pub labels: Option<Labels>,
    /// New configuration (replacing all).
    pub config: Option<TenantConfig>,
}

#[cfg(test)]
mod tests;

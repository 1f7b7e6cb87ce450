//! TenantService use cases: create (idempotent), get, list, update (field mask + etag),
//! soft delete, undelete, suspend, resume. Each change and its events go to the repository
//! in one call, so they commit together.

mod commands;
mod mask;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use tenantd_domain::ports::{
    Clock, IdGenerator, IdempotencyRecord, PlanRepository, TenantQuery, TenantRepository,
};
use tenantd_domain::provisioning::{ProvisioningRun, RunId};
use tenantd_domain::{
    ContactEmail, Error, Event, EventId, EventKind, PlanId, Reason, RepoError, Tenant,
    TenantChange, TenantId, TenantStatus,
};
use tracing::instrument;

pub use commands::{CreateTenant, ListTenants, TenantFields, UpdateTenant};

use crate::provisioning::Signals;
use crate::tenant_schemas::PlacementPolicy;
use crate::{Page, PageRequest};

/// How often a mutation without an etag is retried after losing a race to another writer.
const MAX_ATTEMPTS: usize = 3;

/// How long a create's request id is remembered: a retry within this answers as the
/// first call did.
pub const IDEMPOTENCY_TTL: Duration = Duration::hours(24);

/// Tunables of the tenant lifecycle (their defaults are the server's configuration
/// defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantSettings {
    /// How long a soft-deleted tenant stays restorable.
    pub deletion_retention: Duration,
    /// How long a new tenant's provisioning run may take before it is cancelled.
    pub provisioning_timeout: Duration,
}

/// The tenant use cases.
#[derive(Clone)]
pub struct TenantService {
    tenants: Arc<dyn TenantRepository>,
    plans: Arc<dyn PlanRepository>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    settings: TenantSettings,
    placement: Arc<PlacementPolicy>,
    signals: Signals,
}

impl std::fmt::Debug for TenantService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TenantService {
    /// A service over its ports, placing new tenants' schemas by `placement`.
    pub fn new(
        tenants: Arc<dyn TenantRepository>,
        plans: Arc<dyn PlanRepository>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
        settings: TenantSettings,
        placement: Arc<PlacementPolicy>,
    ) -> Self {
        Self {
            tenants,
            plans,
            clock,
            ids,
            settings,
            placement,
            signals: Signals::default(),
        }
    }

    /// The same service, waking the provisioning workers of `signals` when a tenant is
    /// created.
    #[must_use]
    pub fn with_signals(mut self, signals: Signals) -> Self {
        self.signals = signals;
        self
    }

    /// Creates a tenant in PROVISIONING with its provisioning run, which the engine's
    /// workers then drive (the tenant becomes ACTIVE when every step succeeded). With a
    /// request id, a retry returns the original tenant.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad fields, an unknown plan or a request id reused with
    /// another body; [`Error::AlreadyExists`] for a taken slug; store failures.
    #[instrument(skip_all, fields(slug = %cmd.tenant.slug, request_id = %cmd.request_id))]
    pub async fn create(&self, cmd: CreateTenant) -> Result<Tenant, Error> {
        let new = commands::validate_new(&cmd.tenant).map_err(|v| commands::under("tenant", v))?;
        commands::validate_request_id(&cmd.request_id)?;
        let now = self.clock.now();
        let fingerprint = commands::fingerprint(&new);
        if !cmd.request_id.is_empty()
            && let Some(done) = self.tenants.find_idempotency(&cmd.request_id, now).await?
        {
            return replay(done, &fingerprint);
        }
        self.require_plan(&new.plan_id).await?;

        let id = TenantId::from_uuid(self.ids.new_v7())
            .map_err(|_| Error::Internal("id generator returned a non-v7 UUID".into()))?;
        let run = ProvisioningRun::new(
            RunId(self.ids.new_v7()),
            id,
            now,
            self.settings.provisioning_timeout,
        );
        let placement = self.placement.place(id, &new.plan_id);
        let tenant = Tenant::create(id, new, now)
            .placed(placement)
            .with_provisioning(Some(run.summary()));
        let created = self.event(
            &tenant,
            EventKind::TenantCreated {
                slug: tenant.slug().to_string(),
                display_name: tenant.display_name().as_str().to_owned(),
                plan_id: tenant.plan_id().to_string(),
                labels: tenant.labels().as_map().clone(),
            },
            now,
        );
        let record = (!cmd.request_id.is_empty()).then(|| IdempotencyRecord {
            request_id: cmd.request_id.clone(),
            fingerprint: fingerprint.clone(),
            response: tenant.clone(),
            expires_at: now + IDEMPOTENCY_TTL,
        });
        match self.tenants.create(&tenant, &run, &[created], record).await {
            Ok(()) => {
                tracing::info!(tenant_id = %tenant.id(), run_id = %run.id, "tenant created; provisioning started");
                self.signals.wake();
                Ok(tenant)
            }
            Err(RepoError::IdempotencyKeyTaken) => {
                // A concurrent call with the same request id committed first: answer as it did.
                match self.tenants.find_idempotency(&cmd.request_id, now).await? {
                    Some(done) => replay(done, &fingerprint),
                    None => Err(Error::aborted(
                        Reason::RequestInProgress,
                        "a concurrent request with this request_id did not finish; retry",
                    )),
                }
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Reads a tenant, soft-deleted ones included.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed id; [`Error::NotFound`]; store failures.
    #[instrument(level = "debug", skip_all, fields(tenant_id = %tenant_id))]
    pub async fn get(&self, tenant_id: &str) -> Result<Tenant, Error> {
        let id = TenantId::parse_field(tenant_id, "tenant_id")?;
        self.tenants
            .get(id)
            .await?
            .ok_or_else(|| Error::tenant_not_found(id))
    }

    /// One page of tenants matching the filters, oldest first.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad page size, page token or contact email filter;
    /// store failures.
    #[instrument(level = "debug", skip_all)]
    pub async fn list(&self, cmd: ListTenants) -> Result<Page<Tenant>, Error> {
        let mut violations = Vec::new();
        for (field, text) in [("plan_id", &cmd.plan_id), ("slug_prefix", &cmd.slug_prefix)] {
            violations.extend(commands::filter_text(field, text).err());
        }
        for (key, value) in &cmd.labels {
            violations.extend(commands::filter_text("labels", key).err());
            violations.extend(commands::filter_text("labels", value).err());
        }
        if !violations.is_empty() {
            return Err(Error::invalid_fields(violations));
        }
        let contact_email = if cmd.contact_email.is_empty() {
            None
        } else {
            Some(
                ContactEmail::parse(&cmd.contact_email)
                    .map_err(|v| Error::invalid_fields(vec![v]))?,
            )
        };
        // The fingerprint covers every filter; the email enters it hashed, never in clear.
        let filters = format!(
            "tenants;status={:?};plan={};labels={:?};prefix={};email={};deleted={}",
            cmd.status,
            cmd.plan_id,
            cmd.labels,
            cmd.slug_prefix,
            contact_email
                .as_ref()
                .map(|e| crate::digest::sha256_hex(e.normalized().as_bytes()))
                .unwrap_or_default(),
            cmd.show_deleted,
        );
        let page = PageRequest::parse(cmd.page_size, &cmd.page_token, &filters)?;
        let after = match &page.after {
            None => None,
            Some(key) => Some(TenantId::parse_field(key, "page_token")?),
        };
        let query = TenantQuery {
            after,
            limit: page.fetch_limit(),
            status: cmd.status,
            plan_id: (!cmd.plan_id.is_empty()).then(|| PlanId::new(&cmd.plan_id)),
            labels: cmd.labels,
            slug_prefix: (!cmd.slug_prefix.is_empty()).then_some(cmd.slug_prefix),
            contact_email,
            include_deleted: cmd.show_deleted
                || matches!(
                    cmd.status,
                    Some(TenantStatus::Deleted | TenantStatus::Purging)
                ),
        };
        let fetched = self.tenants.list(&query).await?;
        Ok(page.finish(fetched, &filters, |t| t.id().to_string()))
    }

    /// Changes the masked fields; only fields whose value differs count as changed.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad mask, bad values or an unknown plan;
    /// [`Error::NotFound`]; [`Error::Aborted`] for a stale etag;
    /// [`Error::FailedPrecondition`] on a deleted tenant; store failures.
    #[instrument(skip_all, fields(tenant_id = %cmd.tenant_id))]
    pub async fn update(&self, cmd: UpdateTenant) -> Result<Tenant, Error> {
        TenantId::parse_field(&cmd.tenant_id, "tenant.tenant_id")?;
        let paths = mask::resolve(&cmd.update_mask, &cmd.tenant)?;
        let change = mask::change(&paths, &cmd.tenant)?;
        if let Some(plan) = &change.plan_id {
            self.require_plan(plan).await?;
        }
        self.mutate(&cmd.tenant_id, &cmd.etag, |tenant, now| {
            // Checked before the no-change shortcut: a deleted tenant refuses every update.
            tenant.ensure_updatable()?;
            let (change, changed) = effective(tenant, change.clone());
            if changed.is_empty() {
                return Ok(None);
            }
            tenant.update(change, now)?;
            Ok(Some(EventKind::TenantUpdated {
                changed_fields: changed.into_iter().map(str::to_owned).collect(),
                plan_id: tenant.plan_id().to_string(),
                display_name: tenant.display_name().as_str().to_owned(),
                labels: tenant.labels().as_map().clone(),
            }))
        })
        .await
    }

    /// Soft-deletes a tenant: restorable until now + the retention.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] when already deleted; see [`Self::update`].
    #[instrument(skip_all, fields(tenant_id = %tenant_id))]
    pub async fn delete(&self, tenant_id: &str, etag: &str) -> Result<Tenant, Error> {
        let retention = self.settings.deletion_retention;
        self.mutate(tenant_id, etag, |tenant, now| {
            tenant.delete(retention, now)?;
            Ok(Some(EventKind::TenantDeleted {
                purge_at: now + retention,
            }))
        })
        .await
    }

    /// Restores a soft-deleted tenant to its status before deletion.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] when not deleted or past its purge time.
    #[instrument(skip_all, fields(tenant_id = %tenant_id))]
    pub async fn undelete(&self, tenant_id: &str, etag: &str) -> Result<Tenant, Error> {
        self.mutate(tenant_id, etag, |tenant, now| {
            let status = tenant.undelete(now)?;
            Ok(Some(EventKind::TenantUndeleted { status }))
        })
        .await
    }

    /// Suspends an ACTIVE tenant.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a reason over 500 characters;
    /// [`Error::FailedPrecondition`] unless ACTIVE.
    #[instrument(skip_all, fields(tenant_id = %tenant_id))]
    pub async fn suspend(
        &self,
        tenant_id: &str,
        reason: &str,
        etag: &str,
    ) -> Result<Tenant, Error> {
        let reason = checked_reason(reason, false)?;
        self.mutate(tenant_id, etag, |tenant, now| {
            tenant.suspend(reason.to_owned(), now)?;
            Ok(Some(EventKind::TenantSuspended {
                reason: reason.to_owned(),
            }))
        })
        .await
    }

    /// Puts a tenant under legal hold (or replaces its hold's reason).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty reason or one over 500 characters.
    #[instrument(skip_all, fields(tenant_id = %tenant_id))]
    pub async fn set_legal_hold(
        &self,
        tenant_id: &str,
        reason: &str,
        etag: &str,
    ) -> Result<Tenant, Error> {
        let reason = checked_reason(reason, true)?;
        self.mutate(tenant_id, etag, |tenant, now| {
            tenant.set_legal_hold(reason.to_owned(), now)?;
            Ok(Some(EventKind::TenantLegalHoldSet {
                reason: reason.to_owned(),
            }))
        })
        .await
    }

    /// Releases a tenant's legal hold.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty reason or one over 500 characters;
    /// [`Error::FailedPrecondition`] (`NO_LEGAL_HOLD`) when it is not held.
    #[instrument(skip_all, fields(tenant_id = %tenant_id))]
    pub async fn release_legal_hold(
        &self,
        tenant_id: &str,
        reason: &str,
        etag: &str,
    ) -> Result<Tenant, Error> {
        let reason = checked_reason(reason, true)?;
        self.mutate(tenant_id, etag, |tenant, now| {
            tenant.release_legal_hold(now)?;
            Ok(Some(EventKind::TenantLegalHoldReleased {
                reason: reason.to_owned(),
                purge_at: tenant.purge_at(),
            }))
        })
        .await
    }

    /// Resumes a SUSPENDED tenant.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] unless SUSPENDED.
    #[instrument(skip_all, fields(tenant_id = %tenant_id))]
    pub async fn resume(&self, tenant_id: &str, etag: &str) -> Result<Tenant, Error> {
        self.mutate(tenant_id, etag, |tenant, now| {
            tenant.resume(now)?;
            Ok(Some(EventKind::TenantResumed))
        })
        .await
    }

    /// Read-modify-write with optimistic concurrency. With an etag, a lost race is ABORTED
    /// (the caller's view is stale); without one, the change is re-applied to the fresh
    /// state a few times, so concurrent writers never silently overwrite each other.
    async fn mutate<F>(&self, tenant_id: &str, etag: &str, apply: F) -> Result<Tenant, Error>
    where
        F: Fn(&mut Tenant, DateTime<Utc>) -> Result<Option<EventKind>, Error>,
    {
        let id = TenantId::parse_field(tenant_id, "tenant_id")?;
        let mut attempt = 1;
        loop {
            let mut tenant = self
                .tenants
                .get(id)
                .await?
                .ok_or_else(|| Error::tenant_not_found(id))?;
            tenant.check_etag(etag)?;
            let expected = tenant.version();
            let now = self.clock.now();
            let Some(kind) = apply(&mut tenant, now)? else {
                return Ok(tenant);
            };
            let event = self.event(&tenant, kind, now);
            match self.tenants.update(&tenant, expected, &[event]).await {
                Ok(()) => return Ok(tenant),
                Err(RepoError::VersionConflict) if etag.is_empty() && attempt < MAX_ATTEMPTS => {
                    attempt += 1;
                }
                Err(RepoError::NotFound) => return Err(Error::tenant_not_found(id)),
                Err(err) => return Err(err.into()),
            }
        }
    }

    async fn require_plan(&self, plan_id: &PlanId) -> Result<(), Error> {
        match self.plans.get(plan_id).await? {
            Some(_) => Ok(()),
            None => Err(Error::invalid_because(
                Reason::PlanNotFound,
                "tenant.plan_id",
                "is not a known plan; PlanService.ListPlans lists them",
            )),
        }
    }

    fn event(&self, tenant: &Tenant, kind: EventKind, now: DateTime<Utc>) -> Event {
        Event {
            id: EventId(self.ids.new_v7()),
            subject: tenant.id().into(),
            occurred_at: now,
            kind,
        }
    }
}

/// Answers a retried create from its idempotency record.
fn replay(done: IdempotencyRecord, fingerprint: &str) -> Result<Tenant, Error> {
    if done.fingerprint == fingerprint {
        Ok(done.response)
    } else {
        Err(Error::invalid_because(
            Reason::RequestIdReused,
            "request_id",
            "was already used for a different CreateTenant request",
        ))
    }
}

/// Drops the parts of `change` that equal the current values; returns what is left and
/// the paths that really change.
fn effective(tenant: &Tenant, change: TenantChange) -> (TenantChange, Vec<&'static str>) {
    let mut changed = Vec::new();
    let keep = |differs: bool, path: &'static str, changed: &mut Vec<&'static str>| {
        if differs {
            changed.push(path);
        }
        differs
    };
    let out = TenantChange {
        display_name: change
            .display_name
            .filter(|v| keep(v != tenant.display_name(), "display_name", &mut changed)),
        plan_id: change
            .plan_id
            .filter(|v| keep(v != tenant.plan_id(), "plan_id", &mut changed)),
        contact_email: change.contact_email.filter(|v| {
            keep(
                Some(v) != tenant.contact_email(),
                "contact_email",
                &mut changed,
            )
        }),
        labels: change
            .labels
            .filter(|v| keep(v != tenant.labels(), "labels", &mut changed)),
        config: change
            .config
            .filter(|v| keep(v != tenant.config(), "config", &mut changed)),
    };
    (out, changed)
}

/// An operator's reason (suspension, legal hold), trimmed: at most 500 characters without
/// control characters; not empty when `required`.
fn checked_reason(reason: &str, required: bool) -> Result<&str, Error> {
    let reason = reason.trim();
    if reason.chars().count() > 500 || reason.chars().any(char::is_control) {
        return Err(Error::invalid(
            "reason",
            "must be at most 500 characters without control characters",
        ));
    }
    if required && reason.is_empty() {
        return Err(Error::invalid("reason", "is required"));
    }
    Ok(reason)
}

//! Tenant schemas (the application's migrations in every tenant's schema): where a new
//! tenant's schema goes ([`PlacementPolicy`]), the MigrationService use cases (start,
//! read, watch and steer rollouts; list schemas and their versions), and the
//! [`RolloutEngine`] whose workers migrate tenants one lease at a time (`engine.rs`).
//!
//! A rollout is durable in the store: its tenants, each with a state and a lease, are the
//! queue; any replica's workers take them, so a replica that dies mid-rollout leaves
//! tenants another replica takes over once their leases expire.

mod engine;
#[cfg(test)]
mod tests;
mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tenantd_domain::ports::{
    Clock, IdGenerator, RolloutRepository, SchemaQuery, TenantSchemaRepository,
};
use tenantd_domain::tenant_schema::{
    Canary, DEFAULT_TENANT_DATABASE, ErrorBudget, MigrationLimits, MigrationSet, Placement,
    PlacementRule, Rollout, RolloutCommand, RolloutCounts, RolloutId, RolloutSpec, RolloutTenant,
    TenantRolloutState, TenantSchema,
};
use tenantd_domain::{Error, EventId, FieldViolation, PlanId, Reason, Tenant, TenantId};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tracing::instrument;
use uuid::Uuid;

use crate::pagination::{Page, PageRequest};

pub use engine::RolloutEngine;
pub use watch::RolloutWatch;

/// Most failed tenants a rollout's view lists.
pub const LISTED_FAILURES: usize = 20;

/// Where new tenants' schemas go: a rule per plan, a default rule for the others, and the
/// schema (and dedicated database) names `<prefix><tenant id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementPolicy {
    default: PlacementRule,
    plans: BTreeMap<PlanId, PlacementRule>,
    prefix: String,
}

impl PlacementPolicy {
    /// A policy placing each plan's tenants by `plans`, the rest by `default`, naming
    /// schemas `<prefix><tenant id>`.
    pub fn new(
        default: PlacementRule,
        plans: BTreeMap<PlanId, PlacementRule>,
        prefix: &str,
    ) -> Self {
        Self {
            default,
            plans,
            prefix: prefix.to_owned(),
        }
    }

    /// Where a new tenant of `plan` goes.
    pub fn place(&self, tenant: TenantId, plan: &PlanId) -> Placement {
        self.plans
            .get(plan)
            .unwrap_or(&self.default)
            .place(tenant, &self.prefix)
    }

    /// Where `tenant`'s schema is: as recorded, or — for a tenant made before placements
    /// were recorded — where those were made, a schema in the control plane's database.
    pub fn placement_of(&self, tenant: &Tenant) -> Placement {
        tenant
            .placement()
            .cloned()
            .unwrap_or_else(|| self.legacy(tenant.id()))
    }

    /// The placement of a tenant made before placements were recorded.
    pub fn legacy(&self, tenant: TenantId) -> Placement {
        PlacementRule::Shared(DEFAULT_TENANT_DATABASE.to_owned()).place(tenant, &self.prefix)
    }

    /// The schema-name prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// Tunables of rollouts (their defaults are the server's configuration defaults). The
/// `default_*` fields fill what a StartRollout leaves out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RolloutSettings {
    /// Most tenants this replica migrates at once, whatever a rollout allows.
    pub workers: usize,
    /// How long a claim on a tenant lasts without renewal (renewed every third of it).
    pub lease: Duration,
    /// How often idle workers look for tenants to migrate.
    pub poll_interval: Duration,
    /// Tenants migrated at once over every replica.
    pub default_max_parallel: u32,
    /// Tenants migrated at once by one replica.
    pub default_max_parallel_per_replica: u32,
    /// Failures tolerated before a rollout pauses.
    pub default_error_budget: ErrorBudget,
    /// Each tenant's lock and statement timeouts.
    pub default_limits: MigrationLimits,
}

/// How rollouts show in metrics.
pub trait MigrationObserver: Send + Sync {
    /// A tenant's migration ended with `result` (`succeeded`, `failed`, `skipped`, `lost`).
    fn tenant_migrated(&self, result: &'static str, duration: Duration);
    /// The tenants of the running or paused rollout by state (`None`: no such rollout).
    fn rollout_tenants(&self, counts: Option<&RolloutCounts>);
    /// Tenant schemas below the newest version.
    fn tenants_behind(&self, behind: u64);
    /// A watch began.
    fn watch_opened(&self);
    /// A watch ended.
    fn watch_closed(&self);
}

/// In-process signals: a wake-up for idle rollout workers, a feed of rollouts that changed
/// here (other replicas' changes are seen by polling), and the process stopping.
#[derive(Debug, Clone)]
pub struct RolloutSignals {
    wake: Arc<Notify>,
    changes: broadcast::Sender<RolloutId>,
    stopping: CancellationToken,
}

impl RolloutSignals {
    /// Signals that see the process stop when `stopping` is cancelled.
    pub fn new(stopping: CancellationToken) -> Self {
        Self {
            wake: Arc::new(Notify::new()),
            changes: broadcast::channel(256).0,
            stopping,
        }
    }

    /// Cancelled when the process stops.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// Wakes the idle workers.
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// Resolves when the workers are woken.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Announces that `rollout` changed.
    pub fn changed(&self, rollout: RolloutId) {
        let _no_watchers = self.changes.send(rollout);
    }

    /// A feed of rollouts that changed in this process.
    pub fn subscribe(&self) -> broadcast::Receiver<RolloutId> {
        self.changes.subscribe()
    }
}

/// StartRollout input: zero and `None` mean "the default".
#[derive(Debug, Clone, PartialEq)]
pub struct StartRollout {
    /// The version to bring tenants to (0: the newest).
    pub target_version: u32,
    /// The canary wave.
    pub canary: Canary,
    /// Tenants migrated at once over every replica.
    pub max_parallel: u32,
    /// Tenants migrated at once by one replica.
    pub max_parallel_per_replica: u32,
    /// Failures tolerated before the rollout pauses.
    pub error_budget: Option<ErrorBudget>,
    /// Each tenant's lock timeout, milliseconds.
    pub lock_timeout_ms: Option<u64>,
    /// Each tenant's statement timeout, milliseconds.
    pub statement_timeout_ms: Option<u64>,
}

/// A rollout with the first of its failed tenants.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutView {
    /// The rollout.
    pub rollout: Rollout,
    /// Up to [`LISTED_FAILURES`] failed tenants, in wave and position order.
    pub failures: Vec<RolloutTenant>,
}

/// What the tenant schemas look like: the newest version and how many schemas are at
/// each version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// The newest migration's version.
    pub newest: u32,
    /// Schemas per version, lowest first.
    pub versions: Vec<(u32, u64)>,
}

impl SchemaStatus {
    /// Schemas below the newest version.
    pub fn behind(&self) -> u64 {
        self.versions
            .iter()
            .filter(|(v, _)| *v < self.newest)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Most tenants migrated at once by one rollout.
const MAX_PARALLEL: u32 = 256;

/// The MigrationService use cases.
#[derive(Clone)]
pub struct MigrationService {
    rollouts: Arc<dyn RolloutRepository>,
    schemas: Arc<dyn TenantSchemaRepository>,
    set: Arc<MigrationSet>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    settings: RolloutSettings,
    signals: RolloutSignals,
    observer: Arc<dyn MigrationObserver>,
}

impl std::fmt::Debug for MigrationService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MigrationService")
            .field("newest", &self.set.newest())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl MigrationService {
    /// A service over its ports.
    #[expect(
        clippy::too_many_arguments,
        reason = "a composition root passes every port once"
    )]
    pub fn new(
        rollouts: Arc<dyn RolloutRepository>,
        schemas: Arc<dyn TenantSchemaRepository>,
        set: Arc<MigrationSet>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
        settings: RolloutSettings,
        signals: RolloutSignals,
        observer: Arc<dyn MigrationObserver>,
    ) -> Self {
        Self {
            rollouts,
            schemas,
            set,
            clock,
            ids,
            settings,
            signals,
            observer,
        }
    }

    /// A feed of rollouts that changed in this process (a tenant migrated, a command).
    pub fn changes(&self) -> broadcast::Receiver<RolloutId> {
        self.signals.subscribe()
    }

    /// The migrations this replica has.
    pub fn migrations(&self) -> &MigrationSet {
        &self.set
    }

    /// Starts a rollout to `input.target_version` (the newest by default) of every tenant
    /// schema behind it, as `by`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a target beyond the newest migration, a budget ratio
    /// outside [0, 1] or parallelism out of range; [`Error::FailedPrecondition`]
    /// (`ROLLOUT_IN_PROGRESS`) while another rollout is running or paused; store failures.
    #[instrument(skip_all, fields(target_version = input.target_version))]
    pub async fn start(&self, by: &str, input: StartRollout) -> Result<Rollout, Error> {
        let spec = self.spec(input)?;
        let now = self.clock.now();
        let rollout = Rollout::start(RolloutId(self.ids.new_v7()), spec, by.to_owned(), now);
        let started = self
            .rollouts
            .start(&rollout, EventId(self.ids.new_v7()))
            .await?;
        let all = started.counts.all();
        tracing::info!(rollout_id = %started.id, target_version = started.spec.target_version, tenants = all.total(), canary = started.counts.canary.total(), state = %started.state, by, "tenant schema rollout started");
        self.signals.changed(started.id);
        self.signals.wake();
        self.observer
            .rollout_tenants(started.state.is_active().then_some(&started.counts));
        Ok(started)
    }

    fn spec(&self, input: StartRollout) -> Result<RolloutSpec, Error> {
        let newest = self.set.newest();
        let mut violations = Vec::new();
        let target = if input.target_version == 0 {
            newest
        } else {
            input.target_version
        };
        if target > newest {
            violations.push(FieldViolation::new(
                "target_version",
                format!("is beyond the newest migration, {newest}"),
            ));
        }
        let max_parallel = pick(input.max_parallel, self.settings.default_max_parallel);
        let per_replica = pick(
            input.max_parallel_per_replica,
            self.settings.default_max_parallel_per_replica,
        )
        .min(max_parallel);
        if max_parallel > MAX_PARALLEL {
            violations.push(FieldViolation::new(
                "max_parallel",
                format!("is at most {MAX_PARALLEL}"),
            ));
        }
        let budget = input
            .error_budget
            .unwrap_or(self.settings.default_error_budget);
        if !(0.0..=1.0).contains(&budget.ratio) {
            violations.push(FieldViolation::new(
                "error_budget.ratio",
                "is a share of the tenants, from 0 to 1",
            ));
        }
        if let Canary::Tenants(ids) = &input.canary
            && ids.is_empty()
        {
            violations.push(FieldViolation::new(
                "canary.tenant_ids",
                "names at least one tenant",
            ));
        }
        if let Canary::First(0) = input.canary {
            violations.push(FieldViolation::new("canary.first", "is at least 1"));
        }
        if !violations.is_empty() {
            return Err(Error::invalid_fields(violations));
        }
        let defaults = self.settings.default_limits;
        Ok(RolloutSpec {
            target_version: target,
            canary: input.canary,
            max_parallel,
            max_parallel_per_replica: per_replica,
            error_budget: budget,
            limits: MigrationLimits {
                lock_timeout_ms: input.lock_timeout_ms.unwrap_or(defaults.lock_timeout_ms),
                statement_timeout_ms: input
                    .statement_timeout_ms
                    .unwrap_or(defaults.statement_timeout_ms),
            },
        })
    }

    /// The rollout with its first failed tenants.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed id; [`Error::NotFound`]
    /// (`ROLLOUT_NOT_FOUND`); store failures.
    pub async fn get(&self, rollout_id: &str) -> Result<RolloutView, Error> {
        let id = parse_id(rollout_id)?;
        self.view(id).await
    }

    async fn view(&self, id: RolloutId) -> Result<RolloutView, Error> {
        let rollout =
            self.rollouts.get(id).await?.ok_or_else(|| {
                Error::not_found(Reason::RolloutNotFound, "rollout", id.to_string())
            })?;
        self.view_of(rollout).await
    }

    /// `rollout` with its first failed tenants.
    async fn view_of(&self, rollout: Rollout) -> Result<RolloutView, Error> {
        let id = rollout.id;
        let failures = if rollout.counts.all().failed > 0 {
            self.rollouts
                .tenants(id, Some(TenantRolloutState::Failed), LISTED_FAILURES, None)
                .await?
        } else {
            Vec::new()
        };
        Ok(RolloutView { rollout, failures })
    }

    /// Rollouts, newest first.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad page size or token; store failures.
    pub async fn list(&self, page_size: i32, page_token: &str) -> Result<Page<Rollout>, Error> {
        let filters = "rollouts";
        let page = PageRequest::parse(page_size, page_token, filters)?;
        let after = page.after.as_deref().map(parse_token).transpose()?;
        let fetched = self
            .rollouts
            .list(page.fetch_limit(), after.map(RolloutId))
            .await?;
        Ok(page.finish(fetched, filters, |r| r.id.to_string()))
    }

    /// Applies an operator's command to a rollout.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed id; [`Error::NotFound`]; [`Error::FailedPrecondition`]
    /// (`ROLLOUT_STATE_INVALID`) when its state does not allow the command; store failures.
    #[instrument(skip_all, fields(rollout_id = %rollout_id, command = command.as_str()))]
    pub async fn command(
        &self,
        rollout_id: &str,
        command: RolloutCommand,
        by: &str,
    ) -> Result<RolloutView, Error> {
        let id = parse_id(rollout_id)?;
        let changed = self
            .rollouts
            .command(id, command, self.clock.now(), EventId(self.ids.new_v7()))
            .await
            .map_err(|err| match err {
                tenantd_domain::RepoError::NotFound => {
                    Error::not_found(Reason::RolloutNotFound, "rollout", id.to_string())
                }
                other => other.into(),
            })?;
        tracing::info!(rollout_id = %id, state = %changed.state, by, "tenant schema rollout: {}", command.as_str());
        self.observer
            .rollout_tenants(changed.state.is_active().then_some(&changed.counts));
        // The rollout as the command left it, read before the workers are woken.
        let view = self.view_of(changed).await?;
        self.signals.changed(id);
        self.signals.wake();
        Ok(view)
    }

    /// A page of tenant schemas (optionally only those below `behind_version`), in tenant
    /// creation order.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad page size or token; store failures.
    pub async fn list_schemas(
        &self,
        behind_version: Option<u32>,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<TenantSchema>, Error> {
        let filters = format!("tenant_schemas;behind={behind_version:?}");
        let page = PageRequest::parse(page_size, page_token, &filters)?;
        let after = match page.after.as_deref() {
            None => None,
            Some(key) => Some(TenantId::from_uuid(parse_token(key)?).map_err(|_| bad_token())?),
        };
        let fetched = self
            .schemas
            .list(&SchemaQuery {
                behind_version,
                page_size: page.fetch_limit(),
                after,
            })
            .await?;
        Ok(page.finish(fetched, &filters, |s| s.tenant_id.to_string()))
    }

    /// The newest version and how many schemas are at each version; also refreshes the
    /// gauges.
    ///
    /// # Errors
    /// Store failures.
    pub async fn status(&self) -> Result<SchemaStatus, Error> {
        let status = SchemaStatus {
            newest: self.set.newest(),
            versions: self.schemas.versions().await?,
        };
        self.observer.tenants_behind(status.behind());
        let active = self.rollouts.active().await?;
        self.observer
            .rollout_tenants(active.as_ref().map(|r| &r.counts));
        Ok(status)
    }

    /// What a replica does on start: it never migrates a tenant by itself. It logs how
    /// many schemas are behind its newest migration and, with `auto_rollout`, starts a
    /// rollout with the defaults when some are and none is running or paused. Returns the
    /// status (and the rollout it started).
    ///
    /// # Errors
    /// Store failures (a rollout refused because another started meanwhile is not one).
    pub async fn on_start(
        &self,
        auto_rollout: bool,
    ) -> Result<(SchemaStatus, Option<Rollout>), Error> {
        let status = self.status().await?;
        let behind = status.behind();
        if behind == 0 {
            tracing::info!(
                newest = status.newest,
                "every tenant schema is at the newest migration"
            );
            return Ok((status, None));
        }
        if !auto_rollout {
            tracing::warn!(
                behind,
                newest = status.newest,
                "tenant schemas are behind the newest migration; they stay as they are until a rollout migrates them (StartRollout, or --tenant-migrations-auto-rollout)"
            );
            return Ok((status, None));
        }
        if self.rollouts.active().await?.is_some() {
            tracing::info!(
                behind,
                "tenant schemas are behind; a rollout is already running or paused"
            );
            return Ok((status, None));
        }
        let input = StartRollout {
            target_version: 0,
            canary: Canary::None,
            max_parallel: 0,
            max_parallel_per_replica: 0,
            error_budget: None,
            lock_timeout_ms: None,
            statement_timeout_ms: None,
        };
        match self
            .start("tenantd (--tenant-migrations-auto-rollout)", input)
            .await
        {
            Ok(rollout) => Ok((status, Some(rollout))),
            Err(err) if err.reason() == Reason::RolloutInProgress => Ok((status, None)),
            Err(err) => Err(err),
        }
    }
}

fn pick(value: u32, default: u32) -> u32 {
    if value == 0 { default } else { value }
}

fn parse_id(rollout_id: &str) -> Result<RolloutId, Error> {
    Uuid::parse_str(rollout_id)
        .ok()
        .filter(|u| u.get_version_num() == 7)
        .map(RolloutId)
        .ok_or_else(|| Error::invalid("rollout_id", "is not a rollout id (a UUIDv7)"))
}

fn parse_token(key: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(key).map_err(|_| bad_token())
}

fn bad_token() -> Error {
    Error::invalid_because(
        Reason::PageTokenInvalid,
        "page_token",
        "is malformed; start again without it",
    )
}

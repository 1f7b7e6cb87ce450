//! Contracts of the tenant schema ports: the schemas' recorded versions, and rollouts —
//! the tenants a rollout takes, its claim queue (waves, parallelism, leases that expire and
//! fence), its reaction to outcomes (budget, completion) and operators' commands.

use chrono::{DateTime, Duration, Utc};
use tenantd_domain::ports::{SchemaQuery, TenantFinish};
use tenantd_domain::provisioning::StepError;
use tenantd_domain::tenant_schema::{
    Canary, ClaimedTenant, ErrorBudget, MigrationLimits, PlacementRule, Rollout, RolloutCommand,
    RolloutId, RolloutSpec, RolloutState, TenantOutcome, TenantRolloutState, Wave,
};
use tenantd_domain::{EventId, EventKind, Reason, RepoError, Subject, Tenant};
use uuid::Uuid;

use super::Stores;
use super::fixtures::{now, run_for, slug, tenant};

/// Stores a placed tenant whose schema is recorded at `version`.
async fn schema_at(stores: &Stores, version: u32, labels: &[(&str, &str)]) -> Tenant {
    let t = tenant(&slug("schema"), "pro", labels);
    let t = t
        .clone()
        .placed(PlacementRule::Shared("default".into()).place(t.id(), "t_"));
    stores
        .tenants
        .create(&t, &run_for(&t), &[], None)
        .await
        .expect("create");
    stores
        .schemas
        .record(t.id(), version, now())
        .await
        .expect("record");
    t
}

fn spec(target: u32, canary: Canary, max_parallel: u32, budget: u32) -> RolloutSpec {
    RolloutSpec {
        target_version: target,
        canary,
        max_parallel,
        max_parallel_per_replica: max_parallel,
        error_budget: ErrorBudget {
            count: budget,
            ratio: 0.0,
        },
        limits: MigrationLimits {
            lock_timeout_ms: 1_000,
            statement_timeout_ms: 10_000,
        },
    }
}

async fn start(stores: &Stores, spec: RolloutSpec, at: DateTime<Utc>) -> Rollout {
    let rollout = Rollout::start(RolloutId(Uuid::now_v7()), spec, "admin".into(), at);
    stores
        .rollouts
        .start(&rollout, EventId(Uuid::now_v7()))
        .await
        .expect("start")
}

async fn claim(stores: &Stores, at: DateTime<Utc>) -> Option<ClaimedTenant> {
    stores
        .rollouts
        .claim("worker", at, Duration::seconds(30))
        .await
        .expect("claim")
}

async fn finish(
    stores: &Stores,
    claimed: &ClaimedTenant,
    outcome: TenantOutcome,
    at: DateTime<Utc>,
) -> Result<Rollout, RepoError> {
    stores
        .rollouts
        .finish(TenantFinish {
            rollout: claimed.rollout.id,
            tenant: claimed.tenant.tenant_id,
            lease: &claimed.lease,
            outcome: &outcome,
            now: at,
            events: &[],
            state_event: EventId(Uuid::now_v7()),
        })
        .await
}

/// The states the rollout's `RolloutStateChanged` events announced, in order.
async fn state_events(stores: &Stores, rollout: RolloutId) -> Vec<String> {
    stores
        .events
        .list(None, None, 100)
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.subject == Subject::Rollout(rollout))
        .filter_map(|e| match e.kind {
            EventKind::RolloutStateChanged { state, .. } => Some(state),
            _ => None,
        })
        .collect()
}

fn migrated(from: u32, to: u32) -> TenantOutcome {
    TenantOutcome::Migrated { from, to }
}

/// A recorded schema is listed with its tenant's placement and version until forgotten;
/// the versions count every schema.
pub async fn a_recorded_schema_is_listed_with_its_placement_until_forgotten(stores: Stores) {
    let a = schema_at(&stores, 1, &[]).await;
    let b = schema_at(&stores, 2, &[]).await;
    let all = |behind| SchemaQuery {
        behind_version: behind,
        page_size: 10,
        after: None,
    };
    let listed = stores.schemas.list(&all(None)).await.expect("list");
    assert_eq!(
        listed
            .iter()
            .map(|s| (s.tenant_id, s.version))
            .collect::<Vec<_>>(),
        [(a.id(), 1), (b.id(), 2)]
    );
    assert_eq!(listed[0].placement.as_ref(), a.placement());
    assert_eq!(listed[0].last_error, None);
    let behind = stores.schemas.list(&all(Some(2))).await.expect("list");
    assert_eq!(behind.len(), 1);
    assert_eq!(behind[0].tenant_id, a.id());
    let page = stores
        .schemas
        .list(&SchemaQuery {
            behind_version: None,
            page_size: 10,
            after: Some(a.id()),
        })
        .await
        .expect("list");
    assert_eq!(
        page.iter().map(|s| s.tenant_id).collect::<Vec<_>>(),
        [b.id()]
    );
    assert_eq!(
        stores.schemas.versions().await.expect("versions"),
        [(1, 1), (2, 1)]
    );
    stores
        .schemas
        .record(a.id(), 2, now())
        .await
        .expect("record");
    stores.schemas.forget(b.id()).await.expect("forget");
    stores.schemas.forget(b.id()).await.expect("forget again");
    assert_eq!(stores.schemas.versions().await.expect("versions"), [(2, 1)]);
}

/// A rollout takes the tenants behind its target, the canary wave first (by ids, labels or
/// the first N), the rest in creation order; tenants at the target are not in it.
pub async fn a_rollout_takes_the_tenants_behind_its_target_canary_first(stores: Stores) {
    let first = schema_at(&stores, 1, &[]).await;
    let labelled = schema_at(&stores, 1, &[("ring", "early")]).await;
    let third = schema_at(&stores, 1, &[]).await;
    let _current = schema_at(&stores, 2, &[("ring", "early")]).await;
    let by_label = Canary::Labels([("ring".to_owned(), "early".to_owned())].into());
    let rollout = start(&stores, spec(2, by_label, 4, 0), now()).await;
    assert_eq!(rollout.state, RolloutState::Running);
    assert_eq!(
        (rollout.counts.canary.pending, rollout.counts.rest.pending),
        (1, 2)
    );
    let tenants = stores
        .rollouts
        .tenants(rollout.id, None, 10, None)
        .await
        .expect("tenants");
    assert_eq!(
        tenants
            .iter()
            .map(|t| (t.tenant_id, t.wave, t.position))
            .collect::<Vec<_>>(),
        [
            (labelled.id(), Wave::Canary, 0),
            (first.id(), Wave::Rest, 0),
            (third.id(), Wave::Rest, 1)
        ]
    );
    assert!(
        tenants.iter().all(|t| t.from_version == Some(1)),
        "each entry keeps the version its schema was found at"
    );
    let after_first = stores
        .rollouts
        .tenants(
            rollout.id,
            Some(TenantRolloutState::Pending),
            10,
            Some((Wave::Rest, 0)),
        )
        .await
        .expect("tenants");
    assert_eq!(after_first.len(), 1);
    assert_eq!(after_first[0].tenant_id, third.id());
    stores
        .rollouts
        .command(
            rollout.id,
            RolloutCommand::Cancel,
            now(),
            EventId(Uuid::now_v7()),
        )
        .await
        .expect("cancel");

    let by_id = start(
        &stores,
        spec(2, Canary::Tenants(vec![third.id()]), 4, 0),
        now(),
    )
    .await;
    let canary = stores
        .rollouts
        .tenants(by_id.id, None, 1, None)
        .await
        .expect("tenants");
    assert_eq!(canary[0].tenant_id, third.id());
    stores
        .rollouts
        .command(
            by_id.id,
            RolloutCommand::Cancel,
            now(),
            EventId(Uuid::now_v7()),
        )
        .await
        .expect("cancel");
    let first_two = start(&stores, spec(2, Canary::First(2), 4, 0), now()).await;
    assert_eq!(
        (
            first_two.counts.canary.total(),
            first_two.counts.rest.total()
        ),
        (2, 1)
    );
}

/// One rollout at a time: another is refused while it runs or is paused; once it ended a
/// new one starts. A rollout with nothing to do ends SUCCEEDED at once.
pub async fn one_rollout_at_a_time_and_one_without_tenants_succeeds_at_once(stores: Stores) {
    schema_at(&stores, 1, &[]).await;
    let empty = start(&stores, spec(1, Canary::None, 4, 0), now()).await;
    assert_eq!(empty.state, RolloutState::Succeeded);
    assert_eq!(empty.counts.all().total(), 0);
    let running = start(&stores, spec(2, Canary::None, 4, 0), now()).await;
    let refused = stores
        .rollouts
        .start(
            &Rollout::start(
                RolloutId(Uuid::now_v7()),
                spec(2, Canary::None, 4, 0),
                "admin".into(),
                now(),
            ),
            EventId(Uuid::now_v7()),
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(RepoError::Precondition(Reason::RolloutInProgress, _))
        ),
        "{refused:?}"
    );
    stores
        .rollouts
        .command(
            running.id,
            RolloutCommand::Pause,
            now(),
            EventId(Uuid::now_v7()),
        )
        .await
        .expect("pause");
    let active = stores
        .rollouts
        .active()
        .await
        .expect("active")
        .expect("paused");
    assert_eq!(
        (active.id, active.state),
        (running.id, RolloutState::Paused)
    );
    stores
        .rollouts
        .command(
            running.id,
            RolloutCommand::Cancel,
            now(),
            EventId(Uuid::now_v7()),
        )
        .await
        .expect("cancel");
    assert_eq!(stores.rollouts.active().await.expect("active"), None);
    let next = start(&stores, spec(2, Canary::None, 4, 0), now()).await;
    let listed = stores.rollouts.list(10, None).await.expect("list");
    assert_eq!(
        listed.iter().map(|r| r.id).collect::<Vec<_>>(),
        [next.id, running.id, empty.id],
        "newest first"
    );
    assert_eq!(
        stores
            .rollouts
            .list(10, Some(running.id))
            .await
            .expect("list")[0]
            .id,
        empty.id
    );
}

/// Claims follow the waves (the rest waits for the canary wave) and never put more than
/// `max_parallel` tenants in flight; concurrent claimers never share a tenant.
pub async fn claims_follow_the_waves_and_the_parallelism_limit(stores: Stores) {
    for _ in 0..4 {
        schema_at(&stores, 1, &[]).await;
    }
    let rollout = start(&stores, spec(2, Canary::First(1), 2, 5), now()).await;
    let t = now() + Duration::seconds(1);
    let canary = claim(&stores, t).await.expect("the canary");
    assert_eq!(
        (canary.tenant.wave, canary.tenant.attempts),
        (Wave::Canary, 1)
    );
    assert_eq!(canary.tenant.state, TenantRolloutState::Running);
    assert!(
        claim(&stores, t).await.is_none(),
        "the rest waits for the canary"
    );
    finish(&stores, &canary, migrated(1, 2), t)
        .await
        .expect("finish");
    let claims = futures::future::join_all((0..4).map(|_| claim(&stores, t))).await;
    let claimed: Vec<_> = claims.into_iter().flatten().collect();
    assert_eq!(claimed.len(), 2, "max_parallel 2");
    assert_ne!(claimed[0].tenant.tenant_id, claimed[1].tenant.tenant_id);
    assert!(claimed.iter().all(|c| c.tenant.wave == Wave::Rest));
    let read = stores
        .rollouts
        .get(rollout.id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(read.counts.rest.running, 2);
    assert_eq!(read.counts.canary.succeeded, 1);
}

/// A tenant whose worker's lease expired is claimed again (an attempt more); the old
/// worker can neither renew nor store an outcome.
pub async fn an_expired_tenant_lease_is_taken_over_and_the_old_worker_fenced_off(stores: Stores) {
    schema_at(&stores, 1, &[]).await;
    start(&stores, spec(2, Canary::None, 1, 0), now()).await;
    let t0 = now() + Duration::seconds(1);
    let old = claim(&stores, t0).await.expect("claimed");
    assert!(
        claim(&stores, t0 + Duration::seconds(10)).await.is_none(),
        "leased"
    );
    let t1 = t0 + Duration::seconds(31);
    let new = claim(&stores, t1).await.expect("taken over");
    assert_eq!(new.tenant.tenant_id, old.tenant.tenant_id);
    assert_eq!(new.tenant.attempts, 2);
    assert!(
        !stores
            .rollouts
            .renew(old.rollout.id, old.tenant.tenant_id, &old.lease, t1)
            .await
            .expect("renew")
    );
    assert!(matches!(
        finish(&stores, &old, migrated(1, 2), t1).await,
        Err(RepoError::LeaseLost)
    ));
    assert!(
        stores
            .rollouts
            .renew(
                new.rollout.id,
                new.tenant.tenant_id,
                &new.lease,
                t1 + Duration::seconds(30)
            )
            .await
            .expect("renew")
    );
    let done = finish(&stores, &new, migrated(2, 2), t1)
        .await
        .expect("finish");
    assert_eq!(done.state, RolloutState::Succeeded);
}

/// Outcomes are stored with the schema's record: a success moves its version, a failure
/// records the error and leaves it; failures beyond the budget pause the rollout, and the
/// last tenant ends it, with a `RolloutStateChanged` event each time.
pub async fn outcomes_move_the_schemas_and_the_budget_pauses_the_rollout(stores: Stores) {
    let ok = schema_at(&stores, 1, &[]).await;
    schema_at(&stores, 1, &[]).await;
    schema_at(&stores, 1, &[]).await;
    let rollout = start(&stores, spec(2, Canary::None, 1, 0), now()).await;
    let t = now() + Duration::seconds(1);
    let first = claim(&stores, t).await.expect("claimed");
    assert_eq!(first.tenant.tenant_id, ok.id());
    assert_eq!(first.placement.as_ref(), ok.placement());
    let after = finish(&stores, &first, migrated(1, 2), t)
        .await
        .expect("finish");
    assert_eq!(
        (after.state, after.counts.all().succeeded),
        (RolloutState::Running, 1)
    );
    let second = claim(&stores, t).await.expect("claimed");
    let unavailable = StepError::new("DATABASE_UNAVAILABLE", "connection refused");
    let paused = finish(
        &stores,
        &second,
        TenantOutcome::Failed(unavailable.clone()),
        t,
    )
    .await
    .expect("finish");
    assert_eq!(paused.state, RolloutState::Paused);
    assert_eq!(
        paused.reason.as_ref().map(|r| r.reason.as_str()),
        Some("ERROR_BUDGET_EXHAUSTED")
    );
    assert!(
        claim(&stores, t).await.is_none(),
        "a paused rollout starts no tenant"
    );
    let schemas = stores
        .schemas
        .list(&SchemaQuery {
            behind_version: None,
            page_size: 10,
            after: None,
        })
        .await
        .expect("list");
    let of = |id| schemas.iter().find(|s| s.tenant_id == id).expect("listed");
    assert_eq!(of(ok.id()).version, 2);
    let failed = of(second.tenant.tenant_id);
    assert_eq!(
        (failed.version, failed.last_error.as_ref()),
        (1, Some(&unavailable))
    );
    let failures = stores
        .rollouts
        .tenants(rollout.id, Some(TenantRolloutState::Failed), 10, None)
        .await
        .expect("tenants");
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].error.as_ref(), Some(&unavailable));

    // Resume queues the failure that may pass again and accepts it.
    let resumed = stores
        .rollouts
        .command(
            rollout.id,
            RolloutCommand::Resume,
            t,
            EventId(Uuid::now_v7()),
        )
        .await
        .expect("resume");
    assert_eq!(
        (
            resumed.state,
            resumed.counts.all().pending,
            resumed.counts.all().failed
        ),
        (RolloutState::Running, 2, 0)
    );
    for _ in 0..2 {
        let next = claim(&stores, t).await.expect("claimed");
        finish(&stores, &next, migrated(1, 2), t)
            .await
            .expect("finish");
    }
    let done = stores
        .rollouts
        .get(rollout.id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(
        (done.state, done.counts.all().succeeded),
        (RolloutState::Succeeded, 3)
    );
    assert!(done.finished_at.is_some());
    let states = state_events(&stores, rollout.id).await;
    assert_eq!(states, ["RUNNING", "PAUSED", "RUNNING", "SUCCEEDED"]);
}

/// Commands: a resume leaves permanent failures failed, RetryFailed queues them; cancel
/// cancels the pending tenants; a command the state does not allow is refused with
/// `ROLLOUT_STATE_INVALID`, and an unknown rollout is not found.
pub async fn commands_queue_cancel_and_refuse_as_the_state_says(stores: Stores) {
    for _ in 0..3 {
        schema_at(&stores, 1, &[]).await;
    }
    let rollout = start(&stores, spec(2, Canary::None, 1, 0), now()).await;
    let t = now() + Duration::seconds(1);
    let first = claim(&stores, t).await.expect("claimed");
    let broken = StepError::permanent("MIGRATION_FAILED", "0002_x.sql failed");
    finish(&stores, &first, TenantOutcome::Failed(broken), t)
        .await
        .expect("finish");
    let command = |command| {
        stores
            .rollouts
            .command(rollout.id, command, t, EventId(Uuid::now_v7()))
    };
    let resumed = command(RolloutCommand::Resume).await.expect("resume");
    assert_eq!(
        (resumed.counts.all().failed, resumed.counts.all().pending),
        (1, 2),
        "a permanent failure stays failed"
    );
    let refused = command(RolloutCommand::Resume).await;
    assert!(
        matches!(
            refused,
            Err(RepoError::Precondition(Reason::RolloutStateInvalid, _))
        ),
        "{refused:?}"
    );
    command(RolloutCommand::Pause).await.expect("pause");
    let retried = command(RolloutCommand::RetryFailed).await.expect("retry");
    assert_eq!(
        (
            retried.state,
            retried.counts.all().failed,
            retried.counts.all().pending
        ),
        (RolloutState::Running, 0, 3)
    );
    let cancelled = command(RolloutCommand::Cancel).await.expect("cancel");
    assert_eq!(
        (cancelled.state, cancelled.counts.all().cancelled),
        (RolloutState::Cancelled, 3)
    );
    assert!(claim(&stores, t).await.is_none());
    assert!(matches!(
        command(RolloutCommand::RetryFailed).await,
        Err(RepoError::Precondition(Reason::RolloutStateInvalid, _))
    ));
    let unknown = stores
        .rollouts
        .command(
            RolloutId(Uuid::now_v7()),
            RolloutCommand::Pause,
            t,
            EventId(Uuid::now_v7()),
        )
        .await;
    assert!(matches!(unknown, Err(RepoError::NotFound)), "{unknown:?}");
    assert_eq!(
        stores
            .rollouts
            .get(RolloutId(Uuid::now_v7()))
            .await
            .expect("get"),
        None
    );
}

/// A tenant whose schema was gone is skipped and its record dropped; a canary failure
/// pauses the rollout before the rest, whatever the budget.
pub async fn a_gone_schema_is_skipped_and_a_failed_canary_pauses(stores: Stores) {
    let gone = schema_at(&stores, 1, &[]).await;
    schema_at(&stores, 1, &[]).await;
    schema_at(&stores, 1, &[]).await;
    let rollout = start(&stores, spec(2, Canary::First(2), 1, 10), now()).await;
    let t = now() + Duration::seconds(1);
    let first = claim(&stores, t).await.expect("claimed");
    assert_eq!(first.tenant.tenant_id, gone.id());
    let after = finish(&stores, &first, TenantOutcome::Gone, t)
        .await
        .expect("finish");
    assert_eq!(after.counts.canary.skipped, 1);
    let versions = stores.schemas.versions().await.expect("versions");
    assert_eq!(versions, [(1, 2)], "the gone schema's record is dropped");
    let second = claim(&stores, t).await.expect("claimed");
    let paused = finish(
        &stores,
        &second,
        TenantOutcome::Failed(StepError::permanent("MIGRATION_FAILED", "check violated")),
        t,
    )
    .await
    .expect("finish");
    assert_eq!(
        (paused.state, paused.reason.map(|r| r.reason)),
        (RolloutState::Paused, Some("CANARY_FAILED".to_owned()))
    );
    assert_eq!(paused.id, rollout.id);
}

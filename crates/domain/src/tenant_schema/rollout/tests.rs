use chrono::TimeZone as _;

use super::*;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap()
}

fn spec(count: u32, ratio: f64) -> RolloutSpec {
    RolloutSpec {
        target_version: 3,
        canary: Canary::First(2),
        max_parallel: 4,
        max_parallel_per_replica: 2,
        error_budget: ErrorBudget { count, ratio },
        limits: MigrationLimits {
            lock_timeout_ms: 1_000,
            statement_timeout_ms: 60_000,
        },
    }
}

fn rollout(canary: u64, rest: u64, budget: ErrorBudget) -> Rollout {
    let mut rollout = Rollout::start(
        RolloutId(Uuid::now_v7()),
        RolloutSpec {
            error_budget: budget,
            ..spec(0, 0.0)
        },
        "spiffe://tenantd.test/admin".into(),
        now(),
    );
    rollout.counts.canary.pending = canary;
    rollout.counts.rest.pending = rest;
    rollout
}

/// Moves one tenant of `wave` from pending to `to` and tells the rollout.
fn finish(rollout: &mut Rollout, wave: Wave, to: TenantRolloutState) -> bool {
    let counts = rollout.counts.wave_mut(wave);
    counts.pending -= 1;
    counts.add(to, 1);
    rollout.after_finish(wave, to == TenantRolloutState::Failed, now())
}

#[test]
fn the_budget_is_the_larger_of_its_count_and_its_share() {
    let budget = ErrorBudget {
        count: 2,
        ratio: 0.05,
    };
    assert_eq!(budget.allowed(10), 2);
    assert_eq!(budget.allowed(100), 5);
    assert_eq!(budget.allowed(109), 5, "the share rounds down");
    assert_eq!(
        ErrorBudget {
            count: 0,
            ratio: 7.0
        }
        .allowed(10),
        10,
        "a ratio above 1 is 1"
    );
}

#[test]
fn the_rest_waits_until_the_canary_wave_has_nothing_in_flight() {
    let mut rollout = rollout(
        1,
        3,
        ErrorBudget {
            count: 0,
            ratio: 0.0,
        },
    );
    assert_eq!(rollout.claimable_wave(), Some(Wave::Canary));
    rollout.counts.canary.pending = 0;
    rollout.counts.canary.running = 1;
    assert_eq!(rollout.claimable_wave(), None);
    rollout.counts.canary.running = 0;
    rollout.counts.canary.succeeded = 1;
    assert_eq!(rollout.claimable_wave(), Some(Wave::Rest));
    rollout.state = RolloutState::Paused;
    assert_eq!(
        rollout.claimable_wave(),
        None,
        "a paused rollout starts no tenant"
    );
}

#[test]
fn a_failed_canary_pauses_the_rollout_before_the_rest() {
    let mut rollout = rollout(
        2,
        5,
        ErrorBudget {
            count: 10,
            ratio: 0.0,
        },
    );
    assert!(!finish(
        &mut rollout,
        Wave::Canary,
        TenantRolloutState::Succeeded
    ));
    assert!(finish(
        &mut rollout,
        Wave::Canary,
        TenantRolloutState::Failed
    ));
    assert_eq!(rollout.state, RolloutState::Paused);
    assert_eq!(rollout.reason.as_ref().unwrap().reason, "CANARY_FAILED");
    assert_eq!(rollout.finished_at, None, "paused is not finished");
}

#[test]
fn failures_beyond_the_budget_pause_and_a_resume_accepts_them() {
    let mut rollout = rollout(
        0,
        10,
        ErrorBudget {
            count: 1,
            ratio: 0.0,
        },
    );
    assert!(
        !finish(&mut rollout, Wave::Rest, TenantRolloutState::Failed),
        "one is within budget"
    );
    assert!(finish(&mut rollout, Wave::Rest, TenantRolloutState::Failed));
    assert_eq!(rollout.state, RolloutState::Paused);
    assert_eq!(
        rollout.reason.as_ref().unwrap().reason,
        "ERROR_BUDGET_EXHAUSTED"
    );

    assert_eq!(
        rollout.command(RolloutCommand::Resume, now()),
        Ok(Requeue::Transient)
    );
    rollout.accept_failures();
    assert_eq!(rollout.state, RolloutState::Running);
    assert!(
        !finish(&mut rollout, Wave::Rest, TenantRolloutState::Failed),
        "the budget counts failures after the resume"
    );
    assert!(finish(&mut rollout, Wave::Rest, TenantRolloutState::Failed));
    assert_eq!(rollout.state, RolloutState::Paused);
}

#[test]
fn the_last_tenant_ends_the_rollout_succeeded_or_failed() {
    let mut clean = rollout(
        0,
        2,
        ErrorBudget {
            count: 5,
            ratio: 0.0,
        },
    );
    assert!(!finish(
        &mut clean,
        Wave::Rest,
        TenantRolloutState::Succeeded
    ));
    assert!(finish(&mut clean, Wave::Rest, TenantRolloutState::Skipped));
    assert_eq!(
        (clean.state, clean.finished_at),
        (RolloutState::Succeeded, Some(now()))
    );

    let mut failed = rollout(
        0,
        2,
        ErrorBudget {
            count: 5,
            ratio: 0.0,
        },
    );
    assert!(!finish(&mut failed, Wave::Rest, TenantRolloutState::Failed));
    assert!(finish(
        &mut failed,
        Wave::Rest,
        TenantRolloutState::Succeeded
    ));
    assert_eq!(failed.state, RolloutState::Failed);
    assert_eq!(failed.reason.as_ref().unwrap().reason, "TENANTS_FAILED");

    let mut empty = rollout(
        0,
        0,
        ErrorBudget {
            count: 0,
            ratio: 0.0,
        },
    );
    assert!(empty.settle(now()));
    assert_eq!(empty.state, RolloutState::Succeeded);
}

#[test]
fn commands_are_checked_against_the_state() {
    let mut rollout = rollout(
        0,
        3,
        ErrorBudget {
            count: 0,
            ratio: 0.0,
        },
    );
    let refused = |rollout: &mut Rollout, command| {
        let before = rollout.clone();
        let err = RepoError::from(rollout.command(command, now()).unwrap_err());
        assert!(
            matches!(err, RepoError::Precondition(Reason::RolloutStateInvalid, _)),
            "{command:?}: {err:?}"
        );
        assert_eq!(*rollout, before, "a refused command changes nothing");
    };
    refused(&mut rollout, RolloutCommand::Resume);
    refused(&mut rollout, RolloutCommand::RetryFailed);
    assert_eq!(
        rollout.command(RolloutCommand::Pause, now()),
        Ok(Requeue::Nothing)
    );
    assert_eq!(
        rollout.reason.as_ref().unwrap().reason,
        "PAUSED_BY_OPERATOR"
    );
    refused(&mut rollout, RolloutCommand::Pause);
    assert_eq!(
        rollout.command(RolloutCommand::Cancel, now()),
        Ok(Requeue::CancelPending)
    );
    assert_eq!(
        (rollout.state, rollout.finished_at),
        (RolloutState::Cancelled, Some(now()))
    );
    refused(&mut rollout, RolloutCommand::Cancel);
    refused(&mut rollout, RolloutCommand::Resume);

    let mut failed = self::rollout(
        0,
        1,
        ErrorBudget {
            count: 5,
            ratio: 0.0,
        },
    );
    finish(&mut failed, Wave::Rest, TenantRolloutState::Failed);
    assert_eq!(failed.state, RolloutState::Failed);
    assert_eq!(
        failed.command(RolloutCommand::RetryFailed, now()),
        Ok(Requeue::AllFailed)
    );
    assert_eq!(
        (failed.state, failed.reason.clone()),
        (RolloutState::Running, None)
    );
}

#[test]
fn the_state_event_is_the_rollouts_own_and_counts_its_tenants() {
    let mut rollout = rollout(
        1,
        2,
        ErrorBudget {
            count: 5,
            ratio: 0.0,
        },
    );
    finish(&mut rollout, Wave::Canary, TenantRolloutState::Succeeded);
    let event = rollout.state_event(EventId(Uuid::now_v7()), now());
    assert_eq!(event.subject, Subject::Rollout(rollout.id));
    assert_eq!(event.subject.tenant(), None);
    let EventKind::RolloutStateChanged {
        state,
        tenants,
        succeeded,
        failed,
        target_version,
        ..
    } = event.kind
    else {
        panic!("not a RolloutStateChanged: {:?}", event.kind);
    };
    assert_eq!(
        (state.as_str(), tenants, succeeded, failed, target_version),
        ("RUNNING", 3, 1, 0, 3)
    );
}

#[test]
fn states_and_waves_round_trip_their_names() {
    for state in RolloutState::ALL {
        assert_eq!(RolloutState::parse(state.as_str()), Some(state));
    }
    for state in TenantRolloutState::ALL {
        assert_eq!(TenantRolloutState::parse(state.as_str()), Some(state));
    }
    for wave in Wave::ALL {
        assert_eq!(Wave::from_index(wave.index()), Some(wave));
    }
    assert_eq!(RolloutState::parse("running"), None);
}

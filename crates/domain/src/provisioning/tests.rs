//! The run state machine, rule by rule.

use chrono::TimeZone as _;

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::*;
use crate::TenantId;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

fn run() -> ProvisioningRun {
    ProvisioningRun::new(
        RunId(Uuid::now_v7()),
        TenantId::from_uuid(Uuid::now_v7()).unwrap(),
        now(),
        Duration::minutes(30),
    )
}

fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        base: Duration::seconds(1),
        max_delay: Duration::seconds(30),
        max_attempts,
    }
}

fn boom() -> StepError {
    StepError::new("DNS_PROVIDER_UNAVAILABLE", "503")
}

#[test]
fn a_new_run_has_every_step_pending_in_order_with_the_first_due() {
    let r = run();
    let kinds: Vec<_> = r.steps.iter().map(|s| s.kind).collect();
    assert_eq!(kinds, StepKind::ORDER);
    assert!(r.steps.iter().all(|s| s.state == StepState::Pending));
    assert_eq!(r.steps[0].next_attempt_at, Some(now()));
    assert_eq!(r.steps[1].next_attempt_at, None);
    assert_eq!(r.deadline, now() + Duration::minutes(30));
}

#[test]
fn steps_run_in_order_and_the_run_succeeds_after_the_last() {
    let mut r = run();
    assert!(r.start(StepKind::Dns, now()).is_err(), "out of order");
    for kind in StepKind::ORDER {
        r.start(kind, now()).unwrap();
        assert!(r.start(kind, now()).is_err(), "twice");
        r.succeed(kind, now()).unwrap();
    }
    assert_eq!(r.state, RunState::Succeeded);
    assert_eq!(r.completed(), 5);
    assert_eq!(r.current(), None);
}

#[test]
fn a_failing_step_is_retried_with_growing_capped_delays_then_fails_the_run() {
    let mut r = run();
    let p = policy(3);
    r.start(StepKind::Database, now()).unwrap();
    r.succeed(StepKind::Database, now()).unwrap();
    r.start(StepKind::Dns, now()).unwrap();
    r.succeed(StepKind::Dns, now()).unwrap();
    r.start(StepKind::Credentials, now()).unwrap();
    assert_eq!(
        r.fail(StepKind::Credentials, boom(), &p, 1.0, now())
            .unwrap(),
        AfterFailure::RetryAt(now() + Duration::seconds(1))
    );
    r.start(StepKind::Credentials, now()).unwrap();
    assert_eq!(
        r.fail(StepKind::Credentials, boom(), &p, 1.0, now())
            .unwrap(),
        AfterFailure::RetryAt(now() + Duration::seconds(2))
    );
    r.start(StepKind::Credentials, now()).unwrap();
    let after = r
        .fail(StepKind::Credentials, boom(), &p, 1.0, now())
        .unwrap();
    assert_eq!(
        after,
        AfterFailure::Compensate(vec![
            StepKind::Credentials,
            StepKind::Dns,
            StepKind::Database
        ]),
        "the failed step may have left something behind too"
    );
    assert_eq!(r.state, RunState::Failed);
    assert_eq!(r.error, Some(boom()));
    assert_eq!(r.steps[2].state, StepState::Failed);
    assert_eq!(r.steps[2].attempts, 3);
    assert!(r.steps[3..].iter().all(|s| s.state == StepState::Cancelled));
}

#[test]
fn backoff_grows_exponentially_is_capped_and_jittered() {
    let p = RetryPolicy {
        base: Duration::seconds(1),
        max_delay: Duration::seconds(10),
        max_attempts: 100,
    };
    let delays: Vec<_> = (1..=6)
        .map(|a| p.delay_after(a, 1.0).unwrap().num_seconds())
        .collect();
    assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
    assert_eq!(p.delay_after(3, 0.5), Some(Duration::seconds(2)));
    assert_eq!(
        p.delay_after(3, 0.0),
        Some(Duration::milliseconds(1)),
        "never an immediate retry"
    );
    assert_eq!(policy(3).delay_after(3, 1.0), None, "no attempts left");
}

#[test]
fn cancel_compensates_done_and_in_flight_steps_latest_first_and_only_once() {
    let mut r = run();
    r.start(StepKind::Database, now()).unwrap();
    r.succeed(StepKind::Database, now()).unwrap();
    r.start(StepKind::Dns, now()).unwrap();
    let undo = r.cancel(boom(), now()).unwrap();
    assert_eq!(
        undo,
        vec![StepKind::Dns, StepKind::Database],
        "the in-flight step too"
    );
    assert_eq!(r.state, RunState::Cancelled);
    assert_eq!(r.steps[1].state, StepState::Cancelled);
    assert!(
        r.succeed(StepKind::Dns, now()).is_err(),
        "a late attempt cannot succeed"
    );
    assert!(r.cancel(boom(), now()).is_err());
    assert!(
        r.compensated(StepKind::Credentials, now()).is_err(),
        "never attempted"
    );
    r.compensated(StepKind::Dns, now()).unwrap();
    r.compensated(StepKind::Database, now()).unwrap();
    assert_eq!(r.steps[0].state, StepState::Compensated);
    assert!(r.compensated(StepKind::Database, now()).is_err());
}

#[test]
fn retry_restarts_from_the_first_undone_step_including_compensated_ones() {
    let mut r = run();
    r.start(StepKind::Database, now()).unwrap();
    r.succeed(StepKind::Database, now()).unwrap();
    r.start(StepKind::Dns, now()).unwrap();
    r.fail(StepKind::Dns, boom(), &policy(1), 1.0, now())
        .unwrap();
    r.compensated(StepKind::Dns, now()).unwrap();
    assert!(
        r.retry(now(), Duration::minutes(30)).is_err(),
        "no retry while an undo is still pending"
    );
    r.compensated(StepKind::Database, now()).unwrap();
    let later = now() + Duration::hours(1);
    r.retry(later, Duration::minutes(30)).unwrap();
    assert_eq!(r.state, RunState::Running);
    assert_eq!(r.current().map(|s| s.kind), Some(StepKind::Database));
    assert_eq!(r.steps[0].next_attempt_at, Some(later));
    assert!(
        r.steps
            .iter()
            .all(|s| s.state == StepState::Pending && s.attempts == 0)
    );
    assert!(
        r.steps
            .iter()
            .all(|s| s.last_error.is_none() && s.started_at.is_none())
    );
    assert_eq!(r.deadline, later + Duration::minutes(30));
    assert!(
        r.retry(later, Duration::minutes(30)).is_err(),
        "a running run is not retried"
    );
}

#[test]
fn a_run_is_due_at_its_current_step_then_at_its_undo_then_never() {
    let mut r = run();
    assert_eq!(r.due_at(), Some(now()));
    r.start(StepKind::Database, now()).unwrap();
    // Held by a worker: due since it started, for whoever finds the lease expired.
    assert_eq!(r.due_at(), Some(now()));
    let later = now() + Duration::seconds(5);
    let after = r
        .fail(StepKind::Database, boom(), &policy(3), 1.0, later)
        .unwrap();
    assert_eq!(after, AfterFailure::RetryAt(later + Duration::seconds(1)));
    assert_eq!(r.due_at(), Some(later + Duration::seconds(1)));
    r.start(StepKind::Database, later).unwrap();
    r.cancel(boom(), later).unwrap();
    assert_eq!(r.due_at(), Some(later), "the undo is due at once");
    let retry_at = r
        .compensation_failed(boom(), &policy(3), 1.0, later)
        .unwrap();
    assert_eq!(retry_at, later + Duration::seconds(1));
    assert_eq!(r.due_at(), Some(retry_at));
    let second = r
        .compensation_failed(boom(), &policy(3), 1.0, later)
        .unwrap();
    assert_eq!(
        second,
        later + Duration::seconds(2),
        "undo retries back off"
    );
    r.compensated(StepKind::Database, later).unwrap();
    assert_eq!((r.due_at(), r.compensation_attempts), (None, 0));
    assert!(
        r.compensation_failed(boom(), &policy(3), 1.0, later)
            .is_err()
    );
}

#[test]
fn compensation_never_gives_up_but_waits_at_most_the_longest_delay() {
    let mut r = run();
    r.start(StepKind::Database, now()).unwrap();
    r.cancel(boom(), now()).unwrap();
    let mut last = now();
    for _ in 0..50 {
        last = r
            .compensation_failed(boom(), &policy(2), 1.0, now())
            .unwrap();
    }
    assert_eq!(last, now() + Duration::seconds(30));
}

#[test]
fn the_summary_names_the_step_at_work_or_the_one_that_failed() {
    let mut r = run();
    let s = r.summary();
    assert_eq!(
        (s.state, s.current_step, s.completed_steps, s.total_steps),
        (RunState::Running, Some(StepKind::Database), 0, 5)
    );
    r.start(StepKind::Database, now()).unwrap();
    r.succeed(StepKind::Database, now()).unwrap();
    r.start(StepKind::Dns, now()).unwrap();
    r.fail(StepKind::Dns, boom(), &policy(1), 0.5, now())
        .unwrap();
    for kind in [StepKind::Dns, StepKind::Database] {
        r.compensated(kind, now()).unwrap();
    }
    let s = r.summary();
    assert_eq!(
        (s.state, s.current_step, s.completed_steps),
        (RunState::Failed, Some(StepKind::Dns), 0),
        "still the failed step once everything is undone"
    );

    let mut c = run();
    c.cancel(boom(), now()).unwrap();
    assert_eq!(c.summary().current_step, None);
}

#[test]
fn names_round_trip() {
    for kind in StepKind::ORDER {
        assert_eq!(StepKind::parse(kind.as_str()), Some(kind));
    }
    for state in StepState::ALL {
        assert_eq!(StepState::parse(state.as_str()), Some(state));
    }
    for state in RunState::ALL {
        assert_eq!(RunState::parse(state.as_str()), Some(state));
    }
    assert_eq!(StepKind::parse("database"), None);
}

#[test]
fn a_step_waiting_to_retry_after_an_attempt_is_undone_too() {
    let mut r = run();
    r.start(StepKind::Database, now()).unwrap();
    r.succeed(StepKind::Database, now()).unwrap();
    r.start(StepKind::Dns, now()).unwrap();
    // The attempt timed out, perhaps after its work was done; it waits for a retry.
    r.fail(StepKind::Dns, boom(), &policy(3), 0.5, now())
        .unwrap();
    assert_eq!(r.step(StepKind::Dns).state, StepState::Pending);
    let undo = r.cancel(boom(), now()).unwrap();
    assert_eq!(undo, [StepKind::Dns, StepKind::Database]);
    // An undo that fails shows why on its step.
    let stuck = StepError::new("DNS_PROVIDER_UNAVAILABLE", "undo refused");
    r.compensation_failed(stuck.clone(), &policy(3), 0.5, now())
        .unwrap();
    assert_eq!(r.step(StepKind::Dns).last_error, Some(stuck));
}

#[test]
fn a_permanent_failure_fails_the_run_without_spending_its_attempts() {
    let mut r = run();
    r.start(StepKind::Database, now()).unwrap();
    r.succeed(StepKind::Database, now()).unwrap();
    r.start(StepKind::Dns, now()).unwrap();
    let taken = StepError::permanent("DNS_NAME_TAKEN", "acme.example is held by another tenant");
    let after = r
        .fail(StepKind::Dns, taken.clone(), &policy(5), 0.5, now())
        .unwrap();
    assert_eq!(
        after,
        AfterFailure::Compensate(vec![StepKind::Dns, StepKind::Database])
    );
    assert_eq!((r.state, r.error.clone()), (RunState::Failed, Some(taken)));
    assert_eq!(r.step(StepKind::Dns).attempts, 1);
}

#[test]
fn the_failed_step_stays_named_while_an_earlier_undo_fails() {
    let mut r = run();
    r.start(StepKind::Database, now()).unwrap();
    r.succeed(StepKind::Database, now()).unwrap();
    r.start(StepKind::Dns, now()).unwrap();
    r.fail(StepKind::Dns, boom(), &policy(1), 0.5, now())
        .unwrap();
    r.compensated(StepKind::Dns, now()).unwrap();
    r.compensation_failed(
        StepError::new("DROP_FAILED", "busy"),
        &policy(3),
        0.5,
        now(),
    )
    .unwrap();
    assert_eq!(r.summary().current_step, Some(StepKind::Dns));
    r.compensated(StepKind::Database, now()).unwrap();
    r.retry(now(), Duration::minutes(30)).unwrap();
    assert_eq!(r.failed_step, None);
}

#[test]
fn a_run_is_settled_once_it_ended_and_its_undo_is_done() {
    let mut r = run();
    assert!(!r.is_settled());
    r.start(StepKind::Database, now()).unwrap();
    r.cancel(boom(), now()).unwrap();
    assert!(!r.is_settled(), "the undo is still pending");
    r.compensated(StepKind::Database, now()).unwrap();
    assert!(r.is_settled());
}

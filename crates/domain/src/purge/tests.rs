//! The purge state machine, rule by rule.

use chrono::{Duration, TimeZone as _, Utc};
use uuid::Uuid;

use super::*;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap()
}

fn purge() -> Purge {
    let tenant = TenantId::from_uuid(Uuid::now_v7()).unwrap();
    Purge::new(tenant, false, "retention".into(), now())
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        base: Duration::seconds(1),
        max_delay: Duration::seconds(30),
        max_attempts: 3,
    }
}

#[test]
fn a_new_purge_has_every_step_pending_in_order_with_the_first_due() {
    let p = purge();
    let kinds: Vec<_> = p.steps.iter().map(|s| s.kind).collect();
    assert_eq!(kinds, PurgeStepKind::ORDER);
    assert_eq!(p.due_at(), Some(now()));
    assert_eq!(p.current().unwrap().kind, PurgeStepKind::Database);
    assert!(!p.is_done());
}

#[test]
fn steps_run_in_order_and_the_last_success_finishes_the_purge() {
    let mut p = purge();
    for (i, kind) in PurgeStepKind::ORDER.into_iter().enumerate() {
        let at = now() + Duration::seconds(i64::try_from(i).unwrap());
        if kind != PurgeStepKind::Tombstone {
            assert!(
                p.start(PurgeStepKind::Tombstone, at).is_err(),
                "the last step cannot start before {kind}"
            );
        }
        p.start(kind, at).unwrap();
        assert_eq!(p.due_at(), Some(at), "a running step is due from its start");
        p.succeed(kind, at).unwrap();
    }
    assert!(p.is_done());
    assert_eq!(p.due_at(), None);
    assert!(p.steps.iter().all(|s| s.attempts == 1));
}

#[test]
fn a_failed_step_is_retried_past_the_policys_attempts() {
    let mut p = purge();
    let mut at = now();
    for attempt in 1..=5 {
        p.start(PurgeStepKind::Database, at).unwrap();
        let retry = p
            .fail(
                PurgeStepKind::Database,
                StepError::new("STORE_UNAVAILABLE", "down"),
                &policy(),
                1.0,
                at,
            )
            .unwrap();
        let step = p.step(PurgeStepKind::Database);
        assert_eq!(step.attempts, attempt);
        assert_eq!(step.state, PurgeStepState::Pending);
        assert_eq!(
            step.last_error.as_ref().unwrap().reason,
            "STORE_UNAVAILABLE"
        );
        assert!(retry > at && retry <= at + Duration::seconds(30));
        assert_eq!(p.due_at(), Some(retry));
        at = retry;
    }
    assert_eq!(
        p.fail(
            PurgeStepKind::Database,
            StepError::new("X", "not running"),
            &policy(),
            1.0,
            at
        )
        .unwrap_err()
        .reason(),
        Reason::InvalidTransition,
        "only a running step can fail"
    );
}

#[test]
fn names_round_trip() {
    for kind in PurgeStepKind::ORDER {
        assert_eq!(PurgeStepKind::parse(kind.as_str()), Some(kind));
    }
    for state in PurgeStepState::ALL {
        assert_eq!(PurgeStepState::parse(state.as_str()), Some(state));
    }
    assert_eq!(PurgeStepKind::parse("database"), None);
}

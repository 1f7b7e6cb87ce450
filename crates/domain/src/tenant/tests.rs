//! The tenant entity's lifecycle rules, move by move.

use super::*;

fn tenant() -> Tenant {
    let new = NewTenant {
        slug: Slug::parse("acme").unwrap(),
        display_name: DisplayName::parse("Acme").unwrap(),
        plan_id: PlanId::new("pro"),
        contact_email: ContactEmail::parse("ops@acme.example").unwrap(),
        labels: Labels::default(),
        config: TenantConfig::default(),
    };
    let id = TenantId::from_uuid(uuid::Uuid::now_v7()).unwrap();
    Tenant::create(id, new, Utc::now())
}

#[test]
fn new_tenant_is_provisioning_at_version_one() {
    let t = tenant();
    assert_eq!(t.status(), TenantStatus::Provisioning);
    assert_eq!(t.version(), 1);
    assert_eq!(t.etag(), "v1");
}

#[test]
fn lifecycle_methods_bump_the_version_and_refuse_illegal_moves() {
    let mut t = tenant();
    let now = Utc::now();
    assert!(matches!(
        t.resume(now),
        Err(Error::FailedPrecondition { .. })
    ));
    assert!(matches!(
        t.suspend("x".into(), now),
        Err(Error::FailedPrecondition { .. })
    ));
    assert_eq!(t.version(), 1, "a refused move changes nothing");
    t.activate(now).unwrap();
    t.suspend("unpaid invoice".into(), now).unwrap();
    assert_eq!(t.status(), TenantStatus::Suspended);
    assert_eq!(t.status_reason(), "unpaid invoice");
    t.resume(now).unwrap();
    assert_eq!(t.status_reason(), "");
    assert_eq!(t.version(), 4);
}

#[test]
fn delete_and_undelete_restore_the_previous_status() {
    let mut t = tenant();
    let now = Utc::now();
    t.activate(now).unwrap();
    t.suspend("fraud check".into(), now).unwrap();
    t.delete(Duration::days(30), now).unwrap();
    assert_eq!(t.status(), TenantStatus::Deleted);
    assert_eq!(t.purge_at(), Some(now + Duration::days(30)));
    assert!(matches!(
        t.delete(Duration::days(30), now),
        Err(Error::FailedPrecondition { .. })
    ));
    assert!(t.update(TenantChange::default(), now).is_err());
    assert_eq!(t.undelete(now).unwrap(), TenantStatus::Suspended);
    assert_eq!(t.deleted_at(), None);
    assert!(matches!(
        t.undelete(now),
        Err(Error::FailedPrecondition { .. })
    ));
}

#[test]
fn undelete_after_purge_time_is_refused() {
    let mut t = tenant();
    let now = Utc::now();
    t.delete(Duration::days(1), now).unwrap();
    let later = now + Duration::days(2);
    assert!(matches!(
        t.undelete(later),
        Err(Error::FailedPrecondition { .. })
    ));
}

#[test]
fn a_legal_hold_is_set_and_released_with_its_reason_and_start() {
    let mut t = tenant();
    let now = Utc::now();
    t.set_legal_hold("case 17".into(), now).unwrap();
    let later = now + Duration::hours(1);
    t.set_legal_hold("case 17, amended".into(), later).unwrap();
    assert_eq!(
        t.legal_hold(),
        Some(&LegalHold {
            reason: "case 17, amended".into(),
            since: now
        }),
        "setting it again replaces the reason and keeps the start"
    );
    assert_eq!(t.version(), 3);
    t.release_legal_hold(later).unwrap();
    assert_eq!(t.legal_hold(), None);
    assert_eq!(t.purge_at(), None, "not deleted: no purge time");
    match t.release_legal_hold(later) {
        Err(Error::FailedPrecondition { reason, .. }) => assert_eq!(reason, Reason::NoLegalHold),
        other => panic!("expected NO_LEGAL_HOLD, got {other:?}"),
    }
    assert_eq!(t.version(), 4, "a refused release changes nothing");
}

#[test]
fn a_deleted_tenants_retention_does_not_run_while_it_is_held() {
    let mut t = tenant();
    let deleted = Utc::now();
    t.delete(Duration::days(30), deleted).unwrap();
    // Held from day 10 to day 50: the purge time (day 30) passes while held.
    t.set_legal_hold("litigation".into(), deleted + Duration::days(10))
        .unwrap();
    let past_purge = deleted + Duration::days(40);
    // Still restorable while held: its clock is stopped.
    let mut restorable = t.clone();
    assert_eq!(
        restorable.undelete(past_purge).unwrap(),
        TenantStatus::Provisioning
    );
    t.release_legal_hold(deleted + Duration::days(50)).unwrap();
    assert_eq!(
        t.purge_at(),
        Some(deleted + Duration::days(70)),
        "the 40 days held are added"
    );
}

#[test]
fn a_hold_set_before_deletion_adds_only_the_time_held_while_deleted() {
    let mut t = tenant();
    let start = Utc::now();
    t.set_legal_hold("audit".into(), start).unwrap();
    let deleted = start + Duration::days(5);
    t.delete(Duration::days(30), deleted).unwrap();
    t.release_legal_hold(deleted + Duration::days(2)).unwrap();
    assert_eq!(t.purge_at(), Some(deleted + Duration::days(32)));
}

#[test]
fn etag_check_accepts_empty_or_current_only() {
    let mut t = tenant();
    assert!(t.check_etag("").is_ok());
    assert!(t.check_etag("v1").is_ok());
    t.activate(Utc::now()).unwrap();
    assert!(matches!(t.check_etag("v1"), Err(Error::Aborted { .. })));
}

#[test]
fn provisioning_settles_a_provisioning_tenant_and_a_deleted_ones_restore_status() {
    let now = Utc::now();
    let mut t = tenant();
    assert!(matches!(
        t.settle_provisioning(TenantStatus::Suspended, String::new(), now),
        Err(Error::Internal(_))
    ));
    assert!(
        t.settle_provisioning(TenantStatus::Failed, "DNS: down".into(), now)
            .unwrap()
    );
    assert_eq!(
        (t.status(), t.status_reason(), t.version()),
        (TenantStatus::Failed, "DNS: down", 2)
    );
    assert!(
        !t.settle_provisioning(TenantStatus::Active, String::new(), now)
            .unwrap(),
        "only once"
    );
    t.restart_provisioning(now).unwrap();
    assert_eq!(
        (t.status(), t.status_reason()),
        (TenantStatus::Provisioning, "")
    );

    // Deleted while its run went on: still DELETED, and undelete restores the outcome.
    t.delete(Duration::days(30), now).unwrap();
    assert!(
        t.settle_provisioning(TenantStatus::Active, String::new(), now)
            .unwrap()
    );
    assert_eq!(t.status(), TenantStatus::Deleted);
    assert_eq!(t.undelete(now).unwrap(), TenantStatus::Active);

    let mut active = tenant();
    active.activate(now).unwrap();
    assert!(matches!(
        active.restart_provisioning(now),
        Err(Error::FailedPrecondition { .. })
    ));
}

fn deleted(now: DateTime<Utc>) -> Tenant {
    let mut t = tenant();
    t.activate(now).unwrap();
    t.delete(Duration::days(30), now).unwrap();
    t
}

fn refused(result: Result<impl std::fmt::Debug, Error>) -> Reason {
    match result {
        Err(Error::FailedPrecondition { reason, .. }) => reason,
        other => panic!("expected FAILED_PRECONDITION, got {other:?}"),
    }
}

#[test]
fn a_purge_needs_a_deleted_unheld_tenant_past_its_retention_unless_forced() {
    let now = Utc::now();
    let mut live = tenant();
    assert_eq!(
        refused(live.begin_purge(true, now)),
        Reason::InvalidTransition
    );
    let mut t = deleted(now);
    assert_eq!(
        refused(t.begin_purge(false, now + Duration::days(29))),
        Reason::PurgeTimeNotReached
    );
    t.set_legal_hold("case 9".into(), now).unwrap();
    assert_eq!(
        refused(t.begin_purge(true, now + Duration::days(31))),
        Reason::LegalHold
    );
    t.release_legal_hold(now).unwrap();
    let version = t.version();
    t.begin_purge(false, now + Duration::days(31)).unwrap();
    assert_eq!(t.status(), TenantStatus::Purging);
    assert_eq!(t.version(), version + 1);
    assert_eq!(refused(t.begin_purge(true, now)), Reason::PurgeInProgress);

    let mut forced = deleted(now);
    forced.begin_purge(true, now).unwrap();
    assert_eq!(forced.status(), TenantStatus::Purging);
}

#[test]
fn nothing_but_the_purge_changes_a_purging_tenant() {
    let now = Utc::now();
    let mut t = deleted(now);
    t.begin_purge(true, now).unwrap();
    assert_eq!(refused(t.undelete(now)), Reason::PurgeInProgress);
    assert_eq!(
        refused(t.set_legal_hold("late".into(), now)),
        Reason::PurgeInProgress
    );
    assert_eq!(
        refused(t.update(TenantChange::default(), now)),
        Reason::PurgeInProgress
    );
    assert_eq!(
        refused(t.delete(Duration::days(1), now)),
        Reason::PurgeInProgress
    );
    assert_eq!(t.status(), TenantStatus::Purging);
}

#[test]
fn a_tombstone_keeps_identity_and_times_and_drops_everything_else() {
    let now = Utc::now();
    let mut t = tenant();
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("tier".to_owned(), "gold".to_owned());
    t.update(
        TenantChange {
            labels: Some(Labels::parse(labels).unwrap()),
            ..TenantChange::default()
        },
        now,
    )
    .unwrap();
    t.delete(Duration::days(30), now).unwrap();
    assert_eq!(
        refused(t.tombstone(now)),
        Reason::InvalidTransition,
        "only a purging tenant becomes a tombstone"
    );
    t.begin_purge(true, now).unwrap();
    let later = now + Duration::minutes(5);
    t.tombstone(later).unwrap();
    assert_eq!(t.status(), TenantStatus::Purged);
    assert_eq!(t.slug().as_str(), "acme");
    assert_eq!(
        t.display_name().as_str(),
        "acme",
        "the name becomes the slug"
    );
    assert_eq!(t.plan_id().as_str(), "pro");
    assert_eq!(t.contact_email(), None);
    assert!(t.labels().as_map().is_empty());
    assert!(t.config().as_map().is_empty());
    assert_eq!(t.purged_at(), Some(later));
    assert_eq!(t.deleted_at(), Some(now));
    assert_eq!(refused(t.undelete(later)), Reason::TenantPurged);
    assert_eq!(
        refused(t.set_legal_hold("too late".into(), later)),
        Reason::TenantPurged
    );
    assert_eq!(refused(t.tombstone(later)), Reason::TenantPurged);
}

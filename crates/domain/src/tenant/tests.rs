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
    t.set_legal_hold("case 17".into(), now);
    let later = now + Duration::hours(1);
    t.set_legal_hold("case 17, amended".into(), later);
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
    t.set_legal_hold("litigation".into(), deleted + Duration::days(10));
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
    t.set_legal_hold("audit".into(), start);
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

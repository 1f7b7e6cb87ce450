//! Use-case tests on mocked ports: one test per rule.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{TimeZone, Utc};
use tenantd_domain::plan::seeded_plans;
use tenantd_domain::ports::{MockClock, MockIdGenerator, MockPlanRepository, MockTenantRepository};
use tenantd_domain::provisioning::RunState;
use tenantd_domain::tenant_schema::PlacementRule;
use uuid::Uuid;

use super::*;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

fn service(tenants: MockTenantRepository) -> TenantService {
    let mut plans = MockPlanRepository::new();
    plans
        .expect_get()
        .returning(|id| Ok(seeded_plans().into_iter().find(|p| &p.id == id)));
    let mut clock = MockClock::new();
    clock.expect_now().returning(now);
    let mut ids = MockIdGenerator::new();
    ids.expect_new_v7().returning(Uuid::now_v7);
    TenantService::new(
        Arc::new(tenants),
        Arc::new(plans),
        Arc::new(clock),
        Arc::new(ids),
        TenantSettings {
            deletion_retention: Duration::days(30),
            provisioning_timeout: Duration::minutes(30),
        },
        Arc::new(PlacementPolicy::new(
            PlacementRule::Shared("default".into()),
            BTreeMap::from([(
                PlanId::new("enterprise"),
                PlacementRule::Dedicated("silo".into()),
            )]),
            "t_",
        )),
    )
}

fn fields() -> TenantFields {
    TenantFields {
        slug: "acme".into(),
        display_name: "Acme Corp".into(),
        plan_id: "pro".into(),
        contact_email: "ops@acme.example".into(),
        labels: BTreeMap::from([("env".into(), "prod".into())]),
        config: serde_json::Map::new(),
    }
}

fn active_tenant() -> Tenant {
    let new = commands::validate_new(&fields()).unwrap();
    let mut t = Tenant::create(TenantId::from_uuid(Uuid::now_v7()).unwrap(), new, now());
    t.activate(now()).unwrap();
    t
}

fn violations(err: Error) -> Vec<(String, String)> {
    match err {
        Error::InvalidArgument { violations: v, .. } => {
            v.into_iter().map(|v| (v.field, v.description)).collect()
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

fn returning_tenant(repo: &mut MockTenantRepository, tenant: &Tenant) {
    let stored = tenant.clone();
    repo.expect_get()
        .returning(move |_| Ok(Some(stored.clone())));
}

#[tokio::test]
async fn create_reports_every_invalid_field_by_path_and_stores_nothing() {
    let mut repo = MockTenantRepository::new();
    repo.expect_create().never();
    let cmd = CreateTenant {
        tenant: TenantFields {
            slug: "Bad Slug".into(),
            display_name: String::new(),
            plan_id: "pro".into(),
            contact_email: "not-an-email".into(),
            labels: BTreeMap::from([("UPPER".into(), "x".into())]),
            config: serde_json::Map::new(),
        },
        request_id: String::new(),
    };
    let fields: Vec<_> = violations(service(repo).create(cmd).await.unwrap_err())
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    assert_eq!(
        fields,
        [
            "tenant.slug",
            "tenant.display_name",
            "tenant.contact_email",
            "tenant.labels"
        ]
    );
}

#[tokio::test]
async fn create_refuses_an_unknown_plan() {
    let mut repo = MockTenantRepository::new();
    repo.expect_create().never();
    let mut f = fields();
    f.plan_id = "platinum".into();
    let err = service(repo)
        .create(CreateTenant {
            tenant: f,
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(err)[0].0, "tenant.plan_id");
}

#[tokio::test]
async fn create_stores_tenant_events_and_idempotency_record_in_one_call() {
    let mut repo = MockTenantRepository::new();
    repo.expect_find_idempotency().returning(|_, _| Ok(None));
    let seen = Arc::new(Mutex::new(None));
    let sink = seen.clone();
    repo.expect_create()
        .times(1)
        .returning(move |tenant, run, events, record| {
            *sink.lock().unwrap() = Some((tenant.clone(), run.clone(), events.to_vec(), record));
            Ok(())
        });
    let created = service(repo)
        .create(CreateTenant {
            tenant: fields(),
            request_id: "req-1".into(),
        })
        .await
        .unwrap();

    let (stored, run, events, record) = seen.lock().unwrap().take().unwrap();
    assert_eq!(stored, created);
    // The tenant waits for its run: PROVISIONING, the run's first step due now.
    assert_eq!(created.status(), TenantStatus::Provisioning);
    assert_eq!(created.slug().as_str(), "acme");
    assert_eq!(run.tenant_id, created.id());
    assert_eq!(run.state, RunState::Running);
    assert_eq!(run.due_at(), Some(now()));
    assert_eq!(run.deadline, now() + Duration::minutes(30));
    assert_eq!(created.provisioning(), Some(&run.summary()));
    let kinds: Vec<_> = events.iter().map(|e| e.kind.type_name()).collect();
    assert_eq!(kinds, ["tenant.v1.TenantCreated"]);
    assert!(
        events
            .iter()
            .all(|e| e.subject.tenant() == Some(created.id()))
    );
    let record = record.expect("idempotency record");
    assert_eq!(record.request_id, "req-1");
    assert_eq!(record.response, created);
    assert_eq!(record.expires_at, now() + Duration::hours(24));
}

#[tokio::test]
async fn a_new_tenant_is_placed_by_its_plan_and_stored_with_its_placement() {
    for (plan, database, dedicated) in [("pro", "default", false), ("enterprise", "silo", true)] {
        let mut repo = MockTenantRepository::new();
        let stored = Arc::new(Mutex::new(None));
        let sink = stored.clone();
        repo.expect_create()
            .times(1)
            .returning(move |tenant, _, _, _| {
                *sink.lock().unwrap() = Some(tenant.clone());
                Ok(())
            });
        let mut f = fields();
        f.plan_id = plan.into();
        let created = service(repo)
            .create(CreateTenant {
                tenant: f,
                request_id: String::new(),
            })
            .await
            .unwrap();
        let placement = created.placement().expect("placed").clone();
        let schema = format!("t_{}", created.id().as_uuid().simple());
        assert_eq!(placement.tenant_database, database, "{plan}");
        assert_eq!(placement.schema, schema, "{plan}");
        assert_eq!(placement.dedicated.is_some(), dedicated, "{plan}");
        let written = stored.lock().unwrap().clone().expect("stored");
        assert_eq!(written.placement(), Some(&placement));
    }
}

#[tokio::test]
async fn create_without_request_id_stores_no_idempotency_record() {
    let mut repo = MockTenantRepository::new();
    repo.expect_find_idempotency().never();
    repo.expect_create()
        .withf(|_, _, _, record| record.is_none())
        .times(1)
        .returning(|_, _, _, _| Ok(()));
    service(repo)
        .create(CreateTenant {
            tenant: fields(),
            request_id: String::new(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn create_retry_with_same_request_id_returns_the_original_tenant() {
    let original = active_tenant();
    let fingerprint = commands::fingerprint(&commands::validate_new(&fields()).unwrap());
    let record = IdempotencyRecord {
        request_id: "req-1".into(),
        fingerprint,
        response: original.clone(),
        expires_at: now() + Duration::hours(1),
    };
    let mut repo = MockTenantRepository::new();
    repo.expect_find_idempotency()
        .withf(|id, _| id == "req-1")
        .returning(move |_, _| Ok(Some(record.clone())));
    repo.expect_create().never();
    let replayed = service(repo)
        .create(CreateTenant {
            tenant: fields(),
            request_id: "req-1".into(),
        })
        .await
        .unwrap();
    assert_eq!(replayed, original);
}

#[tokio::test]
async fn create_reusing_request_id_with_another_body_is_invalid() {
    let record = IdempotencyRecord {
        request_id: "req-1".into(),
        fingerprint: "something-else".into(),
        response: active_tenant(),
        expires_at: now() + Duration::hours(1),
    };
    let mut repo = MockTenantRepository::new();
    repo.expect_find_idempotency()
        .returning(move |_, _| Ok(Some(record.clone())));
    repo.expect_create().never();
    let err = service(repo)
        .create(CreateTenant {
            tenant: fields(),
            request_id: "req-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(err)[0].0, "request_id");
}

#[tokio::test]
async fn create_losing_an_idempotency_race_answers_like_the_winner() {
    let winner = active_tenant();
    let fingerprint = commands::fingerprint(&commands::validate_new(&fields()).unwrap());
    let record = IdempotencyRecord {
        request_id: "req-1".into(),
        fingerprint,
        response: winner.clone(),
        expires_at: now() + Duration::hours(1),
    };
    let mut repo = MockTenantRepository::new();
    let mut seq = mockall::Sequence::new();
    repo.expect_find_idempotency()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(None));
    repo.expect_create()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Err(RepoError::IdempotencyKeyTaken));
    repo.expect_find_idempotency()
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, _| Ok(Some(record.clone())));
    let got = service(repo)
        .create(CreateTenant {
            tenant: fields(),
            request_id: "req-1".into(),
        })
        .await
        .unwrap();
    assert_eq!(got, winner);
}

#[tokio::test]
async fn create_with_taken_slug_is_already_exists() {
    let mut repo = MockTenantRepository::new();
    repo.expect_create()
        .returning(|t, _, _, _| Err(RepoError::SlugTaken(t.slug().to_string())));
    let err = service(repo)
        .create(CreateTenant {
            tenant: fields(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::AlreadyExists {
                reason: Reason::SlugTaken,
                resource: "tenant",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn create_with_oversized_request_id_is_invalid() {
    let err = service(MockTenantRepository::new())
        .create(CreateTenant {
            tenant: fields(),
            request_id: "x".repeat(129),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(err)[0].0, "request_id");
}

#[tokio::test]
async fn get_validates_the_id_and_reports_missing_tenants() {
    let mut repo = MockTenantRepository::new();
    repo.expect_get().returning(|_| Ok(None));
    let svc = service(repo);
    assert_eq!(
        violations(svc.get("42").await.unwrap_err())[0].0,
        "tenant_id"
    );
    let missing = Uuid::now_v7().to_string();
    assert!(matches!(
        svc.get(&missing).await,
        Err(Error::NotFound {
            resource: "tenant",
            ..
        })
    ));
}

#[tokio::test]
async fn list_passes_filters_and_pages_with_a_token() {
    let tenants: Vec<Tenant> = (0..3).map(|_| active_tenant()).collect();
    let second_id = tenants[1].id();
    let all = tenants.clone();
    let mut repo = MockTenantRepository::new();
    repo.expect_list().returning(move |q| {
        assert_eq!(q.plan_id.as_ref().map(PlanId::as_str), Some("pro"));
        assert_eq!(q.slug_prefix.as_deref(), Some("ac"));
        assert!(!q.include_deleted);
        Ok(all
            .iter()
            .filter(|t| q.after.is_none_or(|a| t.id() > a))
            .take(q.limit)
            .cloned()
            .collect())
    });
    let svc = service(repo);
    let cmd = ListTenants {
        page_size: 2,
        plan_id: "pro".into(),
        slug_prefix: "ac".into(),
        ..ListTenants::default()
    };
    let first = svc.list(cmd.clone()).await.unwrap();
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.items[1].id(), second_id);
    assert!(!first.next_page_token.is_empty());
    let second = svc
        .list(ListTenants {
            page_token: first.next_page_token.clone(),
            ..cmd.clone()
        })
        .await
        .unwrap();
    assert_eq!(second.items, tenants[2..]);
    assert!(second.next_page_token.is_empty());

    let other_filters = ListTenants {
        plan_id: "free".into(),
        page_token: first.next_page_token,
        ..cmd
    };
    assert_eq!(
        violations(svc.list(other_filters).await.unwrap_err())[0].0,
        "page_token"
    );
}

#[tokio::test]
async fn list_by_deleted_status_includes_deleted_and_bad_email_filter_is_invalid() {
    let mut repo = MockTenantRepository::new();
    repo.expect_list()
        .withf(|q| q.include_deleted && q.status == Some(TenantStatus::Deleted))
        .times(1)
        .returning(|_| Ok(vec![]));
    let svc = service(repo);
    svc.list(ListTenants {
        status: Some(TenantStatus::Deleted),
        ..ListTenants::default()
    })
    .await
    .unwrap();
    let err = svc
        .list(ListTenants {
            contact_email: "nope".into(),
            ..ListTenants::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(err)[0].0, "contact_email");
}

fn update(tenant: &Tenant, mask: &[&str], change: impl FnOnce(&mut TenantFields)) -> UpdateTenant {
    let mut f = TenantFields::default();
    change(&mut f);
    UpdateTenant {
        tenant_id: tenant.id().to_string(),
        etag: String::new(),
        tenant: f,
        update_mask: mask.iter().map(|p| (*p).to_owned()).collect(),
    }
}

#[tokio::test]
async fn update_changes_only_masked_fields_and_emits_what_changed() {
    let tenant = active_tenant();
    let mut repo = MockTenantRepository::new();
    returning_tenant(&mut repo, &tenant);
    repo.expect_update()
        .withf(|t, expected, events| {
            *expected == 2
                && t.version() == 3
                && matches!(&events[0].kind, EventKind::TenantUpdated { changed_fields, .. } if changed_fields == &["display_name"])
        })
        .times(1)
        .returning(|_, _, _| Ok(()));
    let cmd = update(&tenant, &["display_name"], |f| {
        f.display_name = "Acme Inc".into();
        f.plan_id = "free".into(); // not masked: must not change
    });
    let updated = service(repo).update(cmd).await.unwrap();
    assert_eq!(updated.display_name().as_str(), "Acme Inc");
    assert_eq!(updated.plan_id().as_str(), "pro");
}

#[tokio::test]
async fn update_with_unknown_or_read_only_paths_is_invalid() {
    let tenant = active_tenant();
    let svc = service(MockTenantRepository::new());
    for path in ["nickname", "slug", "status"] {
        let err = svc
            .update(update(&tenant, &[path], |_| {}))
            .await
            .unwrap_err();
        assert_eq!(violations(err)[0].0, "update_mask", "{path}");
    }
    let err = svc.update(update(&tenant, &[], |_| {})).await.unwrap_err();
    assert_eq!(
        violations(err)[0].0,
        "update_mask",
        "empty mask and empty tenant"
    );
}

#[tokio::test]
async fn update_validates_masked_values_by_path() {
    let tenant = active_tenant();
    let err = service(MockTenantRepository::new())
        .update(update(&tenant, &["contact_email", "plan_id"], |f| {
            f.contact_email = "x".into();
        }))
        .await
        .unwrap_err();
    let fields: Vec<_> = violations(err).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, ["tenant.contact_email", "tenant.plan_id"]);
}

#[tokio::test]
async fn update_to_an_unknown_plan_is_invalid() {
    let tenant = active_tenant();
    let err = service(MockTenantRepository::new())
        .update(update(&tenant, &["plan_id"], |f| f.plan_id = "gold".into()))
        .await
        .unwrap_err();
    assert_eq!(violations(err)[0].0, "tenant.plan_id");
}

#[tokio::test]
async fn update_with_stale_etag_is_aborted_without_writing() {
    let tenant = active_tenant();
    let mut repo = MockTenantRepository::new();
    returning_tenant(&mut repo, &tenant);
    repo.expect_update().never();
    let mut cmd = update(&tenant, &["display_name"], |f| {
        f.display_name = "New".into();
    });
    cmd.etag = "v1".into();
    assert!(matches!(
        service(repo).update(cmd).await,
        Err(Error::Aborted {
            reason: Reason::EtagMismatch,
            ..
        })
    ));
}

#[tokio::test]
async fn update_that_changes_nothing_writes_nothing() {
    let tenant = active_tenant();
    let mut repo = MockTenantRepository::new();
    returning_tenant(&mut repo, &tenant);
    repo.expect_update().never();
    let same = update(&tenant, &["display_name"], |f| {
        f.display_name = "Acme Corp".into();
    });
    assert_eq!(service(repo).update(same).await.unwrap(), tenant);
}

#[tokio::test]
async fn lost_race_without_etag_is_retried_and_with_etag_is_aborted() {
    let tenant = active_tenant();
    let mut repo = MockTenantRepository::new();
    returning_tenant(&mut repo, &tenant);
    let calls = Arc::new(Mutex::new(0));
    let counter = calls.clone();
    repo.expect_update().returning(move |_, _, _| {
        let mut n = counter.lock().unwrap();
        *n += 1;
        if *n == 1 {
            Err(RepoError::VersionConflict)
        } else {
            Ok(())
        }
    });
    let svc = service(repo);
    svc.suspend(&tenant.id().to_string(), "billing", "")
        .await
        .unwrap();
    assert_eq!(*calls.lock().unwrap(), 2);

    let mut repo = MockTenantRepository::new();
    returning_tenant(&mut repo, &tenant);
    repo.expect_update()
        .times(1)
        .returning(|_, _, _| Err(RepoError::VersionConflict));
    let err = service(repo)
        .suspend(&tenant.id().to_string(), "billing", "v2")
        .await;
    assert!(matches!(
        err,
        Err(Error::Aborted {
            reason: Reason::ConcurrentModification,
            ..
        })
    ));
}

#[tokio::test]
async fn delete_sets_purge_time_from_retention_and_emits_tenant_deleted() {
    let tenant = active_tenant();
    let mut repo = MockTenantRepository::new();
    returning_tenant(&mut repo, &tenant);
    repo.expect_update()
        .withf(|_, _, events| matches!(events[0].kind, EventKind::TenantDeleted { purge_at } if purge_at == now() + Duration::days(30)))
        .times(1)
        .returning(|_, _, _| Ok(()));
    let deleted = service(repo)
        .delete(&tenant.id().to_string(), "")
        .await
        .unwrap();
    assert_eq!(deleted.status(), TenantStatus::Deleted);
    assert_eq!(deleted.deleted_at(), Some(now()));
    assert_eq!(deleted.purge_at(), Some(now() + Duration::days(30)));
}

#[tokio::test]
async fn undelete_restores_the_previous_status() {
    let mut tenant = active_tenant();
    tenant.delete(Duration::days(30), now()).unwrap();
    let mut repo = MockTenantRepository::new();
    returning_tenant(&mut repo, &tenant);
    repo.expect_update()
        .withf(|_, _, events| {
            matches!(
                events[0].kind,
                EventKind::TenantUndeleted {
                    status: TenantStatus::Active
                }
            )
        })
        .returning(|_, _, _| Ok(()));
    let restored = service(repo)
        .undelete(&tenant.id().to_string(), "")
        .await
        .unwrap();
    assert_eq!(restored.status(), TenantStatus::Active);
}

#[tokio::test]
async fn illegal_transitions_are_failed_precondition_and_write_nothing() {
    let tenant = active_tenant();
    let mut repo = MockTenantRepository::new();
    returning_tenant(&mut repo, &tenant);
    repo.expect_update().never();
    let svc = service(repo);
    let id = tenant.id().to_string();
    assert!(matches!(
        svc.resume(&id, "").await,
        Err(Error::FailedPrecondition {
            reason: Reason::InvalidTransition,
            ..
        })
    ));
    assert!(matches!(
        svc.undelete(&id, "").await,
        Err(Error::FailedPrecondition {
            reason: Reason::InvalidTransition,
            ..
        })
    ));
}

#[tokio::test]
async fn suspend_reason_is_bounded_and_recorded() {
    let tenant = active_tenant();
    let mut repo = MockTenantRepository::new();
    returning_tenant(&mut repo, &tenant);
    repo.expect_update()
        .withf(|t, _, events| {
            t.status_reason() == "unpaid"
                && matches!(&events[0].kind, EventKind::TenantSuspended { reason } if reason == "unpaid")
        })
        .returning(|_, _, _| Ok(()));
    let svc = service(repo);
    let id = tenant.id().to_string();
    let long = "x".repeat(501);
    assert_eq!(
        violations(svc.suspend(&id, &long, "").await.unwrap_err())[0].0,
        "reason"
    );
    assert_eq!(
        svc.suspend(&id, " unpaid ", "").await.unwrap().status(),
        TenantStatus::Suspended
    );
}

#[tokio::test]
async fn mutations_on_missing_tenants_are_not_found() {
    let mut repo = MockTenantRepository::new();
    repo.expect_get().returning(|_| Ok(None));
    let svc = service(repo);
    let id = Uuid::now_v7().to_string();
    assert!(matches!(
        svc.delete(&id, "").await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        svc.resume(&id, "").await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn an_update_that_changes_nothing_on_a_deleted_tenant_is_still_refused() {
    let mut tenant = active_tenant();
    tenant.delete(Duration::days(30), now()).unwrap();
    let mut repo = MockTenantRepository::new();
    returning_tenant(&mut repo, &tenant);
    repo.expect_update().never();
    let same = update(&tenant, &["display_name"], |f| {
        f.display_name = "Acme Corp".into();
    });
    assert!(matches!(
        service(repo).update(same).await,
        Err(Error::FailedPrecondition {
            reason: Reason::TenantDeleted,
            ..
        })
    ));
}

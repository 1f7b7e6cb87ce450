//! Contracts of [`TenantRepository`](tenantd_domain::ports::TenantRepository) and
//! [`EventLog`](tenantd_domain::ports::EventLog).

use std::collections::BTreeMap;

use chrono::Duration;
use tenantd_domain::ports::{IdempotencyRecord, TenantQuery};
use tenantd_domain::{ContactEmail, EventKind, PlanId, RepoError, Tenant, TenantStatus};

use super::Stores;
use super::fixtures::{created, event, now, run_for, slug, tenant};

/// `t` as the store has it now (it must be there).
async fn stored(stores: &Stores, t: &Tenant) -> Tenant {
    stores
        .tenants
        .get(t.id())
        .await
        .expect("get")
        .expect("stored")
}

/// A stored tenant reads back equal, field for field.
pub async fn create_then_get_round_trips_every_field(stores: Stores) {
    let mut t = tenant(&slug("round"), "pro", &[("env", "prod"), ("tier", "")]);
    t.activate(now()).expect("activate");
    let run = run_for(&t);
    stores
        .tenants
        .create(&t, &run, &[created(&t)], None)
        .await
        .expect("create");
    let got = stored(&stores, &t).await;
    // Reads carry the latest run's summary.
    assert_eq!(got, t.with_provisioning(Some(run.summary())));
}

/// Reading an id never stored is `None`, not an error.
pub async fn get_of_unknown_id_is_none(stores: Stores) {
    let t = tenant(&slug("ghost"), "free", &[]);
    assert!(stores.tenants.get(t.id()).await.expect("get").is_none());
}

/// A second tenant with a taken slug is refused, and neither it nor its events are stored.
pub async fn create_with_taken_slug_fails_and_stores_nothing(stores: Stores) {
    let s = slug("dup");
    let first = tenant(&s, "free", &[]);
    stores
        .tenants
        .create(&first, &run_for(&first), &[created(&first)], None)
        .await
        .expect("first");
    let second = tenant(&s, "pro", &[]);
    let err = stores
        .tenants
        .create(&second, &run_for(&second), &[created(&second)], None)
        .await
        .expect_err("duplicate slug");
    assert_eq!(err, RepoError::SlugTaken(s));
    assert!(
        stores
            .tenants
            .get(second.id())
            .await
            .expect("get")
            .is_none()
    );
    let events = events_of(&stores, &second).await;
    assert!(
        events.is_empty(),
        "events of a refused create must not be stored"
    );
}

/// Soft deletion keeps the slug reserved until purge.
pub async fn slug_of_a_deleted_tenant_stays_taken(stores: Stores) {
    let s = slug("gone");
    let mut first = tenant(&s, "free", &[]);
    stores
        .tenants
        .create(&first, &run_for(&first), &[], None)
        .await
        .expect("create");
    first.delete(Duration::days(30), now()).expect("delete");
    stores
        .tenants
        .update(&first, 1, &[])
        .await
        .expect("store delete");
    let again = tenant(&s, "free", &[]);
    assert!(matches!(
        stores
            .tenants
            .create(&again, &run_for(&again), &[], None)
            .await,
        Err(RepoError::SlugTaken(_))
    ));
}

/// Events written with a create are listed in the order given.
pub async fn create_appends_its_events_in_order(stores: Stores) {
    let mut t = tenant(&slug("events"), "basic", &[]);
    let first = created(&t);
    t.activate(now()).expect("activate");
    let second = event(
        &t,
        EventKind::TenantActivated {
            plan_id: "basic".into(),
        },
    );
    stores
        .tenants
        .create(&t, &run_for(&t), &[first.clone(), second.clone()], None)
        .await
        .expect("create");
    let listed = events_of(&stores, &t).await;
    assert_eq!(listed, vec![first, second]);
}

/// An update at the stored version replaces the tenant and appends its events.
pub async fn update_at_expected_version_replaces_and_appends_events(stores: Stores) {
    let mut t = tenant(&slug("upd"), "pro", &[]);
    let run = run_for(&t);
    stores
        .tenants
        .create(&t, &run, &[], None)
        .await
        .expect("create");
    t.activate(now()).expect("activate");
    t.suspend("unpaid".into(), now()).expect("suspend");
    let suspended = event(
        &t,
        EventKind::TenantSuspended {
            reason: "unpaid".into(),
        },
    );
    stores
        .tenants
        .update(&t, 1, std::slice::from_ref(&suspended))
        .await
        .expect("update");
    let got = stored(&stores, &t).await;
    assert_eq!(got, t.clone().with_provisioning(Some(run.summary())));
    assert_eq!(got.version(), 3);
    assert_eq!(got.status_reason(), "unpaid");
    let listed = events_of(&stores, &t).await;
    assert_eq!(listed, vec![suspended]);
}

/// A legal hold is stored with its reason and start, survives other changes, and is gone
/// once released; the released tenant's moved purge time is stored too.
pub async fn a_legal_hold_round_trips_until_released(stores: Stores) {
    let mut t = tenant(&slug("held"), "pro", &[]);
    let run = run_for(&t);
    stores
        .tenants
        .create(&t, &run, &[], None)
        .await
        .expect("create");
    let deleted_at = now() - chrono::Duration::days(3);
    t.delete(chrono::Duration::days(30), deleted_at)
        .expect("delete");
    t.set_legal_hold(
        "case 2026-114".into(),
        deleted_at + chrono::Duration::days(1),
    )
    .expect("a deleted tenant can be held");
    stores.tenants.update(&t, 1, &[]).await.expect("update");
    let got = stored(&stores, &t).await;
    assert_eq!(got.legal_hold(), t.legal_hold());
    assert!(got.legal_hold().is_some());
    assert_eq!(got, t.clone().with_provisioning(Some(run.summary())));
    let version = t.version();
    t.release_legal_hold(now()).expect("release");
    stores
        .tenants
        .update(&t, version, &[])
        .await
        .expect("update");
    let got = stored(&stores, &t).await;
    assert_eq!(got.legal_hold(), None);
    assert_eq!(got.purge_at(), t.purge_at());
    assert!(got.purge_at() > Some(deleted_at + chrono::Duration::days(30)));
}

/// An update based on an old version conflicts; the stored tenant and log are unchanged.
pub async fn update_at_stale_version_conflicts_and_stores_nothing(stores: Stores) {
    let mut t = tenant(&slug("stale"), "pro", &[]);
    let run = run_for(&t);
    stores
        .tenants
        .create(&t, &run, &[], None)
        .await
        .expect("create");
    let original = t.clone().with_provisioning(Some(run.summary()));
    t.activate(now()).expect("activate");
    let activated = event(
        &t,
        EventKind::TenantActivated {
            plan_id: "pro".into(),
        },
    );
    let err = stores
        .tenants
        .update(&t, 7, &[activated])
        .await
        .expect_err("stale version");
    assert_eq!(err, RepoError::VersionConflict);
    let got = stored(&stores, &t).await;
    assert_eq!(got, original);
    assert!(events_of(&stores, &t).await.is_empty());
}

/// Updating a tenant that was never stored is `NotFound`.
pub async fn update_of_unknown_tenant_is_not_found(stores: Stores) {
    let t = tenant(&slug("nobody"), "pro", &[]);
    assert_eq!(
        stores.tenants.update(&t, 1, &[]).await,
        Err(RepoError::NotFound)
    );
}

/// A create's idempotency record is found with its response until it expires.
pub async fn idempotency_record_is_found_until_it_expires(stores: Stores) {
    let t = tenant(&slug("idem"), "pro", &[]);
    let request_id = format!("req-{}", t.id());
    let record = IdempotencyRecord {
        request_id: request_id.clone(),
        fingerprint: "abc123".into(),
        response: t.clone(),
        expires_at: now() + Duration::hours(1),
    };
    stores
        .tenants
        .create(&t, &run_for(&t), &[], Some(record.clone()))
        .await
        .expect("create");
    let found = stores
        .tenants
        .find_idempotency(&request_id, now())
        .await
        .expect("find")
        .expect("record");
    assert_eq!(found, record);
    let later = now() + Duration::hours(2);
    assert!(
        stores
            .tenants
            .find_idempotency(&request_id, later)
            .await
            .expect("find")
            .is_none()
    );
    assert!(
        stores
            .tenants
            .find_idempotency("req-unknown", now())
            .await
            .expect("find")
            .is_none()
    );
}

/// Two creates with one request id: the second is refused whole (no tenant, no events).
pub async fn second_create_with_same_request_id_is_refused_and_stores_nothing(stores: Stores) {
    let first = tenant(&slug("race-a"), "pro", &[]);
    let request_id = format!("req-{}", first.id());
    let record = |t: &tenantd_domain::Tenant| IdempotencyRecord {
        request_id: request_id.clone(),
        fingerprint: "same".into(),
        response: t.clone(),
        expires_at: now() + Duration::hours(1),
    };
    stores
        .tenants
        .create(
            &first,
            &run_for(&first),
            &[created(&first)],
            Some(record(&first)),
        )
        .await
        .expect("first");
    let second = tenant(&slug("race-b"), "pro", &[]);
    let err = stores
        .tenants
        .create(
            &second,
            &run_for(&second),
            &[created(&second)],
            Some(record(&second)),
        )
        .await
        .expect_err("same request id");
    assert_eq!(err, RepoError::IdempotencyKeyTaken);
    assert!(
        stores
            .tenants
            .get(second.id())
            .await
            .expect("get")
            .is_none()
    );
    assert!(events_of(&stores, &second).await.is_empty());
}

/// Listing walks tenants in id (creation) order, resuming strictly after a given id.
pub async fn list_pages_in_id_order(stores: Stores) {
    let prefix = slug("page");
    let mut ids = Vec::new();
    for i in 0..5 {
        let t = tenant(&format!("{prefix}-{i}"), "free", &[]);
        stores
            .tenants
            .create(&t, &run_for(&t), &[], None)
            .await
            .expect("create");
        ids.push(t.id());
    }
    let query = |after, limit| TenantQuery {
        after,
        limit,
        slug_prefix: Some(prefix.clone()),
        ..TenantQuery::default()
    };
    let first: Vec<_> = stores
        .tenants
        .list(&query(None, 2))
        .await
        .expect("list")
        .iter()
        .map(tenantd_domain::Tenant::id)
        .collect();
    assert_eq!(first, ids[..2]);
    let rest: Vec<_> = stores
        .tenants
        .list(&query(Some(ids[1]), 10))
        .await
        .expect("list")
        .iter()
        .map(tenantd_domain::Tenant::id)
        .collect();
    assert_eq!(rest, ids[2..]);
}

/// Status, plan, labels, slug prefix and contact email filters combine with AND; deleted
/// tenants show only when asked for.
pub async fn list_filters_combine_and_hide_deleted_by_default(stores: Stores) {
    let prefix = slug("filt");
    let mut a = tenant(
        &format!("{prefix}-a"),
        "pro",
        &[("env", "prod"), ("team", "core")],
    );
    a.activate(now()).expect("activate");
    let b = tenant(&format!("{prefix}-b"), "pro", &[("env", "dev")]);
    let mut c = tenant(&format!("{prefix}-c"), "free", &[("env", "prod")]);
    c.activate(now()).expect("activate");
    let mut d = tenant(&format!("{prefix}-d"), "pro", &[("env", "prod")]);
    d.delete(Duration::days(30), now()).expect("delete");
    for t in [&a, &b, &c, &d] {
        stores
            .tenants
            .create(t, &run_for(t), &[], None)
            .await
            .expect("create");
    }
    let slugs = |query| suffixes(&stores, &prefix, query);
    assert_eq!(slugs(TenantQuery::default()).await, ["a", "b", "c"]);
    assert_eq!(
        slugs(TenantQuery {
            include_deleted: true,
            ..TenantQuery::default()
        })
        .await,
        ["a", "b", "c", "d"]
    );
    assert_eq!(
        slugs(TenantQuery {
            plan_id: Some(PlanId::new("pro")),
            ..TenantQuery::default()
        })
        .await,
        ["a", "b"]
    );
    assert_eq!(
        slugs(TenantQuery {
            status: Some(TenantStatus::Active),
            plan_id: Some(PlanId::new("pro")),
            ..TenantQuery::default()
        })
        .await,
        ["a"]
    );
    let prod = BTreeMap::from([("env".to_owned(), "prod".to_owned())]);
    assert_eq!(
        slugs(TenantQuery {
            labels: prod.clone(),
            ..TenantQuery::default()
        })
        .await,
        ["a", "c"]
    );
    let prod_core = BTreeMap::from([
        ("env".to_owned(), "prod".to_owned()),
        ("team".to_owned(), "core".to_owned()),
    ]);
    assert_eq!(
        slugs(TenantQuery {
            labels: prod_core,
            ..TenantQuery::default()
        })
        .await,
        ["a"]
    );
    assert_eq!(
        slugs(TenantQuery {
            slug_prefix: Some(format!("{prefix}-c")),
            ..TenantQuery::default()
        })
        .await,
        ["c"]
    );
    let email = ContactEmail::parse(&format!("OPS@{}.EXAMPLE", b.slug())).expect("email");
    assert_eq!(
        slugs(TenantQuery {
            contact_email: Some(email),
            ..TenantQuery::default()
        })
        .await,
        ["b"]
    );
    assert_eq!(
        slugs(TenantQuery {
            status: Some(TenantStatus::Deleted),
            include_deleted: true,
            ..TenantQuery::default()
        })
        .await,
        ["d"]
    );
}

/// Every event of `tenant` (the suites store only a few).
async fn events_of(stores: &Stores, tenant: &tenantd_domain::Tenant) -> Vec<tenantd_domain::Event> {
    stores
        .events
        .list(Some(tenant.id()), None, 10)
        .await
        .expect("events")
}

/// The last `-`-separated part of the slugs `query` lists (defaulting the prefix).
async fn suffixes(stores: &Stores, prefix: &str, query: TenantQuery) -> Vec<String> {
    let query = TenantQuery {
        limit: 100,
        slug_prefix: query.slug_prefix.or_else(|| Some(prefix.to_owned())),
        ..query
    };
    stores
        .tenants
        .list(&query)
        .await
        .expect("list")
        .iter()
        .map(|t| {
            t.slug()
                .as_str()
                .rsplit('-')
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// The event log pages by event id and filters by tenant.
pub async fn event_log_pages_after_an_event_and_filters_by_tenant(stores: Stores) {
    let mut a = tenant(&slug("log-a"), "pro", &[]);
    let b = tenant(&slug("log-b"), "pro", &[]);
    let a_created = created(&a);
    stores
        .tenants
        .create(&a, &run_for(&a), std::slice::from_ref(&a_created), None)
        .await
        .expect("create a");
    stores
        .tenants
        .create(&b, &run_for(&b), &[created(&b)], None)
        .await
        .expect("create b");
    a.activate(now()).expect("activate");
    let a_activated = event(
        &a,
        EventKind::TenantActivated {
            plan_id: "pro".into(),
        },
    );
    stores
        .tenants
        .update(&a, 1, std::slice::from_ref(&a_activated))
        .await
        .expect("update a");

    let of_a = events_of(&stores, &a).await;
    assert_eq!(of_a, vec![a_created.clone(), a_activated.clone()]);
    let after_first = stores
        .events
        .list(Some(a.id()), Some(a_created.id), 10)
        .await
        .expect("events");
    assert_eq!(after_first, vec![a_activated]);
    let limited = stores
        .events
        .list(Some(a.id()), None, 1)
        .await
        .expect("events");
    assert_eq!(limited, vec![a_created.clone()]);
    let all = stores
        .events
        .list(None, Some(a_created.id), 100)
        .await
        .expect("events");
    assert!(
        all.iter().any(|e| e.subject.tenant() == Some(b.id())),
        "unfiltered list spans tenants"
    );
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "id order");
}

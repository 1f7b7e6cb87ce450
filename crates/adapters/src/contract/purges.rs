//! Contract of [`PurgeRepository`](tenantd_domain::ports::PurgeRepository): a purge starts
//! atomically with its tenant's move to PURGING, once; workers claim due purges one at a
//! time under fencing leases; the tombstone lands with the purge's end and its events or
//! not at all; the sweeper's queries find exactly the purgeable tenants and the slugs to
//! free.

use chrono::Duration;
use tenantd_domain::ports::{IdempotencyRecord, Lease, PurgeWrite};
use tenantd_domain::purge::{Purge, PurgeStepKind};
use tenantd_domain::{Event, EventKind, RepoError, Tenant, TenantStatus};

use super::Stores;
use super::fixtures::{event, now, run_for, slug, tenant};

/// A stored tenant, deleted at `deleted_days_ago` with a 30-day retention.
async fn deleted(stores: &Stores, prefix: &str, deleted_days_ago: i64) -> Tenant {
    let mut t = tenant(&slug(prefix), "free", &[]);
    stores
        .tenants
        .create(&t, &run_for(&t), &[], None)
        .await
        .expect("create");
    let version = t.version();
    t.delete(Duration::days(30), now() - Duration::days(deleted_days_ago))
        .expect("delete");
    stores
        .tenants
        .update(&t, version, &[])
        .await
        .expect("store the deletion");
    t
}

/// Starts `t`'s purge (forced); returns the tenant as stored and its purge.
async fn started(stores: &Stores, mut t: Tenant) -> (Tenant, Purge) {
    let version = t.version();
    t.begin_purge(true, now()).expect("purgeable");
    let purge = Purge::new(t.id(), true, "admin".into(), now());
    let start = event(&t, EventKind::TenantPurgeStarted { forced: true });
    stores
        .purges
        .start(&t, version, &purge, &[start])
        .await
        .expect("start");
    (t, purge)
}

/// `purge` with every step done, as its last write stores it.
fn all_done(purge: &Purge) -> Purge {
    let mut done = purge.clone();
    for kind in PurgeStepKind::ORDER {
        done.start(kind, now()).expect("start");
        done.succeed(kind, now()).expect("succeed");
    }
    done.version = purge.version + 1;
    done
}

/// Stores `purge` with its first step started under `lease`; checks it reads back.
async fn first_step_started(stores: &Stores, purge: &Purge, lease: &Lease) -> Purge {
    let mut next = purge.clone();
    next.start(PurgeStepKind::Database, now()).expect("start");
    next.version = purge.version + 1;
    let write = PurgeWrite {
        purge: &next,
        expected_version: purge.version,
        lease,
        renew_until: now() + Duration::seconds(30),
        tenant: None,
        events: &[],
    };
    stores.purges.save(write).await.expect("save");
    let read = stores.purges.get(purge.tenant_id).await.expect("get");
    assert_eq!(read.as_ref(), Some(&next));
    next
}

async fn kinds_of(stores: &Stores, t: &Tenant) -> Vec<&'static str> {
    let events = stores
        .events
        .list(Some(t.id()), None, 100)
        .await
        .expect("events");
    events.iter().map(|e| e.kind.type_name()).collect()
}

/// Contract: a purge is stored with the tenant's PURGING status and its event, and a second
/// start (a racing replica, a stale version) stores nothing.
pub async fn a_started_purge_makes_its_tenant_purging_atomically_once(stores: Stores) {
    let t = deleted(&stores, "purge-start", 1).await;
    assert_eq!(stores.purges.get(t.id()).await.expect("get"), None);
    let stale = t.clone();
    let (t, purge) = started(&stores, t).await;
    let read = stores
        .tenants
        .get(t.id())
        .await
        .expect("get")
        .expect("tenant");
    assert_eq!(read.status(), TenantStatus::Purging);
    assert_eq!(read.version(), t.version());
    assert_eq!(
        stores.purges.get(t.id()).await.expect("get"),
        Some(purge.clone())
    );
    assert_eq!(
        kinds_of(&stores, &t).await.last(),
        Some(&"tenant.v1.TenantPurgeStarted")
    );
    assert_eq!(stores.purges.running().await.expect("running"), 1);

    // The racing replica read the tenant before the purge started.
    let mut racing = stale;
    let version = racing.version();
    racing
        .begin_purge(true, now())
        .expect("purgeable as it read it");
    let again = Purge::new(racing.id(), false, "retention".into(), now());
    let err = stores
        .purges
        .start(
            &racing,
            version,
            &again,
            &[event(
                &racing,
                EventKind::TenantPurgeStarted { forced: false },
            )],
        )
        .await
        .expect_err("second start");
    assert_eq!(err, RepoError::VersionConflict);
    assert_eq!(stores.purges.get(t.id()).await.expect("get"), Some(purge));
    assert_eq!(
        kinds_of(&stores, &t)
            .await
            .iter()
            .filter(|k| **k == "tenant.v1.TenantPurgeStarted")
            .count(),
        1,
        "nothing of the refused start was stored"
    );
}

/// Contract: a due purge goes to one claimer; not again while leased; after its lease
/// expires another takes it over and the first holder's writes and renewals are refused.
pub async fn a_due_purge_is_claimed_by_one_worker_and_fenced_after_takeover(stores: Stores) {
    let t = deleted(&stores, "purge-claim", 1).await;
    let (_, purge) = started(&stores, t).await;
    let lease_for = Duration::seconds(30);
    let first = stores
        .purges
        .claim("a", now(), lease_for)
        .await
        .expect("claim")
        .expect("due");
    assert_eq!(first.purge, purge);
    assert_eq!(
        stores
            .purges
            .claim("b", now(), lease_for)
            .await
            .expect("claim"),
        None,
        "leased"
    );
    assert!(
        stores
            .purges
            .renew(
                purge.tenant_id,
                purge.version,
                &first.lease,
                now() + lease_for
            )
            .await
            .expect("renew")
    );

    // The holder starts the first step, renewing its lease with the write.
    let next = first_step_started(&stores, &purge, &first.lease).await;

    // Its lease runs out (as seen a minute later): b takes over.
    let later = now() + Duration::minutes(1) + lease_for;
    let second = stores
        .purges
        .claim("b", later, lease_for)
        .await
        .expect("claim")
        .expect("the expired lease is taken over");
    assert_eq!(second.purge, next);
    let mut stale = next.clone();
    stale.version = next.version + 1;
    let fenced = PurgeWrite {
        purge: &stale,
        expected_version: next.version,
        lease: &first.lease,
        renew_until: later + lease_for,
        tenant: None,
        events: &[],
    };
    assert_eq!(
        stores.purges.save(fenced).await.expect_err("fenced"),
        RepoError::LeaseLost
    );
    assert!(
        !stores
            .purges
            .renew(
                next.tenant_id,
                next.version,
                &first.lease,
                later + lease_for
            )
            .await
            .expect("renew"),
        "the old holder cannot renew"
    );
    stores
        .purges
        .release(next.tenant_id, &first.lease)
        .await
        .expect("a stale release is a no-op");
    assert_eq!(
        stores
            .purges
            .claim("c", later, lease_for)
            .await
            .expect("claim"),
        None,
        "b still holds it"
    );
    stores
        .purges
        .release(next.tenant_id, &second.lease)
        .await
        .expect("release");
    assert!(
        stores
            .purges
            .claim("c", later, lease_for)
            .await
            .expect("claim")
            .is_some(),
        "released, it is due again"
    );
}

/// Contract: the last step's write stores the purge's end, the tombstone and its events
/// together; with a stale tenant version nothing of it lands.
pub async fn the_tombstone_write_is_atomic_with_the_purge_and_its_events(stores: Stores) {
    let t = deleted(&stores, "purge-end", 1).await;
    let (mut t, purge) = started(&stores, t).await;
    let claimed = stores
        .purges
        .claim("a", now(), Duration::seconds(30))
        .await
        .expect("claim")
        .expect("due");
    let done = all_done(&purge);
    let version = t.version();
    t.tombstone(now()).expect("tombstone");
    let purged: Vec<Event> = vec![event(&t, EventKind::TenantPurged)];

    let stale = PurgeWrite {
        purge: &done,
        expected_version: purge.version,
        lease: &claimed.lease,
        renew_until: now(),
        tenant: Some((&t, version + 7)),
        events: &purged,
    };
    assert_eq!(
        stores.purges.save(stale).await.expect_err("stale tenant"),
        RepoError::VersionConflict
    );
    assert_eq!(
        stores.purges.get(t.id()).await.expect("get"),
        Some(purge.clone()),
        "the purge did not move"
    );
    let read = stores
        .tenants
        .get(t.id())
        .await
        .expect("get")
        .expect("tenant");
    assert_eq!(read.status(), TenantStatus::Purging);
    assert!(
        !kinds_of(&stores, &t)
            .await
            .contains(&"tenant.v1.TenantPurged")
    );

    let write = PurgeWrite {
        tenant: Some((&t, version)),
        ..stale
    };
    stores.purges.save(write).await.expect("save");
    let tombstone = stores
        .tenants
        .get(t.id())
        .await
        .expect("get")
        .expect("tombstone");
    assert_eq!(
        tombstone.clone().with_provisioning(None),
        t,
        "the tombstone reads back field for field (and its run's summary)"
    );
    assert_eq!(tombstone.contact_email(), None);
    assert_eq!(
        kinds_of(&stores, &t).await.last(),
        Some(&"tenant.v1.TenantPurged")
    );
    assert!(
        stores
            .purges
            .get(t.id())
            .await
            .expect("get")
            .expect("purge")
            .is_done()
    );
    assert_eq!(stores.purges.running().await.expect("running"), 0);
    assert_eq!(
        stores
            .purges
            .claim("b", now() + Duration::hours(1), Duration::seconds(30))
            .await
            .expect("claim"),
        None,
        "a finished purge is never due"
    );
}

/// Contract: the sweeper finds DELETED tenants past their purge time, oldest first, never
/// one under legal hold, one still within its retention, a live one or one being purged.
pub async fn purgeable_tenants_are_deleted_unheld_and_past_their_purge_time(stores: Stores) {
    let older = deleted(&stores, "purge-old", 60).await;
    let old = deleted(&stores, "purge-due", 40).await;
    let _recent = deleted(&stores, "purge-recent", 5).await;
    let mut held = deleted(&stores, "purge-held", 50).await;
    let version = held.version();
    held.set_legal_hold("case 4".into(), now()).expect("hold");
    stores
        .tenants
        .update(&held, version, &[])
        .await
        .expect("hold");
    let purging = deleted(&stores, "purge-going", 70).await;
    started(&stores, purging).await;
    let live = tenant(&slug("purge-live"), "free", &[]);
    stores
        .tenants
        .create(&live, &run_for(&live), &[], None)
        .await
        .expect("create");

    let found = stores.purges.purgeable(now(), 10).await.expect("purgeable");
    assert_eq!(found, vec![older.id(), old.id()]);
    assert_eq!(
        stores.purges.purgeable(now(), 1).await.expect("purgeable"),
        vec![older.id()],
        "at most the limit, oldest first"
    );
}

/// Contract: a tombstone's slug stays taken for new tenants until the slugs of tombstones
/// purged before a cutoff are released; then the slug can be used again.
pub async fn a_tombstones_slug_stays_taken_until_released(stores: Stores) {
    let t = deleted(&stores, "purge-slug", 1).await;
    let (mut t, purge) = started(&stores, t).await;
    let claimed = stores
        .purges
        .claim("a", now(), Duration::seconds(30))
        .await
        .expect("claim")
        .expect("due");
    let done = all_done(&purge);
    let version = t.version();
    t.tombstone(now()).expect("tombstone");
    stores
        .purges
        .save(PurgeWrite {
            purge: &done,
            expected_version: purge.version,
            lease: &claimed.lease,
            renew_until: now(),
            tenant: Some((&t, version)),
            events: &[],
        })
        .await
        .expect("save");

    let again = tenant(t.slug().as_str(), "free", &[]);
    let err = stores
        .tenants
        .create(&again, &run_for(&again), &[], None)
        .await
        .expect_err("reserved");
    assert_eq!(err, RepoError::SlugTaken(t.slug().to_string()));
    assert_eq!(
        stores
            .purges
            .release_slugs(now() - Duration::days(1))
            .await
            .expect("release"),
        0,
        "purged after the cutoff: still reserved"
    );
    assert_eq!(
        stores
            .purges
            .release_slugs(now() + Duration::seconds(1))
            .await
            .expect("release"),
        1
    );
    assert_eq!(
        stores
            .purges
            .release_slugs(now() + Duration::seconds(1))
            .await
            .expect("release"),
        0,
        "released once"
    );
    stores
        .tenants
        .create(&again, &run_for(&again), &[], None)
        .await
        .expect("the slug is free again");
    let tombstone = stores
        .tenants
        .get(t.id())
        .await
        .expect("get")
        .expect("tombstone");
    assert_eq!(
        tombstone.status(),
        TenantStatus::Purged,
        "the tombstone stays"
    );
}

/// Contract: forgetting a tenant's requests deletes its idempotency records and no one
/// else's.
pub async fn forgetting_requests_deletes_only_that_tenants_idempotency_records(stores: Stores) {
    let record = |t: &Tenant| IdempotencyRecord {
        request_id: format!("req-{}", t.id()),
        fingerprint: "f".into(),
        response: t.clone(),
        expires_at: now() + Duration::hours(1),
    };
    let (gone, kept) = (
        tenant(&slug("forget"), "free", &[]),
        tenant(&slug("remember"), "free", &[]),
    );
    for t in [&gone, &kept] {
        stores
            .tenants
            .create(t, &run_for(t), &[], Some(record(t)))
            .await
            .expect("create");
    }
    assert_eq!(
        stores
            .purges
            .forget_requests(gone.id())
            .await
            .expect("forget"),
        1
    );
    assert_eq!(
        stores
            .purges
            .forget_requests(gone.id())
            .await
            .expect("forget"),
        0
    );
    for (t, left) in [(&gone, false), (&kept, true)] {
        let found = stores
            .tenants
            .find_idempotency(&record(t).request_id, now())
            .await
            .expect("find");
        assert_eq!(found.is_some(), left);
    }
}

//! Contracts of the provisioning ports: runs and the claim queue (exclusive claims, leases
//! that expire, fencing of a lost lease, optimistic versions), and first admin keys.

use chrono::Duration;
use futures::future::join_all;
use tenantd_domain::ports::{InitialKeyOutcome, RunWrite};
use tenantd_domain::provisioning::{ProvisioningRun, RunId, RunState, StepError, StepKind};
use tenantd_domain::{ApiKey, ApiKeyId, EventKind, RepoError, Tenant};
use uuid::Uuid;

use super::Stores;
use super::fixtures::{event, now, run_for, slug, tenant};

/// A stored tenant (PROVISIONING) and its run.
async fn provisioning(stores: &Stores, prefix: &str) -> (Tenant, ProvisioningRun) {
    let t = tenant(&slug(prefix), "free", &[]);
    let run = run_for(&t);
    stores
        .tenants
        .create(&t, &run, &[], None)
        .await
        .expect("create");
    (t, run)
}

/// `run` advanced by one stored change.
fn next(run: &ProvisioningRun) -> ProvisioningRun {
    let mut next = run.clone();
    next.version += 1;
    next
}

/// A run created with its tenant is the tenant's latest, and reads of the tenant carry
/// its summary.
pub async fn a_created_run_is_the_latest_and_summarized_on_its_tenant(stores: Stores) {
    let (t, run) = provisioning(&stores, "latest").await;
    let latest = stores.runs.latest(t.id()).await.expect("latest");
    assert_eq!(latest.as_ref(), Some(&run));
    let read = stores
        .tenants
        .get(t.id())
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(read.provisioning(), Some(&run.summary()));
    assert_eq!(stores.runs.running().await.expect("running"), 1);
    let other = tenant(&slug("none"), "free", &[]);
    assert_eq!(stores.runs.latest(other.id()).await.expect("latest"), None);
}

/// Concurrent claimers of one due run: exactly one gets it.
pub async fn a_due_run_is_claimed_by_one_worker_at_a_time(stores: Stores) {
    let (_, run) = provisioning(&stores, "claim").await;
    let later = now() + Duration::seconds(1);
    let claims = (0..8).map(|i| {
        let runs = stores.runs.clone();
        async move {
            runs.claim(&format!("worker-{i}"), later, Duration::seconds(30))
                .await
        }
    });
    let claimed: Vec<_> = join_all(claims)
        .await
        .into_iter()
        .filter_map(|r| r.expect("claim"))
        .collect();
    assert_eq!(claimed.len(), 1, "one claimer wins");
    assert_eq!(claimed[0].run, run);
    assert_eq!(claimed[0].lease.expires_at, later + Duration::seconds(30));
}

/// Claims take the run due longest ago first, whatever order the runs were made in.
pub async fn the_run_due_longest_ago_is_claimed_first(stores: Stores) {
    let at = now();
    let mut made = Vec::new();
    for (name, age) in [("due-b", 20), ("due-c", 10), ("due-a", 30)] {
        let t = tenant(&slug(name), "free", &[]);
        let run = ProvisioningRun::new(
            RunId(Uuid::now_v7()),
            t.id(),
            at - Duration::seconds(age),
            Duration::minutes(30),
        );
        stores
            .tenants
            .create(&t, &run, &[], None)
            .await
            .expect("create");
        made.push((age, run.id));
    }
    made.sort_by_key(|(age, _)| -age);
    for (age, id) in made {
        let claimed = stores
            .runs
            .claim("worker", at, Duration::seconds(30))
            .await
            .expect("claim")
            .expect("due");
        assert_eq!(claimed.run.id, id, "the run due {age} s ago is next");
    }
    assert!(
        stores
            .runs
            .claim("worker", at, Duration::seconds(30))
            .await
            .expect("claim")
            .is_none(),
        "every run is leased"
    );
}

/// A run is not claimable before it is due, nor while someone holds a live lease.
pub async fn runs_not_due_or_leased_are_not_claimed(stores: Stores) {
    let (_, run) = provisioning(&stores, "notdue").await;
    let before = run.created_at - Duration::seconds(1);
    assert!(
        stores
            .runs
            .claim("w", before, Duration::seconds(30))
            .await
            .expect("claim")
            .is_none()
    );
    let at = run.created_at + Duration::seconds(1);
    assert!(
        stores
            .runs
            .claim("w1", at, Duration::seconds(30))
            .await
            .expect("claim")
            .is_some()
    );
    assert!(
        stores
            .runs
            .claim("w2", at + Duration::seconds(29), Duration::seconds(30))
            .await
            .expect("claim")
            .is_none(),
        "leased"
    );
}

/// Once a lease expires another worker takes the run over; the first can neither renew
/// nor write any more, and its release does not free the new holder's lease.
pub async fn an_expired_lease_is_taken_over_and_the_old_holder_is_fenced_off(stores: Stores) {
    let (_, run) = provisioning(&stores, "fence").await;
    let t0 = run.created_at + Duration::seconds(1);
    let first = stores
        .runs
        .claim("old", t0, Duration::seconds(10))
        .await
        .expect("claim")
        .expect("due");
    assert!(
        stores
            .runs
            .renew(
                run.id,
                run.version,
                &first.lease,
                t0 + Duration::seconds(10)
            )
            .await
            .expect("renew")
    );
    let t1 = t0 + Duration::seconds(21);
    let second = stores
        .runs
        .claim("new", t1, Duration::seconds(10))
        .await
        .expect("claim")
        .expect("expired lease");
    assert_ne!(first.lease.token, second.lease.token);
    assert!(
        !stores
            .runs
            .renew(
                run.id,
                run.version,
                &first.lease,
                t1 + Duration::seconds(10)
            )
            .await
            .expect("renew")
    );

    let mut changed = next(&run);
    changed.start(StepKind::Database, t1).expect("start");
    let stale = RunWrite {
        run: &changed,
        expected_version: run.version,
        lease: Some(&first.lease),
        renew_until: None,
        tenant: None,
        events: &[],
    };
    assert_eq!(stores.runs.save(stale).await, Err(RepoError::LeaseLost));
    stores
        .runs
        .release(run.id, &first.lease)
        .await
        .expect("release");
    assert!(
        stores
            .runs
            .claim("third", t1, Duration::seconds(10))
            .await
            .expect("claim")
            .is_none(),
        "the old holder's release left the new lease alone"
    );
    let current = RunWrite {
        lease: Some(&second.lease),
        ..stale
    };
    stores.runs.save(current).await.expect("the holder writes");
    assert_eq!(
        stores.runs.latest(run.tenant_id).await.expect("latest"),
        Some(changed)
    );
    stores
        .runs
        .release(run.id, &second.lease)
        .await
        .expect("release");
    // Running and released: due again at its start, for a worker that finds it abandoned.
    assert!(
        stores
            .runs
            .claim("fourth", t1, Duration::seconds(10))
            .await
            .expect("claim")
            .is_some()
    );
}

/// A holder's write may renew its lease: the run stays the holder's until the new
/// expiry, and is taken over only after it.
pub async fn a_holders_write_renews_its_lease(stores: Stores) {
    let (_, run) = provisioning(&stores, "renewing").await;
    let t0 = run.created_at + Duration::seconds(1);
    let claimed = stores
        .runs
        .claim("holder", t0, Duration::seconds(10))
        .await
        .expect("claim")
        .expect("due");
    let mut started = next(&run);
    started.start(StepKind::Database, t0).expect("start");
    let write = RunWrite {
        run: &started,
        expected_version: run.version,
        lease: Some(&claimed.lease),
        renew_until: Some(t0 + Duration::seconds(60)),
        tenant: None,
        events: &[],
    };
    stores.runs.save(write).await.expect("the holder writes");
    assert!(
        stores
            .runs
            .claim("other", t0 + Duration::seconds(30), Duration::seconds(10))
            .await
            .expect("claim")
            .is_none(),
        "the write renewed the lease past its first 10 s"
    );
    assert!(
        stores
            .runs
            .claim("other", t0 + Duration::seconds(61), Duration::seconds(10))
            .await
            .expect("claim")
            .is_some(),
        "after the renewed expiry the run is taken over"
    );
}

/// A request's write (no lease) conflicts when the run moved on; a change by a request
/// stops the holder's renewals, so it abandons what it was doing.
pub async fn a_request_write_conflicts_with_a_stale_version_and_stops_renewals(stores: Stores) {
    let (_, run) = provisioning(&stores, "version").await;
    let t0 = run.created_at + Duration::seconds(1);
    let held = stores
        .runs
        .claim("w", t0, Duration::seconds(30))
        .await
        .expect("claim")
        .expect("due");
    let mut cancelled = next(&run);
    cancelled
        .cancel(StepError::new("CANCELLED", "test"), t0)
        .expect("cancel");
    let request = RunWrite {
        run: &cancelled,
        expected_version: run.version,
        lease: None,
        renew_until: None,
        tenant: None,
        events: &[],
    };
    stores.runs.save(request).await.expect("request write");
    assert_eq!(
        stores.runs.save(request).await,
        Err(RepoError::VersionConflict),
        "the same change again is stale"
    );
    assert!(
        !stores
            .runs
            .renew(run.id, run.version, &held.lease, t0 + Duration::seconds(30))
            .await
            .expect("renew"),
        "the holder learns the run changed"
    );
    let after = stores
        .runs
        .latest(run.tenant_id)
        .await
        .expect("latest")
        .expect("run");
    assert_eq!(after.state, RunState::Cancelled);
    assert_eq!(
        after.pending_compensation,
        Vec::<StepKind>::new(),
        "nothing had started"
    );
    assert_eq!(stores.runs.running().await.expect("running"), 0);
}

/// A run saved with its tenant's change and events lands whole, or not at all when the
/// tenant moved on.
pub async fn a_save_with_the_tenant_is_atomic(stores: Stores) {
    let (t, run) = provisioning(&stores, "atomic").await;
    let at = run.created_at + Duration::seconds(1);
    let mut started = next(&run);
    started.start(StepKind::Database, at).expect("start");
    let mut failed = t.clone();
    failed
        .settle_provisioning(
            tenantd_domain::TenantStatus::Failed,
            "BOOM: test".into(),
            at,
        )
        .expect("settle");
    let changed = event(&t, EventKind::TenantResumed);
    let stale = RunWrite {
        run: &started,
        expected_version: run.version,
        lease: None,
        renew_until: None,
        tenant: Some((&failed, t.version() + 5)),
        events: std::slice::from_ref(&changed),
    };
    assert_eq!(
        stores.runs.save(stale).await,
        Err(RepoError::VersionConflict)
    );
    assert_eq!(
        stores.runs.latest(t.id()).await.expect("latest"),
        Some(run.clone())
    );
    assert!(
        stores
            .events
            .list(Some(t.id()), None, 10)
            .await
            .expect("events")
            .is_empty()
    );

    let fresh = RunWrite {
        tenant: Some((&failed, t.version())),
        ..stale
    };
    stores.runs.save(fresh).await.expect("save");
    let read = stores
        .tenants
        .get(t.id())
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(read.status(), tenantd_domain::TenantStatus::Failed);
    assert_eq!(read.status_reason(), "BOOM: test");
    assert_eq!(read.provisioning(), Some(&started.summary()));
    assert_eq!(
        stores
            .events
            .list(Some(t.id()), None, 10)
            .await
            .expect("events"),
        vec![changed]
    );
}

/// The sweeper finds running runs past their deadline, and only those.
pub async fn overdue_runs_are_found_by_deadline(stores: Stores) {
    let (t, run) = provisioning(&stores, "overdue").await;
    let mine = |ids: Vec<tenantd_domain::TenantId>| ids.contains(&t.id());
    assert!(!mine(
        stores
            .runs
            .overdue(run.deadline - Duration::seconds(1), 100)
            .await
            .expect("overdue")
    ));
    assert!(mine(
        stores
            .runs
            .overdue(run.deadline + Duration::seconds(1), 100)
            .await
            .expect("overdue")
    ));
}

fn initial_key(t: &Tenant) -> ApiKey {
    ApiKey {
        id: ApiKeyId(Uuid::now_v7()),
        tenant_id: t.id(),
        display_name: "initial admin key".into(),
        scopes: vec!["tenant.admin".into()],
        secret_hash: [9; 32],
        created_at: now(),
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
    }
}

/// A first key is stored once (a repeated step finds it), its sealed secret can be taken
/// exactly once, and a revoked one is replaced by the next attempt.
pub async fn the_first_key_is_stored_once_and_its_secret_taken_once(stores: Stores) {
    let (t, _) = provisioning(&stores, "first").await;
    let key = initial_key(&t);
    assert_eq!(
        stores
            .initial_keys
            .create_initial(&key, b"sealed-1", &[], 2, now())
            .await,
        Ok(InitialKeyOutcome::Created)
    );
    assert_eq!(
        stores
            .initial_keys
            .create_initial(&initial_key(&t), b"sealed-2", &[], 2, now())
            .await,
        Ok(InitialKeyOutcome::AlreadyPresent)
    );
    assert_eq!(
        stores
            .api_keys
            .list(t.id(), None, 10, None)
            .await
            .expect("list")
            .len(),
        1
    );

    let takes = (0..5).map(|_| {
        let store = stores.initial_keys.clone();
        let id = t.id();
        async move { store.take_initial_secret(id).await }
    });
    let winners: Vec<_> = join_all(takes)
        .await
        .into_iter()
        .filter_map(|r| r.expect("take"))
        .collect();
    assert_eq!(
        winners,
        vec![(key.id, b"sealed-1".to_vec())],
        "exactly one taker"
    );
    let kept = stores
        .initial_keys
        .initial(t.id())
        .await
        .expect("initial")
        .expect("row");
    assert_eq!((kept.key_id, kept.sealed_secret), (key.id, None));

    stores
        .api_keys
        .revoke(key.id, now(), &[])
        .await
        .expect("revoke");
    let replacement = initial_key(&t);
    assert_eq!(
        stores
            .initial_keys
            .create_initial(&replacement, b"sealed-3", &[], 2, now())
            .await,
        Ok(InitialKeyOutcome::Created)
    );
    let kept = stores
        .initial_keys
        .initial(t.id())
        .await
        .expect("initial")
        .expect("row");
    assert_eq!(
        (kept.key_id, kept.sealed_secret),
        (replacement.id, Some(b"sealed-3".to_vec()))
    );
}

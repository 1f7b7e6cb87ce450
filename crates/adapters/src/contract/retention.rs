//! Contract of [`Retention`](tenantd_domain::ports::Retention): only rows past the cutoff,
//! never an unpublished event nor anything of a tenant under legal hold, at most a batch at
//! a time; the oldest row is reported.

use std::time::Duration as StdDuration;

use chrono::Duration;
use tenantd_domain::ports::{BatchOutcome, RetainedTable};
use tenantd_domain::{AuditRecord, Event, EventId, EventKind, Tenant};
use uuid::Uuid;

use super::Stores;
use super::fixtures::{event, now, run_for, slug, tenant};

fn aged(tenant: &Tenant, days: i64) -> Event {
    let mut event = event(tenant, EventKind::TenantResumed);
    event.occurred_at = now() - Duration::days(days);
    event
}

/// Every audit record left, newest first.
async fn audit_left(stores: &Stores) -> Vec<AuditRecord> {
    let query = tenantd_domain::AuditQuery {
        limit: 100,
        ..tenantd_domain::AuditQuery::default()
    };
    stores.audit.list(&query).await.expect("audit records")
}

async fn logged(stores: &Stores) -> Vec<EventId> {
    let events = stores.events.list(None, None, 100).await.expect("events");
    events.into_iter().map(|e| e.id).collect()
}

/// Contract: published events from before the cutoff are deleted, a batch at a time; an
/// unpublished one never, however old; newer ones stay.
pub async fn retention_trims_old_published_events_and_never_an_unpublished_one(stores: Stores) {
    let (a, b) = (
        tenant(&slug("keep-a"), "free", &[]),
        tenant(&slug("keep-b"), "free", &[]),
    );
    let (a1, a2, b1, a3, a4) = (
        aged(&a, 200),
        aged(&a, 150),
        aged(&b, 120),
        aged(&a, 100),
        aged(&a, 10),
    );
    for (t, events) in [(&a, vec![a1.clone(), a2.clone()]), (&b, vec![b1.clone()])] {
        stores
            .tenants
            .create(t, &run_for(t), &events, None)
            .await
            .expect("create");
    }
    stores
        .tenants
        .update(&a, 1, &[a3.clone(), a4.clone()])
        .await
        .expect("update");
    // Everything of a is published; b's event never was (its broker is down, say).
    let batch = stores
        .outbox
        .claim(10, StdDuration::from_secs(30))
        .await
        .expect("claim");
    batch
        .finish(&BatchOutcome::published(&[a1.id, a2.id, a3.id, a4.id]))
        .await
        .expect("finish");

    let cutoff = now() - Duration::days(90);
    let retention = &stores.retention;
    assert_eq!(
        retention
            .oldest(RetainedTable::Events)
            .await
            .expect("oldest"),
        Some(a1.occurred_at)
    );
    assert_eq!(
        retention
            .trim(RetainedTable::Events, cutoff, 2)
            .await
            .expect("trim"),
        2
    );
    assert_eq!(
        retention
            .trim(RetainedTable::Events, cutoff, 2)
            .await
            .expect("trim"),
        1
    );
    assert_eq!(
        retention
            .trim(RetainedTable::Events, cutoff, 2)
            .await
            .expect("trim"),
        0
    );
    assert_eq!(logged(&stores).await, vec![b1.id, a4.id]);
    // The oldest event retention could delete: the unpublished one does not count.
    assert_eq!(
        retention
            .oldest(RetainedTable::Events)
            .await
            .expect("oldest"),
        Some(a4.occurred_at)
    );
    // The unpublished event is still there to publish.
    assert_eq!(stores.outbox.backlog().await.expect("backlog").events, 1);
}

fn record_at(days: i64) -> AuditRecord {
    AuditRecord {
        id: Uuid::now_v7(),
        principal: "spiffe://tenantd.local/admin/retention".into(),
        method: "/tenant.v1.TenantService/DeleteTenant".into(),
        tenant_id: None,
        code: "OK".into(),
        at: now() - Duration::days(days),
        request_id: Uuid::new_v4().to_string(),
    }
}

/// Contract: audit records from before the cutoff are deleted, a batch at a time; newer
/// ones stay; an empty table has no oldest row.
pub async fn retention_trims_audit_records_before_the_cutoff_in_batches(stores: Stores) {
    let retention = &stores.retention;
    assert_eq!(
        retention
            .oldest(RetainedTable::Audit)
            .await
            .expect("oldest"),
        None
    );
    let records = [
        record_at(500),
        record_at(450),
        record_at(401),
        record_at(30),
    ];
    stores.audit.append(&records).await.expect("append");
    assert_eq!(
        retention
            .oldest(RetainedTable::Audit)
            .await
            .expect("oldest"),
        Some(records[0].at)
    );
    let cutoff = now() - Duration::days(400);
    let mut deleted = Vec::new();
    for _ in 0..3 {
        deleted.push(
            retention
                .trim(RetainedTable::Audit, cutoff, 2)
                .await
                .expect("trim"),
        );
    }
    assert_eq!(deleted, vec![2, 1, 0]);
    let left = audit_left(&stores).await;
    assert_eq!(left, vec![records[3].clone()]);
    assert_eq!(
        retention
            .oldest(RetainedTable::Audit)
            .await
            .expect("oldest"),
        Some(records[3].at)
    );
}

/// Contract: nothing of a tenant under legal hold is trimmed, however old; the same rows of
/// a tenant not held are.
pub async fn retention_keeps_everything_of_a_tenant_under_legal_hold(stores: Stores) {
    let mut held = tenant(&slug("hold-kept"), "free", &[]);
    let free = tenant(&slug("hold-free"), "free", &[]);
    let (h1, f1) = (aged(&held, 200), aged(&free, 200));
    for (t, e) in [(&held, &h1), (&free, &f1)] {
        stores
            .tenants
            .create(t, &run_for(t), std::slice::from_ref(e), None)
            .await
            .expect("create");
    }
    held.set_legal_hold("case 9".into(), now())
        .expect("a live tenant can be held");
    stores.tenants.update(&held, 1, &[]).await.expect("hold");
    let batch = stores
        .outbox
        .claim(10, StdDuration::from_secs(30))
        .await
        .expect("claim");
    batch
        .finish(&BatchOutcome::published(&[h1.id, f1.id]))
        .await
        .expect("finish");
    let (mut ha, mut fa) = (record_at(500), record_at(500));
    ha.tenant_id = Some(held.id());
    fa.tenant_id = Some(free.id());
    stores
        .audit
        .append(&[ha.clone(), fa.clone()])
        .await
        .expect("append");

    let retention = &stores.retention;
    let events = retention
        .trim(RetainedTable::Events, now() - Duration::days(90), 10)
        .await
        .expect("trim");
    let audit = retention
        .trim(RetainedTable::Audit, now() - Duration::days(400), 10)
        .await
        .expect("trim");
    assert_eq!((events, audit), (1, 1));
    assert_eq!(logged(&stores).await, vec![h1.id]);
    let left = audit_left(&stores).await;
    assert_eq!(left, vec![ha]);
}

/// Contract: replicas trimming at once share the rows: together they delete each old row
/// once, and none of them fails.
pub async fn concurrent_trims_delete_each_row_once(stores: Stores) {
    let records: Vec<AuditRecord> = (0..300).map(|_| record_at(500)).collect();
    stores.audit.append(&records).await.expect("append");
    let cutoff = now() - Duration::days(400);
    let trim = |retention: std::sync::Arc<dyn tenantd_domain::ports::Retention>| async move {
        let mut deleted = 0;
        loop {
            let n = retention
                .trim(RetainedTable::Audit, cutoff, 25)
                .await
                .expect("trim");
            deleted += n;
            if n == 0 {
                return deleted;
            }
        }
    };
    let (a, b, c) = tokio::join!(
        trim(stores.retention.clone()),
        trim(stores.retention.clone()),
        trim(stores.retention.clone())
    );
    assert_eq!(a + b + c, 300);
    assert!(audit_left(&stores).await.is_empty());
}

//! The outbox contract: claims in id order, never a held event, never a tenant's event
//! ahead of an earlier unpublished one; finish marks, counts failed attempts and moves dead
//! letters, dropping gives back; dead letters are listed and put back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tenantd_domain::ports::{
    BatchOutcome, DeadLetterSelection, FailedDelivery, Outbox, OutboxBatch,
};
use tenantd_domain::{Event, EventId, EventKind, Tenant, TenantId};

use super::Stores;
use super::fixtures::{created, event, run_for, slug, tenant};

const HOLD: Duration = Duration::from_secs(30);

fn ids(batch: &dyn OutboxBatch) -> Vec<EventId> {
    batch.events().iter().map(|e| e.id).collect()
}

/// Stores `tenant` with `events` (made beforehand, so ids of several tenants interleave).
async fn store(stores: &Stores, tenant: &Tenant, events: &[Event]) {
    stores
        .tenants
        .create(tenant, &run_for(tenant), events, None)
        .await
        .expect("create");
}

fn resumed(tenant: &Tenant) -> Event {
    event(tenant, EventKind::TenantResumed)
}

/// Contract: a batch skips events another batch holds and never takes a tenant's event
/// while an earlier one of it is unpublished elsewhere; finish marks only what it is given.
pub async fn outbox_batches_never_overtake_a_tenants_earlier_event(stores: Stores) {
    let outbox = stores.outbox.clone();
    let (a, b) = (
        tenant(&slug("out-a"), "free", &[]),
        tenant(&slug("out-b"), "free", &[]),
    );
    let (a1, b1, a2, b2, a3) = (
        created(&a),
        created(&b),
        resumed(&a),
        resumed(&b),
        resumed(&a),
    );
    store(&stores, &a, &[a1.clone(), a2.clone(), a3.clone()]).await;
    store(&stores, &b, &[b1.clone(), b2.clone()]).await;
    let backlog = outbox.backlog().await.expect("backlog");
    assert_eq!(backlog.events, 5);
    assert_eq!(backlog.oldest, Some(a1.occurred_at));

    let first = outbox.claim(2, HOLD).await.expect("claim");
    assert_eq!(ids(first.as_ref()), vec![a1.id, b1.id]);
    let second = outbox.claim(10, HOLD).await.expect("claim");
    assert!(
        ids(second.as_ref()).is_empty(),
        "each waits behind its tenant's held event"
    );
    first
        .finish(&BatchOutcome::published(&[a1.id]))
        .await
        .expect("finish");
    drop(second);

    let third = outbox.claim(10, HOLD).await.expect("claim");
    assert_eq!(ids(third.as_ref()), vec![b1.id, a2.id, b2.id, a3.id]);
    third
        .finish(&BatchOutcome::published(&[b1.id, a2.id, b2.id, a3.id]))
        .await
        .expect("finish");
    assert_eq!(outbox.backlog().await.expect("backlog").events, 0);
    assert!(ids(outbox.claim(10, HOLD).await.expect("claim").as_ref()).is_empty());
}

/// Contract: a batch dropped unfinished gives its events back (in memory at once; on
/// PostgreSQL once the dropped transaction's rollback has run, a moment later); finishing
/// with none published marks none.
pub async fn outbox_batches_dropped_or_unpublished_give_events_back(stores: Stores) {
    let outbox = stores.outbox.clone();
    let t = tenant(&slug("out-drop"), "free", &[]);
    let (e1, e2) = (created(&t), resumed(&t));
    store(&stores, &t, &[e1.clone(), e2.clone()]).await;
    drop(outbox.claim(10, HOLD).await.expect("claim"));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let again = loop {
        let batch = outbox.claim(10, HOLD).await.expect("claim");
        if !batch.events().is_empty() {
            break batch;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dropped batch's events never came back"
        );
        drop(batch);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ids(again.as_ref()), vec![e1.id, e2.id]);
    again
        .finish(&BatchOutcome::default())
        .await
        .expect("finish");
    assert_eq!(outbox.backlog().await.expect("backlog").events, 2);
    let last = outbox.claim(10, HOLD).await.expect("claim");
    assert_eq!(ids(last.as_ref()), vec![e1.id, e2.id]);
}

/// Contract: four relays claiming concurrently publish every event exactly once, each
/// tenant's in order.
pub async fn outbox_concurrent_relays_publish_each_event_once_in_tenant_order(stores: Stores) {
    let tenants: Vec<Tenant> = (0..20)
        .map(|i| tenant(&slug(&format!("out-{i}")), "free", &[]))
        .collect();
    // Event ids interleave across tenants: round by round.
    let mut events: BTreeMap<TenantId, Vec<Event>> = BTreeMap::new();
    for round in 0..8 {
        for t in &tenants[..(12 + round)] {
            let list = events.entry(t.id()).or_default();
            list.push(if list.is_empty() {
                created(t)
            } else {
                resumed(t)
            });
        }
    }
    for t in &tenants {
        if let Some(list) = events.get(&t.id()) {
            store(&stores, t, list).await;
        }
    }
    let total = events.values().map(Vec::len).sum::<usize>();
    let log: Arc<Mutex<Vec<Event>>> = Arc::default();
    let relays: Vec<_> = (0..4)
        .map(|_| {
            let outbox: Arc<dyn Outbox> = stores.outbox.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let mut idle = 0;
                while idle < 3 {
                    let batch = outbox.claim(25, HOLD).await.expect("claim");
                    if batch.events().is_empty() {
                        idle += 1;
                        tokio::task::yield_now().await;
                    } else {
                        idle = 0;
                    }
                    // "Publishing" is appending to the log while the batch is held, and
                    // letting the other relays run meanwhile.
                    log.lock()
                        .expect("log")
                        .extend(batch.events().iter().cloned());
                    tokio::task::yield_now().await;
                    let all = ids(batch.as_ref());
                    batch
                        .finish(&BatchOutcome::published(&all))
                        .await
                        .expect("finish");
                }
            })
        })
        .collect();
    for relay in relays {
        relay.await.expect("relay");
    }
    assert_eq!(stores.outbox.backlog().await.expect("backlog").events, 0);
    let log = log.lock().expect("log");
    assert_eq!(log.len(), total, "every event exactly once");
    for (tenant, written) in &events {
        let published: Vec<EventId> = log
            .iter()
            .filter(|e| e.subject.tenant() == Some(*tenant))
            .map(|e| e.id)
            .collect();
        let expected: Vec<EventId> = written.iter().map(|e| e.id).collect();
        assert_eq!(published, expected, "tenant {tenant}'s events in order");
    }
}

fn failure(event: &Event, error: &str) -> FailedDelivery {
    FailedDelivery {
        event_id: event.id,
        error: error.into(),
    }
}

/// Two tenants, each with a dead letter (a1 after a failed attempt and a refusal, b2
/// after one refusal) and a1's later event a2 still in the outbox (b1 published).
struct DeadLettered {
    a: Tenant,
    b: Tenant,
    a1: Event,
    a2: Event,
    b2: Event,
}

async fn dead_lettered(stores: &Stores, prefix: &str) -> DeadLettered {
    let outbox = stores.outbox.clone();
    let (a, b) = (
        tenant(&slug(&format!("{prefix}-a")), "free", &[]),
        tenant(&slug(&format!("{prefix}-b")), "free", &[]),
    );
    let (a1, b1, a2, b2) = (created(&a), created(&b), resumed(&a), resumed(&b));
    store(stores, &a, &[a1.clone(), a2.clone()]).await;
    store(stores, &b, &[b1.clone(), b2.clone()]).await;
    let first = outbox.claim(10, HOLD).await.expect("claim");
    assert_eq!(first.attempts(a1.id), 0);
    assert!(first.undecodable().is_empty());
    first
        .finish(&BatchOutcome {
            published: vec![b1.id],
            failed: vec![failure(&a1, "refused once")],
            dead_lettered: Vec::new(),
        })
        .await
        .expect("finish");
    let second = outbox.claim(10, HOLD).await.expect("claim");
    assert_eq!(ids(second.as_ref()), vec![a1.id, a2.id, b2.id]);
    assert_eq!(second.attempts(a1.id), 1, "the failed attempt is counted");
    second
        .finish(&BatchOutcome {
            published: Vec::new(),
            failed: Vec::new(),
            dead_lettered: vec![
                failure(&a1, "Message size too large"),
                failure(&b2, "too large"),
            ],
        })
        .await
        .expect("finish");
    DeadLettered { a, b, a1, a2, b2 }
}

/// Contract: a failed attempt is counted on its event; a dead letter leaves the outbox (its
/// tenant's later events are claimed without it, the backlog counts it apart) and is listed
/// with its attempts and error, by tenant and after an event.
pub async fn dead_letters_leave_the_outbox_and_are_listed(stores: Stores) {
    let outbox = stores.outbox.clone();
    let DeadLettered { a, b, a1, a2, b2 } = dead_lettered(&stores, "dead").await;
    let third = outbox.claim(10, HOLD).await.expect("claim");
    assert_eq!(
        ids(third.as_ref()),
        vec![a2.id],
        "the tenant goes on without its dead letter"
    );
    third
        .finish(&BatchOutcome::default())
        .await
        .expect("finish");
    let backlog = outbox.backlog().await.expect("backlog");
    assert_eq!((backlog.events, backlog.dead_letters), (1, 2));
    assert_eq!(backlog.oldest, Some(a2.occurred_at));

    let dead = outbox.dead_letters(None, None, 10).await.expect("list");
    let listed: Vec<EventId> = dead.iter().map(|d| d.event_id).collect();
    assert_eq!(listed, vec![a1.id, b2.id]);
    assert_eq!(dead[0].tenant_id, Some(a.id().as_uuid()));
    assert_eq!(dead[0].event_type, a1.kind.type_name());
    assert_eq!(dead[0].occurred_at, a1.occurred_at);
    assert_eq!(
        (dead[0].delivery_attempts, dead[0].last_error.as_str()),
        (2, "Message size too large")
    );
    let of_b = outbox
        .dead_letters(Some(b.id()), None, 10)
        .await
        .expect("list");
    assert_eq!(
        of_b.iter().map(|d| d.event_id).collect::<Vec<_>>(),
        vec![b2.id]
    );
    let after = outbox
        .dead_letters(None, Some(a1.id), 10)
        .await
        .expect("list");
    assert_eq!(
        after.iter().map(|d| d.event_id).collect::<Vec<_>>(),
        vec![b2.id]
    );
    assert_eq!(
        outbox
            .dead_letters(None, None, 1)
            .await
            .expect("list")
            .len(),
        1
    );
}

/// Contract: a retry puts dead letters back (by ids: only those that are dead letters; by
/// tenant: all of its) with no failed attempts, once; they are claimed again in id order.
pub async fn retried_dead_letters_are_claimed_again_with_no_attempts(stores: Stores) {
    let outbox = stores.outbox.clone();
    let DeadLettered { a, b, a1, a2, b2 } = dead_lettered(&stores, "retry").await;
    let unknown = resumed(&a).id;
    let retried = outbox
        .retry_dead_letters(&DeadLetterSelection::Events(vec![a1.id, unknown, a2.id]))
        .await
        .expect("retry");
    assert_eq!(retried, vec![a1.id], "only dead letters are put back");
    assert!(
        outbox
            .retry_dead_letters(&DeadLetterSelection::Events(vec![a1.id]))
            .await
            .expect("retry")
            .is_empty(),
        "a retried event is no dead letter any more"
    );
    let claimed = outbox.claim(10, HOLD).await.expect("claim");
    assert_eq!(ids(claimed.as_ref()), vec![a1.id, a2.id]);
    assert_eq!(claimed.attempts(a1.id), 0, "back with no failed attempts");
    claimed
        .finish(&BatchOutcome::default())
        .await
        .expect("finish");
    let retried = outbox
        .retry_dead_letters(&DeadLetterSelection::Tenant(b.id()))
        .await
        .expect("retry");
    assert_eq!(retried, vec![b2.id]);
    let backlog = outbox.backlog().await.expect("backlog");
    assert_eq!((backlog.events, backlog.dead_letters), (3, 0));
    assert!(
        outbox
            .dead_letters(None, None, 10)
            .await
            .expect("list")
            .is_empty()
    );
}

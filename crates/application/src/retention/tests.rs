use std::sync::Mutex;

use chrono::TimeZone as _;
use tenantd_domain::ports::{MockClock, MockRetention};

use super::*;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap()
}

fn clock() -> Arc<dyn Clock> {
    let mut clock = MockClock::new();
    clock.expect_now().returning(now);
    Arc::new(clock)
}

/// Records what the round reported.
#[derive(Default)]
struct Seen {
    deleted: Mutex<Vec<(RetainedTable, u64)>>,
    oldest: Mutex<Vec<(RetainedTable, Option<DateTime<Utc>>)>>,
}

impl RetentionObserver for Seen {
    fn deleted(&self, table: RetainedTable, n: u64) {
        self.deleted.lock().unwrap().push((table, n));
    }
    fn oldest(&self, table: RetainedTable, oldest: Option<DateTime<Utc>>, _now: DateTime<Utc>) {
        self.oldest.lock().unwrap().push((table, oldest));
    }
}

fn settings(events: Option<i64>, audit: Option<i64>) -> RetentionSettings {
    RetentionSettings {
        events: events.map(Duration::days),
        audit: audit.map(Duration::days),
        batch: 100,
        max_batches: 3,
    }
}

#[tokio::test]
async fn a_round_deletes_batches_until_one_is_short_with_each_tables_cutoff() {
    let mut store = MockRetention::new();
    let mut events = vec![100_u64, 100, 7].into_iter();
    store
        .expect_trim()
        .withf(|table, before, limit| {
            *table == RetainedTable::Events
                && *before == now() - Duration::days(90)
                && *limit == 100
        })
        .times(3)
        .returning(move |_, _, _| Ok(events.next().unwrap()));
    store
        .expect_trim()
        .withf(|table, before, _| {
            *table == RetainedTable::Audit && *before == now() - Duration::days(400)
        })
        .times(1)
        .returning(|_, _, _| Ok(0));
    let old = now() - Duration::days(30);
    store
        .expect_oldest()
        .returning(move |table| Ok((table == RetainedTable::Audit).then_some(old)));
    let seen = Arc::new(Seen::default());
    let service = RetentionService::new(
        Arc::new(store),
        clock(),
        seen.clone(),
        settings(Some(90), Some(400)),
    );
    let trimmed = service.round().await.expect("round");
    assert_eq!(
        trimmed,
        vec![
            Trimmed {
                table: RetainedTable::Events,
                deleted: 207,
                more: false
            },
            Trimmed {
                table: RetainedTable::Audit,
                deleted: 0,
                more: false
            },
        ]
    );
    assert_eq!(
        *seen.deleted.lock().unwrap(),
        vec![(RetainedTable::Events, 207), (RetainedTable::Audit, 0)]
    );
    assert_eq!(
        *seen.oldest.lock().unwrap(),
        vec![
            (RetainedTable::Events, None),
            (RetainedTable::Audit, Some(old))
        ]
    );
}

#[tokio::test]
async fn a_round_stops_at_its_batch_limit_and_says_more_is_left() {
    let mut store = MockRetention::new();
    store
        .expect_trim()
        .withf(|table, _, _| *table == RetainedTable::Audit)
        .times(3)
        .returning(|_, _, limit| Ok(limit as u64));
    store.expect_oldest().returning(|_| Ok(None));
    let service = RetentionService::new(
        Arc::new(store),
        clock(),
        Arc::new(Seen::default()),
        settings(None, Some(1)),
    );
    let trimmed = service.round().await.expect("round");
    assert_eq!(
        trimmed,
        vec![Trimmed {
            table: RetainedTable::Audit,
            deleted: 300,
            more: true
        }]
    );
}

#[tokio::test]
async fn a_failed_batch_fails_the_round_and_counts_what_was_deleted_before() {
    let mut store = MockRetention::new();
    let mut answers = vec![Ok(100), Err(RepoError::Unavailable("down".into()))].into_iter();
    store
        .expect_trim()
        .times(2)
        .returning(move |_, _, _| answers.next().unwrap());
    store.expect_oldest().never();
    let seen = Arc::new(Seen::default());
    let service = RetentionService::new(
        Arc::new(store),
        clock(),
        seen.clone(),
        settings(Some(1), None),
    );
    let failed = service.round().await;
    assert!(matches!(failed, Err(RepoError::Unavailable(_))));
    assert_eq!(
        *seen.deleted.lock().unwrap(),
        vec![(RetainedTable::Events, 100)]
    );
}

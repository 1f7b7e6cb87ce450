//! The write-behind audit queue. Each finished call hands its record to an in-process queue
//! (no I/O on the call's path); one writer task appends them in batches. On graceful
//! shutdown the gRPC server drains first, which drops every sender; the writer then sees the
//! queue close, appends what is left and ends, and `App::run_until` waits for it (within
//! the shutdown grace period) before the process exits, so no record of a finished call is
//! lost. The queue is bounded (a store that stays down must not exhaust memory); a full
//! queue and a store failing past its retries drop records, counted and logged loudly.

use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use tenantd_domain::AuditRecord;
use tenantd_domain::ports::AuditLog;
use tokio::sync::mpsc;

/// Most records in one append.
const BATCH: usize = 500;
/// Attempts to append a batch before it is given up.
const ATTEMPTS: u32 = 5;
/// Records the queue holds at most.
pub const CAPACITY: usize = 65_536;

/// The sending side of the audit queue (cheap to clone).
#[derive(Debug, Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<AuditRecord>,
    dropped: IntCounter,
}

impl AuditSink {
    /// Queues a record; never blocks. A full or closed queue drops it, counted and logged.
    pub fn record(&self, record: AuditRecord) {
        if self.tx.try_send(record).is_err() {
            self.dropped.inc();
            let dropped = self.dropped.get();
            if dropped.is_power_of_two() {
                tracing::error!(dropped, "audit queue full or closed: audit records lost");
            }
        }
    }

    /// Records lost so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }
}

/// A new queue: the sink for the call layer and the receiver for [`write_behind`]; lost
/// records count in `dropped` (exported as `audit_records_dropped_total`).
pub fn queue(capacity: usize, dropped: IntCounter) -> (AuditSink, mpsc::Receiver<AuditRecord>) {
    let (tx, rx) = mpsc::channel(capacity);
    (AuditSink { tx, dropped }, rx)
}

/// Appends queued records in batches. When `closing` fires, the queue is closed to new
/// records and what it holds is written; then the writer ends.
pub async fn write_behind(
    log: Arc<dyn AuditLog>,
    mut queue: mpsc::Receiver<AuditRecord>,
    closing: impl Future<Output = ()>,
    dropped: IntCounter,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut closing = std::pin::pin!(closing);
    let mut closed = false;
    loop {
        let received = tokio::select! {
            biased;
            n = queue.recv_many(&mut batch, BATCH) => n,
            () = &mut closing, if !closed => {
                closed = true;
                queue.close();
                continue;
            }
        };
        if received == 0 {
            break;
        }
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=ATTEMPTS {
            match log.append(&batch).await {
                Ok(()) => break,
                Err(err) if attempt < ATTEMPTS => {
                    tracing::warn!(error = %err, attempt, "cannot write audit records; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(err) => {
                    dropped.inc_by(batch.len() as u64);
                    tracing::error!(
                        error = %err,
                        lost = batch.len(),
                        "cannot write audit records; giving them up"
                    );
                }
            }
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use chrono::Utc;
    use tenantd_domain::{AuditQuery, RepoError};
    use uuid::Uuid;

    use super::*;

    /// Fails the first `failures` appends, then stores.
    #[derive(Default)]
    struct Flaky {
        failures: Mutex<u32>,
        stored: Mutex<Vec<AuditRecord>>,
    }

    #[async_trait]
    impl AuditLog for Flaky {
        async fn append(&self, records: &[AuditRecord]) -> Result<(), RepoError> {
            let mut failures = self.failures.lock().unwrap();
            if *failures > 0 {
                *failures -= 1;
                return Err(RepoError::Unavailable("down".into()));
            }
            self.stored.lock().unwrap().extend_from_slice(records);
            Ok(())
        }

        async fn list(&self, _: &AuditQuery) -> Result<Vec<AuditRecord>, RepoError> {
            Ok(Vec::new())
        }
    }

    fn counter() -> IntCounter {
        IntCounter::new("audit_records_dropped_total", "test").unwrap()
    }

    fn record() -> AuditRecord {
        AuditRecord {
            id: Uuid::now_v7(),
            principal: "spiffe://tenantd.local/admin".into(),
            method: "/tenant.v1.PlanService/ListPlans".into(),
            tenant_id: None,
            code: "OK".into(),
            at: Utc::now(),
            request_id: "r".into(),
        }
    }

    #[tokio::test]
    async fn every_queued_record_is_written_before_the_writer_ends_despite_failures() {
        let log = Arc::new(Flaky {
            failures: Mutex::new(2),
            ..Flaky::default()
        });
        let (sink, rx) = queue(CAPACITY, counter());
        let (close, closing) = tokio::sync::oneshot::channel::<()>();
        let writer = tokio::spawn(write_behind(
            log.clone(),
            rx,
            async {
                let _ = closing.await;
            },
            counter(),
        ));
        let records: Vec<_> = (0..1200).map(|_| record()).collect();
        for r in &records {
            sink.record(r.clone());
        }
        // The sink stays alive (as in a server whose connections linger): closing is explicit.
        close.send(()).unwrap();
        writer.await.unwrap();
        assert_eq!(*log.stored.lock().unwrap(), records);
        sink.record(record());
        assert_eq!(sink.dropped(), 1, "a closed queue refuses and counts");
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_growing() {
        let (sink, _rx) = queue(2, counter());
        for _ in 0..5 {
            sink.record(record());
        }
        assert_eq!(sink.dropped(), 3);
    }
}

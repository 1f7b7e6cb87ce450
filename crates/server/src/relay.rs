//! The event relay's background tasks: one publishes the outbox to Kafka (after making
//! sure the topic exists), backing off while the brokers do not take events; the other
//! measures the backlog for the metrics.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::wiring::Relay;

/// First delay after a failure.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// Longest delay between attempts while the brokers are down.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the backlog is measured.
const MEASURE_EVERY: Duration = Duration::from_secs(1);

/// The running relay tasks.
#[derive(Debug)]
pub struct RelayTasks {
    relay: Relay,
    publishing: JoinHandle<()>,
    measuring: JoinHandle<()>,
}

/// Starts the relay; it stops between batches once `stop` turns true.
pub fn start(relay: Relay, stop: watch::Receiver<bool>) -> RelayTasks {
    RelayTasks {
        publishing: tokio::spawn(publish(relay.clone(), stop)),
        measuring: tokio::spawn(measure(relay.clone())),
        relay,
    }
}

impl RelayTasks {
    /// Waits until `deadline` for the batch in flight, then flushes the producer (at least
    /// a moment). A batch still unconfirmed then is dropped: its transaction rolls back and
    /// its events are published again later (at least once).
    pub async fn stop(self, deadline: tokio::time::Instant) {
        self.measuring.abort();
        let abort = self.publishing.abort_handle();
        if tokio::time::timeout_at(deadline, self.publishing)
            .await
            .is_err()
        {
            abort.abort();
            tracing::warn!(
                "the event relay was still publishing at the deadline; those events will be published again"
            );
        }
        let flush_for = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_secs(1));
        if let Err(err) = self.relay.relay.flush(flush_for).await {
            tracing::warn!(error = %err, "kafka producer not flushed; undelivered events stay in the outbox");
        }
    }
}

async fn sleep_or_stop(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => false,
        _ = stop.wait_for(|stop| *stop) => true,
    }
}

async fn publish(relay: Relay, mut stop: watch::Receiver<bool>) {
    let mut backoff = MIN_BACKOFF;
    let mut failing = false;
    loop {
        if *stop.borrow() {
            return;
        }
        match relay.publisher.ensure_topic().await {
            Ok(()) => break,
            Err(err) => {
                if !failing {
                    tracing::warn!(topic = %relay.config.topic, error = %err, "cannot make sure the events topic exists; retrying (events wait in the outbox)");
                }
                failing = true;
            }
        }
        if sleep_or_stop(backoff, &mut stop).await {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    backoff = MIN_BACKOFF;
    failing = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let delay = match relay.relay.relay_once().await {
            Ok(done) if done.held_back == 0 => {
                if failing {
                    tracing::info!("kafka takes events again; the outbox is draining");
                }
                failing = false;
                backoff = MIN_BACKOFF;
                if done.claimed == relay.relay.batch_size() {
                    continue;
                }
                relay.config.poll_interval
            }
            Ok(done) => {
                if !failing {
                    tracing::warn!(
                        held_back = done.held_back,
                        "kafka did not confirm events; they wait in the outbox and are retried"
                    );
                }
                failing = true;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                backoff
            }
            Err(err) => {
                if !failing {
                    tracing::warn!(error = %err, "the event relay cannot read the outbox; retrying");
                }
                failing = true;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                backoff
            }
        };
        if sleep_or_stop(delay, &mut stop).await {
            return;
        }
    }
}

async fn measure(relay: Relay) {
    let mut ticker = tokio::time::interval(MEASURE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(err) = relay.relay.measure().await {
            tracing::debug!(error = %err, "cannot measure the outbox backlog");
        }
    }
}

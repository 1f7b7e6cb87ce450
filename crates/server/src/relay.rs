//! The event relay's background tasks: one publishes the outbox to Kafka (after making
//! sure the topic exists), backing off while the brokers do not take events; the other
//! measures the backlog for the metrics. Both run on the server's [`Tasks`].

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::tasks::Tasks;
use crate::wiring::Relay;

/// First delay after a failure.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// Longest delay between attempts while the brokers are down.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the backlog is measured.
const MEASURE_EVERY: Duration = Duration::from_secs(1);

/// Starts the relay's tasks: publishing stops between batches once the tasks' token is
/// cancelled; measuring stops at once.
pub fn spawn(relay: &Relay, tasks: &mut Tasks) {
    let stop = tasks.stop_token().clone();
    tasks.spawn("event relay", publish(relay.clone(), stop.clone()));
    tasks.spawn("outbox backlog gauge", measure(relay.clone(), stop));
}

/// Flushes the producer once publishing stopped (at least a moment even when the deadline
/// has passed). A batch that was still unconfirmed was dropped: its transaction rolled back
/// and its events are published again later (at least once).
pub async fn flush(relay: &Relay, deadline: tokio::time::Instant) {
    let flush_for = deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .max(Duration::from_secs(1));
    if let Err(err) = relay.relay.flush(flush_for).await {
        tracing::warn!(error = %err, "kafka producer not flushed; undelivered events stay in the outbox");
    }
}

/// Sleeps `delay`; `true` when `stop` was cancelled first.
async fn sleep_or_stop(delay: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => false,
        () = stop.cancelled() => true,
    }
}

async fn publish(relay: Relay, stop: CancellationToken) {
    let mut backoff = MIN_BACKOFF;
    let mut failing = false;
    loop {
        if stop.is_cancelled() {
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
        if sleep_or_stop(backoff, &stop).await {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    backoff = MIN_BACKOFF;
    failing = false;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let delay = match relay.relay.relay_once().await {
            // Events refused for themselves are counted against them, each pass: no reason
            // to back off for everyone else.
            Ok(done) if done.broker_failures == 0 => {
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
                        "kafka did not take events; they wait in the outbox and are retried"
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
        if sleep_or_stop(delay, &stop).await {
            return;
        }
    }
}

async fn measure(relay: Relay, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(MEASURE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(err) = relay.relay.measure().await {
            tracing::debug!(error = %err, "cannot measure the outbox backlog");
        }
    }
}

//! Connection limits: at most `--max-connections` client connections (handshakes
//! included) are open at once — one over is closed as soon as it is accepted — and a
//! connection that carries no call for `--idle-connection-timeout-seconds` is closed.
//!
//! Idleness is counted in calls, not bytes (keepalive pings do not keep a connection
//! open): every call on a connection holds its [`Activity`] busy from its request to the
//! end of its response body, watches included. The connection's reads watch the clock:
//! once nothing is left to read, no call is in flight and the last one ended a timeout
//! ago, the read reports the end of the stream and the HTTP/2 server closes the
//! connection. Clients reconnect on their next call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::Context;
use std::time::Duration;

use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::call::{Finish, Observer};
use crate::identity::Caller;
use crate::metrics::LimitMetrics;

/// The connection slots of a listener.
#[derive(Debug, Clone)]
pub struct ConnectionGate {
    slots: Arc<Semaphore>,
    open: IntGauge,
}

impl ConnectionGate {
    /// At most `max` connections, counted in `metrics`' open gauge.
    pub fn new(max: usize, metrics: &LimitMetrics) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
            open: metrics.open().clone(),
        }
    }

    /// A slot for one more connection, unless all are taken.
    pub fn admit(&self) -> Option<ConnectionSlot> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        self.open.inc();
        Some(ConnectionSlot {
            _permit: permit,
            open: self.open.clone(),
        })
    }
}

/// One open connection's slot: freed when the connection is dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    open: IntGauge,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// The calls in flight on one connection and when the last one ended.
#[derive(Debug)]
pub struct Activity {
    born: Instant,
    calls: AtomicUsize,
    /// Milliseconds from `born` to the end of the last call (or to `born`).
    last_end_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            born: Instant::now(),
            calls: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
        }
    }
}

impl Activity {
    fn begin(&self) {
        self.calls.fetch_add(1, Ordering::AcqRel);
    }

    fn end(&self) {
        let since_born = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_end_ms.fetch_max(since_born, Ordering::AcqRel);
        self.calls.fetch_sub(1, Ordering::AcqRel);
    }

    /// When the connection became idle, or `None` while a call is in flight.
    fn idle_since(&self) -> Option<Instant> {
        (self.calls.load(Ordering::Acquire) == 0)
            .then(|| self.born + Duration::from_millis(self.last_end_ms.load(Ordering::Acquire)))
    }
}

/// The idle deadline of one connection, checked by its reads.
#[derive(Debug)]
pub struct IdleTimer {
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    metrics: LimitMetrics,
}

impl IdleTimer {
    /// A connection closed after `timeout` without calls, counted in `metrics`.
    pub fn new(timeout: Duration, metrics: LimitMetrics) -> Self {
        Self {
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            metrics,
        }
    }

    /// Whether the connection has been idle for the timeout; if not, `cx` is woken when
    /// it may have been.
    pub fn expired(&mut self, activity: &Activity, cx: &mut Context<'_>) -> bool {
        loop {
            let now = Instant::now();
            let deadline = match activity.idle_since() {
                Some(since) if since + self.timeout <= now => {
                    self.metrics.closed_idle();
                    return true;
                }
                Some(since) => since + self.timeout,
                // With calls in flight, look again when the timer is due (a timeout from
                // now once it is): a busy connection re-arms it once per timeout, not per read.
                None if self.sleep.deadline() > now => self.sleep.deadline(),
                None => now + self.timeout,
            };
            if self.sleep.deadline() != deadline {
                self.sleep.as_mut().reset(deadline);
            }
            if self.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
        }
    }
}

/// The call observer that keeps each connection's [`Activity`]: outermost, so every call
/// counts, refused ones included.
#[derive(Debug, Clone, Copy, Default)]
pub struct ActiveCalls;

/// One call in flight on its connection.
#[derive(Debug)]
pub struct ActiveCall(Option<Arc<Activity>>);

impl Finish for ActiveCall {
    fn finish(self, _code: tonic::Code) {
        if let Some(activity) = self.0 {
            activity.end();
        }
    }
}

impl Observer for ActiveCalls {
    type Guard = ActiveCall;

    fn start<B>(&self, request: &mut http::Request<B>) -> ActiveCall {
        let activity = request
            .extensions()
            .get::<Caller>()
            .map(|caller| caller.activity().clone());
        if let Some(activity) = &activity {
            activity.begin();
        }
        ActiveCall(activity)
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn metrics() -> LimitMetrics {
        LimitMetrics::register(&prometheus::Registry::new()).expect("metrics")
    }

    #[test]
    fn connections_beyond_the_limit_get_no_slot_until_one_closes() {
        let metrics = metrics();
        let gate = ConnectionGate::new(2, &metrics);
        let first = gate.admit().expect("a slot");
        let _second = gate.admit().expect("a slot");
        assert!(gate.admit().is_none(), "over the limit");
        assert_eq!(metrics.open().get(), 2);
        drop(first);
        assert_eq!(metrics.open().get(), 1);
        assert!(gate.admit().is_some(), "a closed connection frees its slot");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_a_timeout_after_its_last_call_ended() {
        let activity = Activity::default();
        let mut timer = IdleTimer::new(Duration::from_secs(10), metrics());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(
            !timer.expired(&activity, &mut cx),
            "new connections get a timeout"
        );

        activity.begin();
        tokio::time::advance(Duration::from_mins(1)).await;
        assert!(
            !timer.expired(&activity, &mut cx),
            "a call in flight (a watch, say) keeps the connection however long it lasts"
        );
        activity.end();
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(
            !timer.expired(&activity, &mut cx),
            "9 s after the last call"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            timer.expired(&activity, &mut cx),
            "10 s after the last call"
        );
    }
}

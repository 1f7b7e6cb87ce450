//! Load shedding: at most `--max-concurrent-calls` calls are handled at once; a call beyond
//! them is refused at once with UNAVAILABLE (`OVERLOADED`, with a RetryInfo) rather than
//! queued, so an overloaded replica answers quickly and clients go elsewhere or back off.
//! A call counts from the moment it reaches the layer until its handler has produced the
//! response (a stream's messages are not counted: watches have their own limit). Health
//! and reflection are never shed: probes must see an overloaded replica as alive.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use crate::grpc::status::overloaded;
use crate::metrics::LimitMetrics;

/// When a shed call's RetryInfo says to retry.
pub const SHED_RETRY_AFTER: Duration = Duration::from_millis(100);

/// Tower layer shedding calls beyond a limit.
#[derive(Debug, Clone)]
pub struct LoadShedLayer {
    permits: Arc<Semaphore>,
    refusal: Status,
    metrics: LimitMetrics,
}

impl LoadShedLayer {
    /// At most `max` calls at once, refusals counted in `metrics`.
    pub fn new(max: usize, metrics: LimitMetrics) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
            refusal: overloaded(SHED_RETRY_AFTER),
            metrics,
        }
    }
}

impl<S> tower::Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`LoadShedLayer`] produces.
#[derive(Debug, Clone)]
pub struct LoadShed<S> {
    inner: S,
    layer: LoadShedLayer,
}

/// One call in flight: frees its permit and leaves the gauge when dropped.
struct InFlight {
    _permit: OwnedSemaphorePermit,
    gauge: IntGauge,
}

impl InFlight {
    fn new(permit: OwnedSemaphorePermit, gauge: &IntGauge) -> Self {
        gauge.inc();
        Self {
            _permit: permit,
            gauge: gauge.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Whether calls to `path` are exempt: health checks and reflection.
fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for LoadShed<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if exempt(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        let Ok(permit) = self.layer.permits.clone().try_acquire_owned() else {
            self.layer.metrics.shed();
            let refusal = self.layer.refusal.clone();
            return Box::pin(async move { Ok(refusal.into_http()) });
        };
        let in_flight = InFlight::new(permit, self.layer.metrics.in_flight());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(in_flight);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tokio::sync::oneshot;
    use tonic::Code;
    use tonic_types::StatusExt as _;
    use tower::{Service as _, ServiceExt as _};

    use super::*;

    /// A service whose calls end when the test says so.
    #[derive(Clone)]
    struct Gate(Arc<std::sync::Mutex<Vec<oneshot::Sender<()>>>>);

    impl tower::Service<http::Request<()>> for Gate {
        type Response = http::Response<String>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            let (open, opened) = oneshot::channel();
            self.0.lock().expect("gate").push(open);
            Box::pin(async move {
                let _ = opened.await;
                Ok(http::Response::new("done".to_owned()))
            })
        }
    }

    fn request(path: &str) -> http::Request<()> {
        http::Request::builder()
            .uri(path)
            .body(())
            .expect("request")
    }

    #[tokio::test]
    async fn calls_beyond_the_limit_are_refused_at_once_and_health_never_is() {
        let registry = prometheus::Registry::new();
        let metrics = LimitMetrics::register(&registry).expect("metrics");
        let gate = Gate(Arc::default());
        let mut service =
            tower::Layer::layer(&LoadShedLayer::new(2, metrics.clone()), gate.clone());
        let path = "/tenant.v1.TenantService/GetTenant";
        let first = service.ready().await.expect("ready").call(request(path));
        let second = service.ready().await.expect("ready").call(request(path));
        let first = tokio::spawn(first);
        let second = tokio::spawn(second);
        while gate.0.lock().expect("gate").len() < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(metrics.in_flight().get(), 2);

        let refused = service
            .ready()
            .await
            .expect("ready")
            .call(request(path))
            .await
            .expect("a response");
        let status = Status::from_header_map(refused.headers()).expect("a trailers-only status");
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.get_details_error_info().expect("ErrorInfo").reason,
            "OVERLOADED"
        );
        assert_eq!(
            status
                .get_details_retry_info()
                .expect("RetryInfo")
                .retry_delay,
            Some(SHED_RETRY_AFTER)
        );
        assert_eq!(registry_value(&registry, "calls_shed_total"), 1);

        let health = service
            .ready()
            .await
            .expect("ready")
            .call(request("/grpc.health.v1.Health/Check"));
        let health = tokio::spawn(health);
        for open in gate.0.lock().expect("gate").drain(..) {
            let _ = open.send(());
        }
        for call in [first, second, health] {
            let response = call.await.expect("joined").expect("served");
            assert_eq!(response.body(), "done");
        }
        assert_eq!(
            metrics.in_flight().get(),
            0,
            "finished calls leave the gauge"
        );
        let again = service.ready().await.expect("ready").call(request(path));
        let again = tokio::spawn(again);
        while gate.0.lock().expect("gate").is_empty() {
            tokio::task::yield_now().await;
        }
        for open in gate.0.lock().expect("gate").drain(..) {
            let _ = open.send(());
        }
        assert_eq!(again.await.expect("joined").expect("served").body(), "done");
    }

    /// The `name` line of the registry's text exposition.
    fn registry_value(registry: &prometheus::Registry, name: &str) -> u64 {
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .expect("exposition");
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("{name} is not in the exposition"))
    }
}

//! The rate-limit layer: every tenant.v1 call takes a token from its principal's bucket
//! before it reaches a handler; over the limit it ends with RESOURCE_EXHAUSTED and a
//! google.rpc.RetryInfo saying when to retry. Health and reflection are not limited, and
//! neither are callers without a principal (every handler refuses them anyway).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tenantd_application::RateLimitService;

use crate::grpc::status::to_status;
use crate::identity::Caller;
use crate::metrics::RateLimitMetrics;

/// Tower layer applying [`RateLimitService`] to each call.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limits: RateLimitService,
    metrics: RateLimitMetrics,
}

impl RateLimitLayer {
    /// A layer over `limits`, counting refusals in `metrics`.
    pub fn new(limits: RateLimitService, metrics: RateLimitMetrics) -> Self {
        Self { limits, metrics }
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimited {
            inner,
            limits: self.limits.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`RateLimitLayer`] produces.
#[derive(Debug, Clone)]
pub struct RateLimited<S> {
    inner: S,
    limits: RateLimitService,
    metrics: RateLimitMetrics,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for RateLimited<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let principal = request
            .uri()
            .path()
            .starts_with("/tenant.v1.")
            .then(|| {
                request
                    .extensions()
                    .get::<Caller>()
                    .and_then(|c| c.principal.clone())
            })
            .flatten();
        // The clone that was made ready is the one to call.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let limits = self.limits.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            if let Some(principal) = principal
                && let Err(err) = limits.check(&principal).await
            {
                metrics.limited(principal.role());
                return Ok(to_status(err).into_http());
            }
            inner.call(request).await
        })
    }
}

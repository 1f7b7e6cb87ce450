//! What the call layers share: each call's context (its request id and the tenant its
//! handler names), and how a call's end is observed — the gRPC code of a response is read
//! from `grpc-status` in its headers (a trailers-only error) or in the trailers at the end
//! of its body, so a streaming call is observed when it really ends; a body dropped before
//! its trailers (the client went away) ends as CANCELLED.
//!
//! A call layer is an [`ObserveLayer`] over an [`Observer`] that starts a guard for each
//! call and is told, through it, how the call ended: the metrics layer (`metrics/grpc.rs`,
//! metrics and the access log) and the audit layer (`audit/layer.rs`).

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tenantd_domain::TenantId;
use tonic::Code;

use crate::identity::Caller;

/// A call's context, shared by the layers and the handler (the first layer to see the call
/// makes it; they sit inside the connection's identification): the caller, the request id
/// and the tenant the handler names once it has authorized the call, so the access log
/// and the audit record can name it. What only a log line or an audit record needs (the
/// caller's SPIFFE id, a fresh request id) is made when one asks for it, so a call that is
/// neither logged nor audited makes none.
#[derive(Debug, Clone)]
pub struct CallContext(Arc<CallState>);

#[derive(Debug)]
struct CallState {
    caller: Option<Caller>,
    /// The caller's `x-request-id` when it is a sane one.
    sent_request_id: Option<http::HeaderValue>,
    /// A fresh UUIDv7 made on first use when none was sent.
    made_request_id: OnceLock<String>,
    tenant: OnceLock<TenantId>,
}

impl CallContext {
    /// The context of `request`, made (and attached for the other layers and the handler)
    /// when no layer made it before.
    pub fn of<B>(request: &mut http::Request<B>) -> Self {
        if let Some(context) = request.extensions().get::<Self>() {
            return context.clone();
        }
        let context = Self(Arc::new(CallState {
            caller: request.extensions().get::<Caller>().cloned(),
            sent_request_id: sent_request_id(request.headers()),
            made_request_id: OnceLock::new(),
            tenant: OnceLock::new(),
        }));
        request.extensions_mut().insert(context.clone());
        context
    }

    /// The caller's SPIFFE id, or `unknown`.
    pub fn principal(&self) -> String {
        self.0
            .caller
            .as_ref()
            .map_or_else(|| "unknown".to_owned(), Caller::name)
    }

    /// The caller's `x-request-id` when it is 1-128 visible ASCII characters, else a fresh
    /// UUIDv7 (the same one on every ask).
    pub fn request_id(&self) -> &str {
        match &self.0.sent_request_id {
            // Checked to be visible ASCII when the context was made.
            Some(sent) => sent.to_str().unwrap_or_default(),
            None => self
                .0
                .made_request_id
                .get_or_init(|| tenantd_adapters::system::new_v7().to_string()),
        }
    }

    /// Records the call's tenant (the first value wins).
    pub fn set_tenant(&self, tenant: TenantId) {
        let _first_wins = self.0.tenant.set(tenant);
    }

    /// The call's tenant, if one was recorded.
    pub fn tenant(&self) -> Option<TenantId> {
        self.0.tenant.get().copied()
    }
}

fn sent_request_id(headers: &http::HeaderMap) -> Option<http::HeaderValue> {
    headers
        .get("x-request-id")
        .filter(|v| (1..=128).contains(&v.len()) && v.as_bytes().iter().all(u8::is_ascii_graphic))
        .cloned()
}

/// Told once how a call ended.
pub trait Finish: Send + 'static {
    /// The call ended with `code`.
    fn finish(self, code: Code);
}

/// What a call layer does with each call: starts a guard when the call comes in; the guard
/// is told how it ended.
pub trait Observer: Clone + Send + Sync + 'static {
    /// The guard of one call.
    type Guard: Finish;

    /// A call comes in.
    fn start<B>(&self, request: &mut http::Request<B>) -> Self::Guard;
}

/// Tower layer observing every call of the services it wraps with `O`. Who calls comes from
/// the connection (`identity::Identified` puts the [`Caller`] into every request).
#[derive(Debug, Clone)]
pub struct ObserveLayer<O> {
    observer: O,
}

impl<O> ObserveLayer<O> {
    /// A layer observing calls with `observer`.
    pub fn new(observer: O) -> Self {
        Self { observer }
    }
}

impl<S, O: Clone> tower::Layer<S> for ObserveLayer<O> {
    type Service = Observed<S, O>;

    fn layer(&self, inner: S) -> Self::Service {
        Observed {
            inner,
            observer: self.observer.clone(),
        }
    }
}

/// The service [`ObserveLayer`] produces.
#[derive(Debug, Clone)]
pub struct Observed<S, O> {
    inner: S,
    observer: O,
}

impl<S, O, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Observed<S, O>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    O: Observer,
    ResBody: 'static,
{
    type Response = http::Response<ObservedBody<ResBody, O::Guard>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let guard = self.observer.start(&mut request);
        Box::pin(observe(self.inner.call(request), Ending::new(guard)))
    }
}

/// A call in flight: reports its code to `G` exactly once, when dropped.
#[derive(Debug)]
struct Ending<G: Finish> {
    code: Option<Code>,
    guard: Option<G>,
}

impl<G: Finish> Ending<G> {
    /// A call reported to `guard`.
    fn new(guard: G) -> Self {
        Self {
            code: None,
            guard: Some(guard),
        }
    }

    /// The code the response stated.
    fn saw(&mut self, code: Code) {
        self.code = Some(code);
    }

    /// `code`, unless the response stated one.
    fn settle(&mut self, code: Code) {
        self.code.get_or_insert(code);
    }
}

impl<G: Finish> Drop for Ending<G> {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            guard.finish(self.code.unwrap_or(Code::Cancelled));
        }
    }
}

/// Awaits the inner service's response and watches its body; a failed service call ends
/// as INTERNAL. If this future is dropped (the client went away), the call ends CANCELLED.
async fn observe<F, B, E, G>(
    response: F,
    mut ending: Ending<G>,
) -> Result<http::Response<ObservedBody<B, G>>, E>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    G: Finish,
{
    match response.await {
        Ok(response) => {
            if let Some(code) = status_of(response.headers()) {
                ending.saw(code);
            }
            Ok(response.map(|inner| ObservedBody {
                inner,
                ending: Some(ending),
            }))
        }
        Err(err) => {
            ending.settle(Code::Internal);
            Err(err)
        }
    }
}

fn status_of(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(Code::from_i32(value.parse().ok()?))
}

pin_project_lite::pin_project! {
    /// A response body that watches for the `grpc-status` trailer and ends the call when
    /// the body ends or is dropped.
    #[derive(Debug)]
    pub struct ObservedBody<B, G: Finish> {
        #[pin]
        inner: B,
        ending: Option<Ending<G>>,
    }
}

/// The default body of a call refused before it reached the layer: nothing to observe.
impl<B: Default, G: Finish> Default for ObservedBody<B, G> {
    fn default() -> Self {
        Self {
            inner: B::default(),
            ending: None,
        }
    }
}

impl<B, G> Body for ObservedBody<B, G>
where
    B: Body<Data = Bytes>,
    G: Finish,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let (Some(trailers), Some(ending)) = (frame.trailers_ref(), this.ending.as_mut())
                    && let Some(code) = status_of(trailers)
                {
                    ending.saw(code);
                }
            }
            Some(Err(_)) => {
                if let Some(ending) = this.ending.as_mut() {
                    ending.settle(Code::Internal);
                }
                this.ending.take();
            }
            None => {
                this.ending.take();
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The canonical name of `code` (`OK`, `PERMISSION_DENIED`, ...), as audit records use it.
pub fn status_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

//! The call observer: every RPC's end is recorded once, as the gRPC server metrics
//! (`grpc_server_started_total`, `grpc_server_handled_total`,
//! `grpc_server_handling_seconds`, labelled by service, method, type and code), as one log
//! line, and as an audit record (principal, method, tenant, code, request id).
//!
//! The code of a call is read from the `grpc-status` of the response headers (a
//! trailers-only error) or of the trailers at the end of the body, so streaming calls are
//! counted when they really end. A body dropped before its trailers (the client went away)
//! counts as CANCELLED. Methods that no registered service knows are counted under
//! `unknown`, so a scanner cannot blow up label cardinality.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use http_body::{Body, Frame, SizeHint};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use prost::Message as _;
use tenantd_domain::AuditRecord;
use tonic::Code;
use uuid::Uuid;

use crate::audit::{AuditSink, AuditTarget};
use crate::identity::Caller;

/// One RPC method's labels.
#[derive(Debug, Clone)]
struct Method {
    service: String,
    name: String,
    kind: &'static str,
}

/// The gRPC server metrics and the method table they label by.
#[derive(Debug, Clone)]
pub struct GrpcMetrics {
    started: IntCounterVec,
    handled: IntCounterVec,
    seconds: HistogramVec,
    methods: Arc<HashMap<String, Method>>,
    unknown: Method,
}

impl GrpcMetrics {
    /// Registers the metrics in `registry`; the method table comes from the encoded
    /// `FileDescriptorSet`s of every served service.
    ///
    /// # Errors
    /// When a metric is already registered or a descriptor set does not decode.
    pub fn register(registry: &Registry, descriptor_sets: &[&[u8]]) -> anyhow::Result<Self> {
        let labels = ["grpc_service", "grpc_method", "grpc_type"];
        let started = IntCounterVec::new(
            Opts::new(
                "grpc_server_started_total",
                "Total number of RPCs started on the server.",
            ),
            &labels,
        )?;
        let handled = IntCounterVec::new(
            Opts::new(
                "grpc_server_handled_total",
                "Total number of RPCs completed on the server, regardless of success or failure.",
            ),
            &["grpc_service", "grpc_method", "grpc_type", "grpc_code"],
        )?;
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC calls completed by the server.",
            )
            .buckets(vec![
                0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &labels,
        )?;
        registry.register(Box::new(started.clone()))?;
        registry.register(Box::new(handled.clone()))?;
        registry.register(Box::new(seconds.clone()))?;
        Ok(Self {
            started,
            handled,
            seconds,
            methods: Arc::new(method_table(descriptor_sets)?),
            unknown: Method {
                service: "unknown".into(),
                name: "unknown".into(),
                kind: "unknown",
            },
        })
    }

    fn start(&self, path: &str) -> Call {
        let method = self.methods.get(path).unwrap_or(&self.unknown).clone();
        self.started
            .with_label_values(&[&method.service, &method.name, method.kind])
            .inc();
        Call {
            metrics: self.clone(),
            method,
            started: Instant::now(),
            code: None,
            audit: None,
        }
    }
}

fn method_table(descriptor_sets: &[&[u8]]) -> anyhow::Result<HashMap<String, Method>> {
    let mut table = HashMap::new();
    for encoded in descriptor_sets {
        let set = prost_types::FileDescriptorSet::decode(*encoded)?;
        for file in set.file {
            for service in &file.service {
                let full = format!("{}.{}", file.package(), service.name());
                for method in &service.method {
                    let kind = match (method.client_streaming(), method.server_streaming()) {
                        (false, false) => "unary",
                        (false, true) => "server_stream",
                        (true, false) => "client_stream",
                        (true, true) => "bidi_stream",
                    };
                    table.insert(
                        format!("/{full}/{}", method.name()),
                        Method {
                            service: full.clone(),
                            name: method.name().to_owned(),
                            kind,
                        },
                    );
                }
            }
        }
    }
    Ok(table)
}

/// One call in flight; records its outcome exactly once, when dropped.
#[derive(Debug)]
struct Call {
    metrics: GrpcMetrics,
    method: Method,
    started: Instant,
    code: Option<Code>,
    audit: Option<Audit>,
}

/// What the audit record of a call needs besides its outcome.
#[derive(Debug)]
struct Audit {
    sink: AuditSink,
    path: String,
    principal: String,
    request_id: String,
    target: AuditTarget,
}

impl Call {
    /// Records `code` as the outcome unless one was seen already.
    fn settle(&mut self, code: Code) {
        self.code.get_or_insert(code);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let code = self.code.unwrap_or(Code::Cancelled);
        let m = &self.method;
        let elapsed = self.started.elapsed();
        self.metrics
            .handled
            .with_label_values(&[&m.service, &m.name, m.kind, code_name(code)])
            .inc();
        self.metrics
            .seconds
            .with_label_values(&[&m.service, &m.name, m.kind])
            .observe(elapsed.as_secs_f64());
        let principal = self.audit.as_ref().map_or("", |a| a.principal.as_str());
        let tenant_id = self
            .audit
            .as_ref()
            .and_then(|a| a.target.get())
            .map(|t| t.to_string())
            .unwrap_or_default();
        tracing::info!(
            grpc.service = %m.service,
            grpc.method = %m.name,
            grpc.code = code_name(code),
            principal,
            tenant_id,
            request_id = self.audit.as_ref().map_or("", |a| a.request_id.as_str()),
            latency_ms = elapsed.as_secs_f64() * 1e3,
            "rpc finished"
        );
        if let Some(audit) = self.audit.take() {
            audit.sink.record(AuditRecord {
                id: Uuid::now_v7(),
                principal: audit.principal,
                method: audit.path,
                tenant_id: audit.target.get(),
                code: status_name(code).to_owned(),
                at: Utc::now(),
                request_id: audit.request_id,
            });
        }
    }
}

/// The canonical name of `code` (`OK`, `PERMISSION_DENIED`, ...), as audit records use it.
fn status_name(code: Code) -> &'static str {
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

/// The caller's `x-request-id` when it is a sane one (1-128 visible ASCII characters),
/// else a fresh UUIDv7.
fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned)
}

/// The label Go's grpc-prometheus uses for `code`: Go's `codes.Code.String()` (`OK`, `NotFound`, ...).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

fn status_of(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(Code::from_i32(value.parse().ok()?))
}

/// Tower layer observing every call of the services it wraps. It must sit inside the
/// identity layer, which tells it who calls.
#[derive(Debug, Clone)]
pub struct CallLayer {
    metrics: GrpcMetrics,
    audit: Option<AuditSink>,
}

impl CallLayer {
    /// A layer recording into `metrics` and, when given, queueing audit records on `audit`.
    pub fn new(metrics: GrpcMetrics, audit: Option<AuditSink>) -> Self {
        Self { metrics, audit }
    }
}

impl<S> tower::Layer<S> for CallLayer {
    type Service = CallService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallService {
            inner,
            metrics: self.metrics.clone(),
            audit: self.audit.clone(),
        }
    }
}

/// The service [`CallLayer`] produces.
#[derive(Debug, Clone)]
pub struct CallService<S> {
    inner: S,
    metrics: GrpcMetrics,
    audit: Option<AuditSink>,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for CallService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Send,
    S::Future: Send + 'static,
    S::Error: Send,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let mut call = self.metrics.start(request.uri().path());
        if let Some(sink) = &self.audit {
            let target = AuditTarget::default();
            request.extensions_mut().insert(target.clone());
            let principal = request
                .extensions()
                .get::<Caller>()
                .map_or_else(|| "unknown".to_owned(), Caller::name);
            call.audit = Some(Audit {
                sink: sink.clone(),
                path: request.uri().path().to_owned(),
                principal,
                request_id: request_id(request.headers()),
                target,
            });
        }
        let response = self.inner.call(request);
        Box::pin(async move {
            // If the handler future is dropped (client gone), `call` records CANCELLED.
            match response.await {
                Ok(response) => {
                    if let Some(code) = status_of(response.headers()) {
                        call.code = Some(code);
                    }
                    Ok(response.map(|inner| MeteredBody {
                        inner,
                        call: Some(call),
                    }))
                }
                Err(err) => {
                    call.settle(Code::Internal);
                    Err(err)
                }
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that watches for the `grpc-status` trailer and records the call
    /// when the body ends or is dropped.
    #[derive(Debug)]
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body<Data = Bytes>,
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
                if let (Some(trailers), Some(call)) = (frame.trailers_ref(), this.call.as_mut())
                    && let Some(code) = status_of(trailers)
                {
                    call.code = Some(code);
                }
            }
            Some(Err(_)) => {
                if let Some(call) = this.call.as_mut() {
                    call.settle(Code::Internal);
                }
                this.call.take();
            }
            None => {
                this.call.take();
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

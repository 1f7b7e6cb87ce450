//! The metrics layer: every RPC's end is recorded once, as the gRPC server metrics
//! (`grpc_server_started_total`, `grpc_server_handled_total`,
//! `grpc_server_handling_seconds`, labelled by service, method, type and code) and as one
//! access-log line. (Audit records are the audit layer's.)
//!
//! A call's end is observed as [`crate::call`] describes. Methods that no registered
//! service knows are counted under `unknown`, so a scanner cannot blow up label
//! cardinality.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};
use prost::Message as _;
use tonic::Code;

use crate::audit::is_read_method;
use crate::call::{CallContext, Finish, ObserveLayer, Observer};

/// gRPC status codes there are (0-16).
const CODES: usize = 17;

/// One RPC method's labels, and its series, each resolved on first use (a method never
/// called has none, as before; a call never looks a label set up).
#[derive(Debug)]
struct Method {
    service: String,
    name: String,
    kind: &'static str,
    started: OnceLock<IntCounter>,
    seconds: OnceLock<Histogram>,
    handled: [OnceLock<IntCounter>; CODES],
}

impl Method {
    fn new(service: String, name: String, kind: &'static str) -> Self {
        Self {
            service,
            name,
            kind,
            started: OnceLock::new(),
            seconds: OnceLock::new(),
            handled: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    fn started(&self, vec: &IntCounterVec) -> &IntCounter {
        self.started
            .get_or_init(|| vec.with_label_values(&[&self.service, &self.name, self.kind]))
    }

    fn seconds(&self, vec: &HistogramVec) -> &Histogram {
        self.seconds
            .get_or_init(|| vec.with_label_values(&[&self.service, &self.name, self.kind]))
    }

    fn handled(&self, vec: &IntCounterVec, code: Code) -> &IntCounter {
        let index = usize::try_from(i32::from(code)).unwrap_or(0) % CODES;
        self.handled[index].get_or_init(|| {
            vec.with_label_values(&[&self.service, &self.name, self.kind, code_name(code)])
        })
    }
}

/// The gRPC server metrics and the method table they label by.
#[derive(Debug, Clone)]
pub struct GrpcMetrics {
    started: IntCounterVec,
    handled: IntCounterVec,
    seconds: HistogramVec,
    methods: Arc<HashMap<String, Arc<Method>>>,
    unknown: Arc<Method>,
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
            unknown: Arc::new(Method::new("unknown".into(), "unknown".into(), "unknown")),
        })
    }

    fn begin(&self, path: &str, context: CallContext) -> Call {
        let method = self.methods.get(path).unwrap_or(&self.unknown).clone();
        method.started(&self.started).inc();
        Call {
            metrics: self.clone(),
            method,
            started: Instant::now(),
            context,
        }
    }
}

fn method_table(descriptor_sets: &[&[u8]]) -> anyhow::Result<HashMap<String, Arc<Method>>> {
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
                        Arc::new(Method::new(full.clone(), method.name().to_owned(), kind)),
                    );
                }
            }
        }
    }
    Ok(table)
}

/// One call in flight, recorded when it ends.
#[derive(Debug)]
pub struct Call {
    metrics: GrpcMetrics,
    method: Arc<Method>,
    started: Instant,
    context: CallContext,
}

impl Finish for Call {
    fn finish(self, code: Code) {
        let m = &self.method;
        let elapsed = self.started.elapsed();
        m.handled(&self.metrics.handled, code).inc();
        m.seconds(&self.metrics.seconds)
            .observe(elapsed.as_secs_f64());
        // The access log: a read that succeeded is logged at debug (the hot path of other
        // services; its count and latency are in the metrics), every other call at info.
        let routine = code == Code::Ok && is_read_method(&m.service, &m.name);
        if routine && !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let tenant_id = self
            .context
            .tenant()
            .map(|t| t.to_string())
            .unwrap_or_default();
        macro_rules! access_log {
            ($level:ident) => {
                tracing::$level!(
                    grpc.service = %m.service,
                    grpc.method = %m.name,
                    grpc.code = code_name(code),
                    principal = %self.context.principal(),
                    tenant_id,
                    request_id = %self.context.request_id(),
                    latency_ms = elapsed.as_secs_f64() * 1e3,
                    "rpc finished"
                )
            };
        }
        if routine {
            access_log!(debug);
        } else {
            access_log!(info);
        }
    }
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

/// Tower layer recording the metrics and the access log of every call of the services it
/// wraps (the caller comes from the connection, see `identity::Identified`).
pub type MetricsLayer = ObserveLayer<GrpcMetrics>;

impl Observer for GrpcMetrics {
    type Guard = Call;

    fn start<B>(&self, request: &mut http::Request<B>) -> Call {
        let context = CallContext::of(request);
        self.begin(request.uri().path(), context)
    }
}

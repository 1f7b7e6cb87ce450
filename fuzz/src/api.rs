//! The gRPC API in process: every unary `tenant.v1` method of an embedded (in-memory)
//! tenantd, behind the message-limit layer as served, called with fuzzed request bytes as
//! one of the principals. A fuzz input is `[method, principal, message...]`: the first
//! byte picks the method (modulo their number, in path order), the second the caller, the
//! rest are the request message's bytes, framed as gRPC frames them.
//!
//! The oracle: the call ends (within [`CALL_LIMIT`]) with OK or with a status that carries
//! a `google.rpc.ErrorInfo` whose reason is one of `tenant.v1.ErrorReason`, never UNKNOWN
//! and never INTERNAL. A panic anywhere in decoding, conversion, validation or the use
//! cases is a crash libFuzzer reports.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use tenantd_domain::{Principal, TenantId};
use tenantd_server::config::{Config, Environment};
use tenantd_server::grpc::unary_methods;
use tenantd_server::identity::Caller;
use tenantd_server::limits::{MessageLimitLayer, MessageLimited};
use tenantd_server::metrics::LimitMetrics;
use tenantd_server::{App, install_crypto_provider, proto};
use tonic::service::Routes;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;
use tower::{Layer as _, ServiceExt as _};

/// Longest a call may take before the target calls it a hang.
pub const CALL_LIMIT: Duration = Duration::from_secs(10);
/// Calls served by one embedded tenantd before a fresh one replaces it, so that what the
/// calls create (tenants, keys) does not grow without bound over a long run.
const CALLS_PER_APP: u32 = 20_000;
/// The trust domain of the callers.
const TRUST_DOMAIN: &str = "tenantd.test";

/// The callers an input can pick with its second byte (modulo their number).
fn callers() -> Vec<Caller> {
    let tenant: TenantId = "01936f5e-8f3a-7b2c-9d4e-5f6a7b8c9d0e"
        .parse()
        .expect("a UUIDv7");
    [
        Some(Principal::Admin),
        Some(Principal::Service("billing".to_owned())),
        Some(Principal::Tenant(tenant)),
        None,
    ]
    .into_iter()
    .map(|principal| Caller::new(principal, TRUST_DOMAIN))
    .collect()
}

/// One embedded tenantd and its API.
struct Served {
    /// Holds the listeners and services the routes use.
    _app: App,
    /// Holds the development certificates the app generated.
    _dir: tempfile::TempDir,
    api: MessageLimited<Routes>,
    calls: u32,
}

/// The API and what calls it.
pub struct Api {
    runtime: tokio::runtime::Runtime,
    methods: Vec<String>,
    callers: Vec<Caller>,
    served: Mutex<Option<Served>>,
}

impl Api {
    /// The process's API (built on first use).
    pub fn get() -> &'static Self {
        static API: OnceLock<Api> = OnceLock::new();
        API.get_or_init(|| {
            install_crypto_provider();
            Self {
                runtime: tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime"),
                methods: unary_methods(),
                callers: callers(),
                served: Mutex::new(None),
            }
        })
    }

    /// Calls the method `input` picks, as its caller, with its message bytes, and checks
    /// the response against the oracle (panicking on a violation).
    pub fn check(&self, input: &[u8]) {
        let [method, caller, message @ ..] = input else {
            return;
        };
        let path = &self.methods[usize::from(*method) % self.methods.len()];
        let caller = self.callers[usize::from(*caller) % self.callers.len()].clone();
        let mut served = self.served.lock().unwrap_or_else(|e| e.into_inner());
        if served.as_ref().is_none_or(|s| s.calls >= CALLS_PER_APP) {
            *served = None;
            *served = Some(self.runtime.block_on(serve()));
        }
        let served = served.as_mut().expect("served above");
        served.calls += 1;
        let status = self.runtime.block_on(async {
            tokio::time::timeout(CALL_LIMIT, call(&served.api, path, caller, message))
                .await
                .unwrap_or_else(|_| panic!("{path} did not end within {CALL_LIMIT:?}"))
        });
        assert_clear(path, &status);
    }
}

/// Builds an embedded tenantd (every port in memory), listening on free loopback ports.
async fn serve() -> Served {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let certs = dir.path().join("certs").display().to_string();
    let exports = dir.path().join("exports").display().to_string();
    let argv = [
        "tenantd",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--dev-certs-dir",
        &certs,
        "--export-dir",
        &exports,
        "--trust-domain",
        TRUST_DOMAIN,
    ];
    let config = Config::load(argv, &Environment::default()).expect("the fuzz configuration");
    let limits = &config.limits;
    let layer = MessageLimitLayer::new(
        limits.max_request_bytes,
        limits.max_response_bytes,
        LimitMetrics::register(&prometheus::Registry::new()).expect("limit metrics"),
    );
    let app = App::build(config).await.expect("an embedded tenantd");
    let api = layer.layer(app.api_routes());
    Served {
        _app: app,
        _dir: dir,
        api,
        calls: 0,
    }
}

/// One call of `path` with `message` as `caller`; its status (OK included).
async fn call(api: &MessageLimited<Routes>, path: &str, caller: Caller, message: &[u8]) -> Status {
    let mut frame = Vec::with_capacity(message.len() + 5);
    frame.push(0);
    frame.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    frame.extend_from_slice(message);
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://tenantd.test{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(frame)))
        .expect("a request");
    request.extensions_mut().insert(caller);
    let response = api
        .clone()
        .oneshot(request)
        .await
        .expect("routes never fail");
    if let Some(status) = Status::from_header_map(response.headers()) {
        return status;
    }
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{path}: the response body failed: {e}"));
    body.trailers()
        .and_then(Status::from_header_map)
        .unwrap_or_else(|| panic!("{path}: the response carries no grpc-status"))
}

/// Panics unless `status` is OK or a clear refusal: not UNKNOWN or INTERNAL, with an
/// ErrorInfo naming one of `tenant.v1.ErrorReason`.
pub fn assert_clear(path: &str, status: &Status) {
    if status.code() == Code::Ok {
        return;
    }
    assert!(
        !matches!(status.code(), Code::Unknown | Code::Internal),
        "{path} answered {:?}: {}",
        status.code(),
        status.message()
    );
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("{path}: {status:?} carries no ErrorInfo"));
    assert!(
        proto::ErrorReason::from_str_name(&format!("ERROR_REASON_{}", info.reason)).is_some(),
        "{path}: reason {:?} is not a tenant.v1.ErrorReason",
        info.reason
    );
}

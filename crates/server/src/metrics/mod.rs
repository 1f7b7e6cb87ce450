//! Prometheus metrics: the registry, the gRPC server metrics (the names Go's
//! grpc-prometheus made standard) recorded by a tower layer, and the `/metrics` endpoint on
//! its own port.

mod exports;
mod grpc;
mod http;
mod limits;
mod migrations;
mod pool;
pub mod process;
mod provisioning;
mod purge;
mod relay;
mod retention;

pub use exports::ExportMetrics;
pub use grpc::{GrpcMetrics, MetricsLayer};
pub use http::serve as serve_http;
pub use limits::{Direction, LimitMetrics, Refusal};
pub use migrations::MigrationMetrics;
pub use pool::{DbPoolCollector, PoolStats};
pub use provisioning::ProvisioningMetrics;
pub use purge::PurgeMetrics;
pub use relay::{CacheMetrics, RateLimitMetrics, RelayMetrics};
pub use retention::RetentionMetrics;

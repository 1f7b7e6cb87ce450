//! tenantd's driving adapter and composition root: tonic services over mutual TLS,
//! health, reflection, Prometheus metrics, configuration and the wiring of every adapter.

pub mod app;
pub mod audit;
pub mod call;
pub mod config;
pub mod devcerts;
pub mod exports;
pub mod grpc;
pub mod health;
pub mod identity;
pub mod limits;
pub mod metrics;
pub mod proto;
pub mod purge;
pub mod rate_limit;
pub mod relay;
pub mod retention;
pub mod tasks;
pub mod telemetry;
pub mod tls;
pub mod wiring;

pub use app::{App, AppBuilder};
pub use config::Config;

/// Installs rustls' ring crypto provider for the process. Call once before any TLS use;
/// later calls are no-ops.
pub fn install_crypto_provider() {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}

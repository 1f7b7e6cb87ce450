//! The HTTP endpoints on the metrics listener, apart from the mTLS listener: `/metrics`
//! (Prometheus text exposition), and the probes load balancers and Kubernetes use:
//! `/healthz` (the process is up: 200 while it serves anything) and `/readyz` (200 while
//! it takes traffic, 503 with a JSON body naming what is not ready: a critical dependency
//! down, or shutting down), mirroring grpc.health.v1's statuses.

use std::future::Future;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder as _, Registry, TextEncoder};
use tokio::net::TcpListener;

use crate::health::HealthState;

const JSON: &str = "application/json";

#[derive(Clone)]
struct Endpoints {
    registry: Registry,
    health: HealthState,
}

/// Serves `registry` at `/metrics` and the probes of `health` on `listener` until
/// `shutdown` completes.
///
/// # Errors
/// When the server fails while accepting connections.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    health: HealthState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Endpoints { registry, health });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz() -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, JSON)],
        "{\"status\":\"up\"}\n",
    )
}

async fn readyz(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    let readiness = endpoints.health.readiness();
    let code = if readiness.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = serde_json::to_vec(&readiness).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    (code, [(header::CONTENT_TYPE, JSON)], body)
}

async fn render(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&endpoints.registry.gather(), &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
            body,
        ),
        Err(err) => {
            tracing::error!(error = %err, "cannot encode metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain".to_owned())],
                b"cannot encode metrics\n".to_vec(),
            )
        }
    }
}

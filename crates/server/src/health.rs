//! grpc.health.v1 status per dependency (the checks themselves are the wiring's). A background task probes each dependency at an
//! interval and reports it under its own service name (e.g. `database`); when a critical
//! dependency is down the overall status ("") and every tenant.v1 service report
//! NOT_SERVING too, and all return to SERVING by themselves once it answers again.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Services reported by grpc.health.v1 besides the overall "" status and dependencies.
pub const SERVICES: [&str; 5] = [
    "tenant.v1.TenantService",
    "tenant.v1.ProvisioningService",
    "tenant.v1.ApiKeyService",
    "tenant.v1.PlanService",
    "tenant.v1.EventService",
];

/// Something the server depends on that can be checked.
#[async_trait]
pub trait DependencyCheck: Send + Sync {
    /// The name it is reported under in grpc.health.v1.
    fn name(&self) -> &'static str;

    /// Whether the service can serve anything without it.
    fn critical(&self) -> bool;

    /// Checks the dependency now.
    ///
    /// # Errors
    /// Why it is not usable (logged, never sent to callers).
    async fn check(&self) -> Result<(), String>;
}

/// Sets the overall status and every tenant.v1 service to `status`.
pub async fn set_all(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    for service in SERVICES {
        health.set_service_status(service, status).await;
    }
}

/// Probes `checks` every `interval` (the first time at once) until `stop` is cancelled,
/// which also ends a round in progress: once this has returned, it changes no status.
pub async fn probe(
    health: HealthReporter,
    checks: Vec<Arc<dyn DependencyCheck>>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut last: Vec<Option<bool>> = vec![None; checks.len()];
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = round(&health, &checks, &mut last, interval) => {}
        }
    }
}

/// Checks every dependency once and reports what changed, then the overall status.
async fn round(
    health: &HealthReporter,
    checks: &[Arc<dyn DependencyCheck>],
    last: &mut [Option<bool>],
    interval: Duration,
) {
    let mut critical_down = false;
    for (check, last) in checks.iter().zip(last.iter_mut()) {
        // A check must not outlive its interval: a hung dependency counts as down.
        let up = match tokio::time::timeout(interval, check.check()).await {
            Ok(Ok(())) => true,
            Ok(Err(cause)) => {
                if *last != Some(false) {
                    tracing::warn!(dependency = check.name(), cause = %cause, "dependency is down");
                }
                false
            }
            Err(_) => {
                if *last != Some(false) {
                    tracing::warn!(dependency = check.name(), "dependency check timed out");
                }
                false
            }
        };
        if up && *last == Some(false) {
            tracing::info!(dependency = check.name(), "dependency is back");
        }
        if *last != Some(up) {
            let status = if up {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status(check.name(), status).await;
        }
        *last = Some(up);
        critical_down |= !up && check.critical();
    }
    let status = if critical_down {
        ServingStatus::NotServing
    } else {
        ServingStatus::Serving
    };
    set_all(health, status).await;
}

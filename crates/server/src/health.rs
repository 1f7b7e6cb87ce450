//! grpc.health.v1 status per dependency (the checks themselves are the wiring's). A background task probes each dependency at an
//! interval and reports it under its own service name (e.g. `database`); when a critical
//! dependency is down the overall status ("") and every tenant.v1 service report
//! NOT_SERVING too, and all return to SERVING by themselves once it answers again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
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

/// The statuses grpc.health.v1 reports, kept for the HTTP probes (`/readyz`) too: what
/// one reports the other does.
#[derive(Clone)]
pub struct HealthState {
    reporter: HealthReporter,
    statuses: Arc<RwLock<BTreeMap<String, ServingStatus>>>,
    /// The dependencies by name, and whether each is critical.
    dependencies: Arc<BTreeMap<&'static str, bool>>,
    draining: Arc<AtomicBool>,
}

impl std::fmt::Debug for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthState")
            .field("dependencies", &self.dependencies)
            .finish_non_exhaustive()
    }
}

/// What `/readyz` answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// Why not, one entry per cause (`database is NOT_SERVING`, `shutting down`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_ready: Vec<String>,
    /// Each dependency's status, as grpc.health.v1 reports it under its name.
    pub dependencies: BTreeMap<&'static str, &'static str>,
}

impl Readiness {
    /// Whether the replica takes traffic.
    pub fn ready(&self) -> bool {
        self.not_ready.is_empty()
    }
}

/// grpc.health.v1's name of `status`.
fn status_name(status: Option<ServingStatus>) -> &'static str {
    match status {
        Some(ServingStatus::Serving) => "SERVING",
        Some(ServingStatus::NotServing) => "NOT_SERVING",
        Some(ServingStatus::Unknown) | None => "UNKNOWN",
    }
}

impl HealthState {
    /// Reports through `reporter` for `checks` (their names and criticality).
    pub fn new(reporter: HealthReporter, checks: &[Arc<dyn DependencyCheck>]) -> Self {
        Self {
            reporter,
            statuses: Arc::default(),
            dependencies: Arc::new(checks.iter().map(|c| (c.name(), c.critical())).collect()),
            draining: Arc::default(),
        }
    }

    /// Reports `status` for `service` (`""` is the overall status).
    pub async fn set(&self, service: &str, status: ServingStatus) {
        self.statuses
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(service.to_owned(), status);
        self.reporter.set_service_status(service, status).await;
    }

    /// From now on the replica is shutting down: not ready, whatever its dependencies.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Ready when the overall status is SERVING (every critical dependency answers) and
    /// the replica is not shutting down.
    pub fn readiness(&self) -> Readiness {
        let statuses = self.statuses.read().unwrap_or_else(PoisonError::into_inner);
        let dependencies: BTreeMap<&'static str, &'static str> = self
            .dependencies
            .keys()
            .map(|name| (*name, status_name(statuses.get(*name).copied())))
            .collect();
        let mut not_ready: Vec<String> = self
            .dependencies
            .iter()
            .filter(|(name, critical)| **critical && dependencies.get(*name) != Some(&"SERVING"))
            .map(|(name, _)| format!("{name} is {}", dependencies[name]))
            .collect();
        if self.draining.load(Ordering::Acquire) {
            not_ready.push("shutting down".to_owned());
        } else if not_ready.is_empty() && statuses.get("") != Some(&ServingStatus::Serving) {
            not_ready.push(format!(
                "the service is {}",
                status_name(statuses.get("").copied())
            ));
        }
        Readiness {
            status: if not_ready.is_empty() {
                "ready"
            } else {
                "not_ready"
            },
            not_ready,
            dependencies,
        }
    }
}

/// Sets the overall status and every tenant.v1 service to `status`.
pub async fn set_all(health: &HealthState, status: ServingStatus) {
    health.set("", status).await;
    for service in SERVICES {
        health.set(service, status).await;
    }
}

/// Probes `checks` every `interval` (the first time at once) until `stop` is cancelled,
/// which also ends a round in progress: once this has returned, it changes no status.
pub async fn probe(
    health: HealthState,
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
    health: &HealthState,
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
            health.set(check.name(), status).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    struct Named(&'static str, bool);

    #[async_trait]
    impl DependencyCheck for Named {
        fn name(&self) -> &'static str {
            self.0
        }
        fn critical(&self) -> bool {
            self.1
        }
        async fn check(&self) -> Result<(), String> {
            Ok(())
        }
    }

    fn state() -> HealthState {
        let (reporter, _service) = tonic_health::server::health_reporter();
        let checks: Vec<Arc<dyn DependencyCheck>> = vec![
            Arc::new(Named("database", true)),
            Arc::new(Named("cache", false)),
        ];
        HealthState::new(reporter, &checks)
    }

    #[tokio::test]
    async fn ready_while_critical_dependencies_serve_and_not_once_shutting_down() {
        let health = state();
        assert_eq!(
            health.readiness().not_ready,
            ["database is UNKNOWN"],
            "nothing reported yet"
        );
        set_all(&health, ServingStatus::Serving).await;
        health.set("database", ServingStatus::Serving).await;
        health.set("cache", ServingStatus::NotServing).await;
        let ready = health.readiness();
        assert!(ready.ready(), "a non-critical dependency down: {ready:?}");
        assert_eq!(
            serde_json::to_value(&ready).unwrap(),
            serde_json::json!({
                "status": "ready",
                "dependencies": {"cache": "NOT_SERVING", "database": "SERVING"},
            })
        );

        health.set("database", ServingStatus::NotServing).await;
        set_all(&health, ServingStatus::NotServing).await;
        assert_eq!(health.readiness().not_ready, ["database is NOT_SERVING"]);
        health.set("database", ServingStatus::Serving).await;
        assert_eq!(
            health.readiness().not_ready,
            ["the service is NOT_SERVING"],
            "not ready until the overall status serves too"
        );
        set_all(&health, ServingStatus::Serving).await;
        assert!(health.readiness().ready());

        health.drain();
        let draining = health.readiness();
        assert_eq!(
            (draining.status, draining.not_ready),
            ("not_ready", vec!["shutting down".to_owned()])
        );
    }
}

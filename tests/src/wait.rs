//! Waiting for what the server does asynchronously, and reading its metrics.

use std::time::Duration;

use tonic::transport::Channel;

/// The summed integer value of the samples of `metric` whose labels include all of
/// `labels` (counters and histogram counts).
///
/// # Panics
/// When no sample matches: a missing series is an error, never 0.
pub fn counter(text: &str, metric: &str, labels: &[(&str, &str)]) -> u64 {
    let values: Vec<u64> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, rest) = series.split_once('{').unwrap_or((series, ""));
            (name == metric
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<u64>().ok())
            .flatten()
        })
        .collect();
    assert!(
        !values.is_empty(),
        "no sample of {metric} with {labels:?} in /metrics"
    );
    values.into_iter().sum()
}

/// Polls `check` every 100 ms until it holds.
///
/// # Panics
/// When it does not hold within `limit`, naming `what`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether grpc.health.v1 reports `service` as `expected`.
pub async fn health_is(
    health: &tonic_health::pb::health_client::HealthClient<Channel>,
    service: &str,
    expected: tonic_health::pb::health_check_response::ServingStatus,
) -> bool {
    health
        .clone()
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .is_ok_and(|r| r.into_inner().status() == expected)
}

//! The HTTP probes and the process's own metrics on the metrics listener: `/healthz` while
//! the process is up, `/readyz` 503 naming the database while PostgreSQL is cut off and 200
//! again once it is back (as grpc.health.v1 says); a real `tenantd` process exports the
//! `process_*` series and `tenantd_build_info` with the commit it was built from, which
//! `tenantd --version` prints too.

use std::time::Duration;

use tenantd_e2e::process::{TenantdProcess, binary};
use tenantd_e2e::spawn::cleared;
use tenantd_e2e::{counter, eventually, http_get};

use crate::outage::{proxy_to_postgres, server_via};

/// `/readyz`'s status code and JSON body.
async fn readyz(addr: std::net::SocketAddr) -> (u16, serde_json::Value) {
    let (status, body) = http_get(addr, "/readyz").await.unwrap();
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, json)
}

#[tokio::test]
async fn readyz_names_the_database_while_it_is_cut_off_and_healthz_stays_up() {
    let proxy = proxy_to_postgres().await;
    let server = server_via(&proxy, Duration::from_secs(1)).await;
    let addr = server.metrics_addr;
    let (status, ready) = readyz(addr).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["dependencies"]["database"], "SERVING");
    assert!(ready.get("not_ready").is_none(), "{ready}");
    assert_eq!(
        http_get(addr, "/healthz").await.unwrap(),
        (200, "{\"status\":\"up\"}\n".to_owned())
    );

    proxy.cut();
    eventually("/readyz 503", Duration::from_secs(15), || async {
        readyz(addr).await.0 == 503
    })
    .await;
    let (_, ready) = readyz(addr).await;
    assert_eq!(ready["status"], "not_ready");
    assert_eq!(
        ready["not_ready"],
        serde_json::json!(["database is NOT_SERVING"])
    );
    assert_eq!(ready["dependencies"]["database"], "NOT_SERVING");
    assert_eq!(http_get(addr, "/healthz").await.unwrap().0, 200);

    proxy.restore();
    eventually("/readyz 200 again", Duration::from_secs(15), || async {
        readyz(addr).await.0 == 200
    })
    .await;
    assert_eq!(http_get(addr, "/nothing").await.unwrap().0, 404);
    server.stop().await.unwrap();
}

/// The commit of the checkout the tests run in, as git names it.
fn head_commit() -> String {
    let output = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git runs");
    assert!(output.status.success(), "the tests run in a git checkout");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// The value of the one sample of `metric` in `text`.
fn sample(text: &str, metric: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(metric)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no sample of {metric}"))
}

#[tokio::test]
async fn a_process_exports_its_process_series_and_the_build_it_is() {
    let commit = head_commit();
    let version = cleared(binary().unwrap())
        .arg("--version")
        .output()
        .await
        .unwrap();
    let version = String::from_utf8(version.stdout).unwrap();
    assert_eq!(
        version.trim(),
        format!("tenantd {} (commit {commit})", env!("CARGO_PKG_VERSION"))
    );

    let dir = tempfile::tempdir().unwrap();
    let process = TenantdProcess::start_in_memory(dir.path()).await.unwrap();
    let text = process.metrics_text().await.unwrap();
    assert_eq!(
        counter(
            &text,
            "tenantd_build_info",
            &[("commit", &commit), ("version", env!("CARGO_PKG_VERSION"))]
        ),
        1
    );
    let rss = sample(&text, "process_resident_memory_bytes");
    assert!(rss > 1_000_000.0, "resident memory {rss}");
    assert!(sample(&text, "process_open_fds") >= 3.0);
    assert!(sample(&text, "process_max_fds") >= sample(&text, "process_open_fds"));
    let started = sample(&text, "process_start_time_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - 600.0..=now + 1.0).contains(&started),
        "started at {started}, now {now}"
    );
    let cpu = sample(&text, "process_cpu_seconds_total");
    assert!(cpu > 0.0, "cpu seconds {cpu}");
    let (status, _) = http_get(process.metrics_addr, "/readyz").await.unwrap();
    assert_eq!(status, 200, "the embedded store is always ready");
}

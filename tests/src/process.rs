//! The real `tenantd` binary as a child process, for tests that kill it or start several.
//! The binary is the one `cargo build --bin tenantd` left beside the test executable
//! (`make test` builds it first). It starts from a cleared environment: its settings are
//! exactly the flags and variables the test passes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tenantd_adapters::postgres::testing::ScratchSchema;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::TestKeys;
use crate::spawn::cleared;

/// A running `tenantd` process.
#[derive(Debug)]
pub struct TenantdProcess {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    /// Its gRPC address.
    pub grpc_addr: SocketAddr,
    /// Its `/metrics` address.
    pub metrics_addr: SocketAddr,
}

/// Path of the `tenantd` binary built next to the running test.
///
/// # Errors
/// When it has not been built.
pub fn binary() -> anyhow::Result<PathBuf> {
    sibling_binary("tenantd")
}

/// Path of the `tenantctl` binary built next to the running test.
///
/// # Errors
/// When it has not been built.
pub fn tenantctl_binary() -> anyhow::Result<PathBuf> {
    sibling_binary("tenantctl")
}

fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no target directory")?;
    let binary = dir.join(name);
    if !binary.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --bin {name}` (make test does)",
            binary.display()
        );
    }
    Ok(binary)
}

impl TenantdProcess {
    /// Starts `tenantd` on free ports on the scratch `schema` (tenant schemas named apart
    /// for it), with the contact-email `keys` and the development certificates in
    /// `certs_dir`, and waits until it listens.
    ///
    /// # Errors
    /// When it cannot start or exits before listening (its stderr is in the error).
    pub async fn start(
        schema: &ScratchSchema,
        certs_dir: &Path,
        keys: &TestKeys,
    ) -> anyhow::Result<Self> {
        Self::start_with(schema, certs_dir, keys, &[]).await
    }

    /// [`TenantdProcess::start`] with more environment variables (settings).
    ///
    /// # Errors
    /// When it cannot start or exits before listening (its stderr is in the error).
    pub async fn start_with(
        schema: &ScratchSchema,
        certs_dir: &Path,
        keys: &TestKeys,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut command = cleared(binary()?);
        command
            .envs(keys.env())
            .env("TENANTD_DATABASE_URL", schema.url())
            .env(
                "TENANTD_TENANT_SCHEMA_PREFIX",
                schema.tenant_schema_prefix(),
            )
            .envs(env.iter().copied());
        Self::spawn(command, certs_dir).await
    }

    /// Its `/metrics` text.
    ///
    /// # Errors
    /// When the endpoint cannot be reached.
    pub async fn metrics_text(&self) -> anyhow::Result<String> {
        crate::server::scrape_metrics(self.metrics_addr).await
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Starts `tenantd` on the in-memory store with the development certificates in
    /// `certs_dir`, and waits until it listens.
    ///
    /// # Errors
    /// When it cannot start or exits before listening.
    pub async fn start_in_memory(certs_dir: &Path) -> anyhow::Result<Self> {
        Self::spawn(cleared(binary()?), certs_dir).await
    }

    /// [`TenantdProcess::start_in_memory`] with more environment variables (settings).
    ///
    /// # Errors
    /// When it cannot start or exits before listening.
    pub async fn start_in_memory_with(
        certs_dir: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut command = cleared(binary()?);
        command.envs(env.iter().copied());
        Self::spawn(command, certs_dir).await
    }

    async fn spawn(mut command: Command, certs_dir: &Path) -> anyhow::Result<Self> {
        let mut child = command
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(["--log-format", "json", "--log", "info"])
            .arg("--dev-certs-dir")
            .arg(certs_dir)
            // Replicas started with the same directory share their exports, as a volume.
            .arg("--export-dir")
            .arg(certs_dir.join("exports"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot spawn tenantd")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        let (grpc_addr, metrics_addr) = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
                    && event["message"] == "tenantd listening"
                    && let (Some(grpc), Some(metrics)) =
                        (event["grpc"].as_str(), event["metrics"].as_str())
                {
                    return Ok((grpc.parse::<SocketAddr>()?, metrics.parse::<SocketAddr>()?));
                }
                seen.push(line);
            }
            bail!("tenantd exited before listening:\n{}", seen.join("\n"))
        })
        .await
        .context("tenantd did not listen within 30 s")??;
        // Keep reading its log (so it never blocks on a full pipe), for wait_for_log.
        let logs = Arc::new(Mutex::new(seen));
        let sink = logs.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        });
        Ok(Self {
            child,
            logs,
            grpc_addr,
            metrics_addr,
        })
    }

    /// Sends SIGHUP (reload the TLS material).
    ///
    /// # Errors
    /// When the signal cannot be delivered.
    pub async fn hangup(&self) -> anyhow::Result<()> {
        let pid = self.child.id().context("the process has exited")?;
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .await?;
        anyhow::ensure!(status.success(), "kill -HUP {pid} failed");
        Ok(())
    }

    /// Sends SIGTERM and waits up to `limit` for the process to exit: its exit status and
    /// how long it took.
    ///
    /// # Errors
    /// When the signal cannot be delivered or the process outlives `limit` (it is killed).
    pub async fn terminate(
        &mut self,
        limit: Duration,
    ) -> anyhow::Result<(std::process::ExitStatus, Duration)> {
        let pid = self.child.id().context("the process has exited")?;
        let started = std::time::Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        if let Ok(exit) = tokio::time::timeout(limit, self.child.wait()).await {
            return Ok((exit?, started.elapsed()));
        }
        self.child.kill().await?;
        bail!("tenantd did not exit within {limit:?} of SIGTERM")
    }

    /// Its log lines so far (JSON, one event each).
    pub fn log_lines(&self) -> Vec<String> {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits up to `limit` for a log line containing `needle`; whether one came.
    pub async fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        let started = std::time::Instant::now();
        loop {
            let found = self
                .logs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|line| line.contains(needle));
            if found || started.elapsed() > limit {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process with SIGKILL: no shutdown hook runs.
    ///
    /// # Errors
    /// When the signal cannot be delivered.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// Settings of the replicas of the crash tests: a short lease so a survivor takes over
/// quickly, quick retries, and statements allowed to wait on a test's lock.
pub const REPLICA_ENV: [(&str, &str); 5] = [
    ("TENANTD_PROVISIONING_LEASE_MS", "2000"),
    ("TENANTD_PROVISIONING_POLL_INTERVAL_MS", "100"),
    ("TENANTD_PROVISIONING_BACKOFF_BASE_MS", "50"),
    ("TENANTD_PROVISIONING_BACKOFF_MAX_MS", "200"),
    ("TENANTD_DATABASE_STATEMENT_TIMEOUT_MS", "30000"),
];

/// Two replicas on `schema`, started together with [`REPLICA_ENV`], sharing `certs_dir`
/// (and the exports under it) and `keys`.
///
/// # Errors
/// When either cannot start.
pub async fn two_replicas(
    schema: &ScratchSchema,
    certs_dir: &Path,
    keys: &TestKeys,
) -> anyhow::Result<(TenantdProcess, TenantdProcess)> {
    let (a, b) = tokio::join!(
        TenantdProcess::start_with(schema, certs_dir, keys, &REPLICA_ENV),
        TenantdProcess::start_with(schema, certs_dir, keys, &REPLICA_ENV),
    );
    Ok((a?, b?))
}

/// The replica a lease `owner` (`host/pid/worker`) names, and the other.
///
/// # Panics
/// When the owner names neither (a test failure).
pub fn holder_and_other(
    (a, b): (TenantdProcess, TenantdProcess),
    owner: &str,
) -> (TenantdProcess, TenantdProcess) {
    let pid: Option<u32> = owner.split('/').nth(1).and_then(|p| p.parse().ok());
    if a.pid().is_some() && a.pid() == pid {
        (a, b)
    } else if b.pid().is_some() && b.pid() == pid {
        (b, a)
    } else {
        panic!("{owner} is not one of the replicas")
    }
}

//! The processes a bench run starts: the server under test (tenantd or the echo floor),
//! the load generator and the floors' tools, each from a cleared environment and, with
//! pinning on, on its own core.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tenantd_e2e::spawn::cleared;
use tokio::process::{Child, Command};

/// The core the server runs on, and the one the load and the floors' clients run on.
pub const SERVER_CORE: u32 = 0;
/// See [`SERVER_CORE`].
pub const LOAD_CORE: u32 = 1;

/// How processes are placed.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Pin the server to [`SERVER_CORE`] and clients to [`LOAD_CORE`] (`taskset`).
    pub pin: bool,
}

impl Layout {
    /// `program` from a cleared environment, pinned to `core` when pinning is on.
    pub fn command(self, program: impl AsRef<std::ffi::OsStr>, core: u32) -> Command {
        if self.pin {
            let mut command = cleared("taskset");
            command.arg("-c").arg(core.to_string()).arg(program);
            command
        } else {
            cleared(program)
        }
    }
}

/// A server process (tenantd or the echo floor), its stderr in a file.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// Where it listens for gRPC.
    pub addr: SocketAddr,
    /// Its stderr.
    pub log: PathBuf,
}

impl Server {
    /// Starts `command` with its stderr in `log` and waits (up to 60 s) for a line that
    /// `listening` reads an address from.
    ///
    /// # Errors
    /// When it cannot start, exits, or does not listen in time (its log is in the error).
    pub async fn start(
        mut command: Command,
        log: PathBuf,
        listening: impl Fn(&str) -> Option<SocketAddr>,
    ) -> anyhow::Result<Self> {
        let file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut child = command
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .context("cannot spawn the server")?;
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(addr) = text.lines().find_map(&listening) {
                return Ok(Self { child, addr, log });
            }
            if let Some(status) = child.try_wait()? {
                bail!("the server exited ({status}) before listening:\n{text}");
            }
            if started.elapsed() > Duration::from_mins(1) {
                bail!("the server did not listen within 60 s:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its process id (of `taskset`'s program: taskset execs it).
    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("the server has exited")
    }

    /// Resident memory now, in MiB.
    pub fn rss_mib(&self) -> anyhow::Result<f64> {
        Ok(status_kib(self.pid()?, "VmRSS:")? / 1024.0)
    }

    /// CPU time used so far (user + system).
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        cpu_of(self.pid()?)
    }

    /// Stops it (SIGTERM, then SIGKILL after 15 s).
    ///
    /// # Errors
    /// When it cannot be signalled.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let _sent = cleared("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
            if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
                .await
                .is_err()
            {
                self.child.kill().await?;
            }
        }
        Ok(())
    }
}

fn status_kib(pid: u32, field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("malformed status line")?
        .parse()?)
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`, 100 on Linux).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Runs `command` to its end and returns its stdout; a failure carries its stderr.
///
/// # Errors
/// When it cannot start or exits unsuccessfully.
pub async fn output(mut command: Command, what: &str) -> anyhow::Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// `name` on the PATH, or an error saying which package has it.
///
/// # Errors
/// When it is not installed.
pub fn require(name: &str, package: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} is missing: install it (Debian package {package})"))
}

/// The sibling binary `name` of the running one (cargo builds them into one directory).
///
/// # Errors
/// When it has not been built.
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .map(|dir| dir.join(name))
        .filter(|p| p.is_file())
        .with_context(|| {
            format!(
                "{name} is missing beside {}: build it with `cargo build --release --bin {name}` (make bench does)",
                exe.display()
            )
        })?;
    Ok(path)
}

/// CPU time process `pid` used so far (user + system).
fn cpu_of(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command's closing parenthesis: utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Duration::from_secs_f64(
        crate::report::float(ticks) / clock_ticks(),
    ))
}

/// CPU time used so far by every process whose command is one of `names` (PostgreSQL's
/// backends, Redis): a process that ends meanwhile is left out.
pub fn cpu_of_named(names: &[&str]) -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| names.contains(&comm.trim()))
        })
        .filter_map(|pid| cpu_of(pid).ok())
        .sum()
}

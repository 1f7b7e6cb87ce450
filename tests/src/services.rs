//! Real Redis and Kafka-protocol brokers for the tests: the shared ones the test run
//! provides (Redis on `TEST_REDIS_URL` or 127.0.0.1:6379, tansu on `KAFKA_BROKERS`, both
//! started by `make test`), private ones a test starts on a free loopback port to stop or
//! pause (SIGSTOP) without disturbing other tests, and an independent consumer (Python
//! confluent-kafka) that reads a topic back.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::Child;
use uuid::Uuid;

use crate::spawn::cleared;

/// The shared Kafka-protocol broker of the test run.
///
/// # Panics
/// When `KAFKA_BROKERS` is not set, with how to get a broker.
pub fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "KAFKA_BROKERS is not set: these tests need a Kafka-protocol broker. Run them \
                 with `make test`, or `scripts/kafka-broker.sh run -- cargo test ...`, which \
                 start tansu on 127.0.0.1, or point KAFKA_BROKERS at any Kafka"
            )
        })
}

/// A topic name no other test uses.
pub fn unique_topic() -> String {
    format!("tenant.events.test-{}", Uuid::new_v4().simple())
}

/// A free loopback port (closed again: a tiny window for another process to take it).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited with {status} before listening on {addr}");
        }
        if start.elapsed() > Duration::from_secs(15) {
            bail!("{what} did not listen on {addr} within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn signal(child: &Child, name: &str) -> anyhow::Result<()> {
    let pid = child.id().context("the process has exited")?;
    let status = std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -{name} {pid} failed");
    Ok(())
}

/// A process of our own: paused, resumed or killed by the test.
#[derive(Debug)]
pub struct PrivateServer {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    command: Vec<String>,
    what: &'static str,
    dir: tempfile::TempDir,
}

impl PrivateServer {
    async fn spawn(what: &'static str, command: Vec<String>, port: u16) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut server = Self {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            command,
            what,
            dir,
        };
        server.start().await?;
        Ok(server)
    }

    /// Starts it (again, on the same port).
    ///
    /// # Errors
    /// When it does not come up.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let mut child = cleared(&self.command[0])
            .args(&self.command[1..])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} ({})", self.what, self.command[0]))?;
        wait_listening(self.addr, &mut child, self.what).await?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGSTOP: it keeps its socket and accepts connections but answers nothing.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn pause(&self) -> anyhow::Result<()> {
        signal(self.child.as_ref().context("not running")?, "STOP")
    }

    /// SIGCONT.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn resume(&self) -> anyhow::Result<()> {
        signal(self.child.as_ref().context("not running")?, "CONT")
    }

    /// Kills it and waits until it is gone (connections are refused from then on).
    ///
    /// # Errors
    /// When it cannot be killed.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused process would not die of SIGKILL's delivery order otherwise.
            let _ = signal(child, "CONT");
        }
    }
}

/// A Redis server of the test's own on a free loopback port (Debian's `redis-server`).
///
/// # Errors
/// When `redis-server` is missing or does not start.
pub async fn private_redis() -> anyhow::Result<PrivateServer> {
    let port = free_port()?;
    PrivateServer::spawn(
        "redis-server",
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        .map(str::to_owned)
        .to_vec(),
        port,
    )
    .await
    .context("redis-server is needed for this test (scripts/test-services.sh installs it)")
}

/// The tansu binary: `TEST_TANSU_BIN`, else `tansu` in ~/.cargo/bin or on the PATH.
fn tansu() -> PathBuf {
    if let Some(path) = std::env::var_os("TEST_TANSU_BIN") {
        return PathBuf::from(path);
    }
    let cargo_home = std::env::var_os("CARGO_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo"),
        PathBuf::from,
    );
    let installed = cargo_home.join("bin/tansu");
    if installed.is_file() {
        return installed;
    }
    PathBuf::from("tansu")
}

/// A tansu broker of the test's own on a free loopback port, in memory.
///
/// # Errors
/// When tansu is missing (`scripts/kafka-broker.sh install`) or does not start.
pub async fn private_broker() -> anyhow::Result<PrivateServer> {
    let port = free_port()?;
    let url = format!("tcp://127.0.0.1:{port}");
    let bin = tansu();
    PrivateServer::spawn(
        "tansu",
        vec![
            bin.display().to_string(),
            "broker".into(),
            "--listener-url".into(),
            url.clone(),
            "--advertised-listener-url".into(),
            url,
            "--storage-engine".into(),
            "memory://tansu/".into(),
        ],
        port,
    )
    .await
    .context("tansu is needed for this test (scripts/kafka-broker.sh install)")
}

/// One message as the independent consumer decoded it.
#[derive(Debug, Clone)]
pub struct Consumed {
    /// Partition and offset.
    pub partition: i64,
    /// Offset in the partition.
    pub offset: i64,
    /// The message key.
    pub key: String,
    /// Headers, as text.
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// The decoded `TenantEvent` (proto field names).
    pub event: serde_json::Value,
    /// Which payload the event carries (`tenant_created`, ...).
    pub payload_case: String,
}

impl Consumed {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(serde_json::Value::as_str)
    }

    /// The event id.
    pub fn event_id(&self) -> &str {
        self.event["event_id"].as_str().unwrap_or_default()
    }
}

/// Reads `topic` from the beginning with an independent consumer (Python confluent-kafka,
/// decoding with the protos in `proto/`) until `expect` distinct event ids were seen or
/// `timeout` passed. Returns every message read, in the order they were read.
///
/// # Errors
/// When the consumer cannot run or does not see `expect` distinct events in time.
pub async fn consume_events(
    brokers: &str,
    topic: &str,
    expect: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Consumed>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let output = cleared("python3")
        .arg(root.join("python/consume_events.py"))
        .args(["--brokers", brokers, "--topic", topic])
        .args(["--expect", &expect.to_string()])
        .args(["--timeout", &timeout.as_secs().to_string()])
        .arg("--proto-dir")
        .arg(root.join("../proto"))
        .kill_on_drop(true)
        .output()
        .await
        .context("python3 is needed to run tests/python/consume_events.py")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut consumed = Vec::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("consumer printed {line:?}"))?;
        if let Some(err) = value.get("error") {
            bail!("the consumer could not decode a message: {err}");
        }
        consumed.push(Consumed {
            partition: value["partition"].as_i64().unwrap_or(-1),
            offset: value["offset"].as_i64().unwrap_or(-1),
            key: value["key"].as_str().unwrap_or_default().to_owned(),
            headers: value["headers"].as_object().cloned().unwrap_or_default(),
            event: value["event"].clone(),
            payload_case: value["payload_case"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        });
    }
    if !output.status.success() {
        bail!(
            "the consumer saw {} messages, not {expect} distinct events ({}): {}",
            consumed.len(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(consumed)
}

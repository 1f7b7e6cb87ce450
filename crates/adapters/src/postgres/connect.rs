//! Pool creation and migrations.

use std::str::FromStr as _;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

/// The control-plane migrations, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// Pool limits. `acquire_timeout` must stay below the RPC deadline: an exhausted pool
/// answers UNAVAILABLE instead of hanging the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgSettings {
    /// Most connections in the pool.
    pub max_connections: u32,
    /// Longest wait for a pooled connection (also bounds connecting).
    pub acquire_timeout: Duration,
    /// Server-side limit of one statement.
    pub statement_timeout: Duration,
}

/// Why the store could not be opened. Messages name the server, never the password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL does not parse.
    #[error("not a valid PostgreSQL URL: {0}")]
    InvalidUrl(String),
    /// The server could not be reached or refused us.
    #[error("cannot connect to PostgreSQL at {target}: {cause}")]
    Unreachable {
        /// host:port/database.
        target: String,
        /// The driver's reason.
        cause: String,
    },
    /// A migration failed.
    #[error("cannot apply migrations: {0}")]
    Migrate(String),
}

/// Longest life of a pooled connection (a server-side leak is bounded by it).
const MAX_LIFETIME: Duration = Duration::from_mins(30);
/// An idle pooled connection is closed after this.
const IDLE_TIMEOUT: Duration = Duration::from_mins(10);

/// The instant connection ages are measured from.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
/// When a connection last broke (nanoseconds after [`EPOCH`], plus one; 0: never).
static BROKE_AT: AtomicU64 = AtomicU64::new(0);

/// Records that a connection broke (an I/O error, a session the server terminated): every
/// pooled connection opened before now is then closed instead of being handed out, so a
/// restarted server costs the calls that were using a connection at that moment, not one
/// failed call per pooled connection. Pools do not ping a connection before each use.
pub(crate) fn connection_broke() {
    let now = u64::try_from(EPOCH.elapsed().as_nanos()).unwrap_or(u64::MAX);
    BROKE_AT.fetch_max(now.saturating_add(1), Ordering::Relaxed);
}

/// Whether a connection broke after `at` (so a connection taken from the pool at `at` may
/// be one opened before the break).
pub(crate) fn broke_since(at: Instant) -> bool {
    let broke = BROKE_AT.load(Ordering::Relaxed);
    let at = u64::try_from(at.saturating_duration_since(*EPOCH).as_nanos()).unwrap_or(u64::MAX);
    broke != 0 && broke > at
}

/// Whether a connection of `age` was opened before the last [`connection_broke`].
fn opened_before_a_break(age: Duration) -> bool {
    let broke = BROKE_AT.load(Ordering::Relaxed);
    if broke == 0 {
        return false;
    }
    let opened = EPOCH.elapsed().saturating_sub(age);
    u64::try_from(opened.as_nanos()).unwrap_or(u64::MAX) < broke
}

/// Opens a pool and checks that the server answers.
///
/// # Errors
/// [`ConnectError::InvalidUrl`] or [`ConnectError::Unreachable`].
pub async fn connect(url: &str, settings: &PgSettings) -> Result<PgPool, ConnectError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| ConnectError::InvalidUrl(e.to_string()))?
        .application_name("tenantd")
        .options([
            (
                "statement_timeout",
                settings.statement_timeout.as_millis().to_string(),
            ),
            // A safety net: a session must never sit in an open transaction holding locks.
            (
                "idle_in_transaction_session_timeout",
                (settings.statement_timeout * 2).as_millis().to_string(),
            ),
        ]);
    let target = format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("postgres")
    );
    let unreachable = |cause: String| ConnectError::Unreachable {
        target: target.clone(),
        cause,
    };
    // One direct attempt first: a pool would only report that it timed out, while the
    // connection itself says why (refused, unknown host, authentication failed, ...).
    let mut probe = tokio::time::timeout(
        settings.acquire_timeout,
        PgConnection::connect_with(&options),
    )
    .await
    .map_err(|_| unreachable(format!("no answer within {:?}", settings.acquire_timeout)))?
    .map_err(|e| unreachable(e.to_string()))?;
    let version = server_version(&mut probe).await;
    let _closed = probe.close().await;
    // PostgreSQL 14+ notices a client that went away in the middle of a long statement (a
    // killed replica waiting on a lock) and cancels it, instead of finishing it later
    // beside the replica that took the work over.
    let options = if version >= 140_000 {
        options.options([("client_connection_check_interval", "1000")])
    } else {
        options
    };
    LazyLock::force(&EPOCH);
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        // No ping before each use (a round trip per call): a broken connection is noticed
        // when it is used, and then the connections opened before it are recycled.
        .test_before_acquire(false)
        .before_acquire(|_conn, meta| {
            let fresh = !opened_before_a_break(meta.age);
            Box::pin(async move { Ok(fresh) })
        })
        .max_lifetime(MAX_LIFETIME)
        .idle_timeout(IDLE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|e| unreachable(e.to_string()))
}

/// The server's `server_version_num` (0 when it cannot be read).
async fn server_version(conn: &mut PgConnection) -> u32 {
    let version: Result<(String,), _> = sqlx::query_as("SHOW server_version_num")
        .fetch_one(conn)
        .await;
    version.ok().and_then(|(v,)| v.parse().ok()).unwrap_or(0)
}

/// Applies pending migrations under sqlx's advisory lock.
///
/// # Errors
/// [`ConnectError::Migrate`] naming the failure.
pub async fn migrate(pool: &PgPool) -> Result<(), ConnectError> {
    let failed = |e: sqlx::Error| ConnectError::Migrate(e.to_string());
    // A connection of its own, without the pool's statement timeout: waiting for another
    // replica's migrations (the advisory lock) or a long DDL statement must not time out.
    // Detached, so its session setting never returns to the pool.
    let mut conn = pool.acquire().await.map_err(failed)?.detach();
    sqlx::query("SET statement_timeout = 0")
        .execute(&mut conn)
        .await
        .map_err(failed)?;
    let migrated = MIGRATOR
        .run(&mut conn)
        .await
        .map_err(|e| ConnectError::Migrate(e.to_string()));
    let _closed = conn.close().await;
    migrated
}

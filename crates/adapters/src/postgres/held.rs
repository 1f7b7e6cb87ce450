//! Connections the store keeps checked out of its pool between calls.
//!
//! sqlx tests every connection it takes back with a ping (`PoolConnection`'s drop spawns a
//! task that pings before the connection is idle again): a round trip and a task per
//! checkout, which on a busy core costs a primary-key read about as much as the read
//! itself. Most calls end with a connection known to be clean, so the store keeps such a
//! connection itself, in a small stack of its own, and hands it to the next call without
//! that test.
//!
//! Which connections are kept, and for how long:
//! - at most `kept` connections are in the store's hands at a time (in use or idle), fewer
//!   than the pool's maximum, so code that takes connections from the pool directly always
//!   finds one; calls beyond `kept` wait their turn (first come, first served) for one of
//!   the store's, as they would in the pool;
//! - only one whose work finished without an error is kept ([`Lease::finish`]); a lease
//!   dropped early (an error, a cancelled call) goes back to sqlx, whose ping decides
//!   whether the connection is still usable;
//! - a connection goes back to sqlx (which applies its lifetime and idle limits) once it has
//!   been kept for [`HOLD_LIMIT`], or has been idle for [`IDLE_LIMIT`];
//! - none survives a connection break: after [`connection_broke`](super::connect), every
//!   connection taken before it goes back to sqlx, which closes it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::connect::broke_since;

/// Longest time one connection stays in the store's hands before sqlx sees it again.
const HOLD_LIMIT: Duration = Duration::from_secs(30);
/// An idle kept connection goes back to the pool after this.
const IDLE_LIMIT: Duration = Duration::from_secs(1);
/// How often idle kept connections are looked at.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// A connection the store holds: since when, and when it was last used.
struct Kept {
    conn: PoolConnection<Postgres>,
    taken: Instant,
    used: Instant,
}

impl Kept {
    fn reusable(&self, now: Instant) -> bool {
        now.duration_since(self.taken) < HOLD_LIMIT && !broke_since(self.taken)
    }
}

/// The store's kept connections over its pool.
pub(crate) struct Held {
    pool: PgPool,
    /// Idle kept connections, the most recently used last.
    idle: Mutex<Vec<Kept>>,
    /// One per connection the store may hold; a lease holds one.
    turns: Arc<Semaphore>,
    /// Most connections in the store's hands.
    kept: usize,
    /// Whether the idle sweeper runs.
    sweeping: AtomicBool,
}

impl Held {
    /// Kept connections over `pool`: all but a tenth of its maximum (at least one left to
    /// the pool; none kept from a pool of one).
    pub(crate) fn new(pool: PgPool) -> Arc<Self> {
        let max = usize::try_from(pool.options().get_max_connections()).unwrap_or(usize::MAX);
        Self::keeping(pool, max.saturating_sub((max / 10).max(1)))
    }

    /// None kept: every lease goes back to sqlx (for a pool others share as much).
    pub(crate) fn none(pool: PgPool) -> Arc<Self> {
        Self::keeping(pool, 0)
    }

    fn keeping(pool: PgPool, kept: usize) -> Arc<Self> {
        Arc::new(Self {
            pool,
            idle: Mutex::new(Vec::with_capacity(kept)),
            turns: Arc::new(Semaphore::new(kept)),
            kept,
            sweeping: AtomicBool::new(false),
        })
    }

    /// Idle connections kept now.
    pub(crate) fn idle_count(&self) -> usize {
        self.lock().len()
    }

    /// A connection: the most recently used kept one, else one from the pool, once a turn
    /// is free (within the pool's acquire timeout).
    ///
    /// # Errors
    /// [`sqlx::Error::PoolTimedOut`] when no turn or connection came in time.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Result<Lease, sqlx::Error> {
        if self.kept == 0 {
            return Ok(Lease {
                conn: Some(self.pool.acquire().await?),
                taken: None,
                _turn: None,
                home: Arc::clone(self),
            });
        }
        if self.pool.is_closed() {
            return Err(sqlx::Error::PoolClosed);
        }
        // One deadline for the turn and the pool together: the pool's acquire timeout.
        let deadline = tokio::time::Instant::now() + self.pool.options().get_acquire_timeout();
        let turn = tokio::time::timeout_at(deadline, Arc::clone(&self.turns).acquire_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let now = Instant::now();
        loop {
            let Some(kept) = self.lock().pop() else { break };
            if kept.reusable(now) {
                return Ok(Lease {
                    conn: Some(kept.conn),
                    taken: Some(kept.taken),
                    _turn: Some(turn),
                    home: Arc::clone(self),
                });
            }
            drop(kept.conn);
        }
        let conn = tokio::time::timeout_at(deadline, self.pool.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        Ok(Lease {
            conn: Some(conn),
            taken: Some(Instant::now()),
            _turn: Some(turn),
            home: Arc::clone(self),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Kept>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn keep(self: &Arc<Self>, conn: PoolConnection<Postgres>, taken: Instant) {
        let now = Instant::now();
        let kept = Kept {
            conn,
            taken,
            used: now,
        };
        if !kept.reusable(now) || self.pool.is_closed() {
            return;
        }
        self.lock().push(kept);
        if !self.sweeping.swap(true, Ordering::AcqRel) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(sweep(Arc::downgrade(self)))),
                Err(_) => self.sweeping.store(false, Ordering::Release),
            }
        }
    }

    /// Gives idle connections back to the pool: those unused for [`IDLE_LIMIT`] or past
    /// their hold; all of them when `all`.
    fn trim(&self, all: bool) {
        let now = Instant::now();
        let stale: Vec<Kept> = {
            let mut idle = self.lock();
            let (stale, fresh) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|k| all || now.duration_since(k.used) >= IDLE_LIMIT || !k.reusable(now));
            *idle = fresh;
            stale
        };
        drop(stale);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let idle =
            std::mem::take(&mut *self.idle.get_mut().unwrap_or_else(PoisonError::into_inner));
        if tokio::runtime::Handle::try_current().is_ok() {
            drop(idle);
        } else {
            // Outside a runtime sqlx cannot spawn its return task: take them out of the pool
            // (giving back their places in it) and close the sockets here.
            for kept in idle {
                drop(kept.conn.detach());
            }
        }
    }
}

/// Trims idle connections while the store lives.
async fn sweep(held: Weak<Held>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(held) = held.upgrade() else { return };
        held.trim(false);
    }
}

/// A connection leased for one piece of work.
pub(crate) struct Lease {
    conn: Option<PoolConnection<Postgres>>,
    /// When the store took it from the pool, if the store may keep it.
    taken: Option<Instant>,
    /// The lease's turn, given up after the connection is kept or returned.
    _turn: Option<OwnedSemaphorePermit>,
    home: Arc<Held>,
}

impl Lease {
    /// The connection.
    pub(crate) fn conn(&mut self) -> &mut PgConnection {
        match self.conn.as_deref_mut() {
            Some(conn) => conn,
            None => unreachable!("a lease holds its connection until it is finished or dropped"),
        }
    }

    /// The work is done and the connection is clean (no statement or transaction open):
    /// the store may keep it for the next call.
    pub(crate) fn finish(mut self) {
        if let (Some(conn), Some(taken)) = (self.conn.take(), self.taken) {
            self.home.keep(conn, taken);
        }
        // The turn goes with `self`, after the connection is kept for whoever takes it.
    }
}

#[cfg(test)]
impl Held {
    /// Connections in the store's hands now (idle, or leased as kept).
    pub(crate) fn held_count(&self) -> usize {
        self.idle_count() + self.kept - self.turns.available_permits()
    }

    /// Gives every idle kept connection back to the pool.
    pub(crate) fn trim_all(&self) {
        self.trim(true);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::Connection as _;

    use super::super::testing::{ScratchSchema, test_database_url};
    use super::super::{PgSettings, connect};
    use super::*;

    async fn pool(schema: &ScratchSchema, max_connections: u32) -> PgPool {
        pool_waiting(schema, max_connections, Duration::from_secs(3)).await
    }

    async fn pool_waiting(schema: &ScratchSchema, max_connections: u32, wait: Duration) -> PgPool {
        let settings = PgSettings {
            max_connections,
            acquire_timeout: wait,
            statement_timeout: Duration::from_secs(5),
        };
        connect(&schema.url(), &settings).await.expect("pool")
    }

    #[tokio::test]
    async fn a_call_waits_at_most_the_pools_acquire_timeout_in_all() {
        let schema = ScratchSchema::create().await.expect("scratch schema");
        let wait = Duration::from_millis(400);
        let pool = pool_waiting(&schema, 2, wait).await;
        let held = Held::new(pool.clone());
        // The store's one turn is taken, and the pool's other connection too.
        let mut lease = held.acquire().await.expect("lease");
        pid(&mut lease).await;
        let direct = pool.acquire().await.expect("the pool's own connection");
        let started = Instant::now();
        let waited = held.acquire().await;
        assert!(matches!(waited, Err(sqlx::Error::PoolTimedOut)));
        let elapsed = started.elapsed();
        assert!(
            elapsed >= wait && elapsed < wait * 2,
            "waited {elapsed:?} for a {wait:?} timeout"
        );
        drop(direct);
        lease.finish();
    }

    async fn pid(lease: &mut Lease) -> i32 {
        let (pid,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
            .fetch_one(lease.conn())
            .await
            .expect("pid");
        pid
    }

    /// Waits until the pool has `idle` idle connections (sqlx returns them in a task).
    async fn pool_idle(pool: &PgPool, idle: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.num_idle() != idle {
            assert!(
                Instant::now() < deadline,
                "the pool has {} idle connections, not {idle}",
                pool.num_idle()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_finished_lease_is_kept_by_the_store_and_handed_out_again() {
        let schema = ScratchSchema::create().await.expect("scratch schema");
        let pool = pool(&schema, 4).await;
        let held = Held::new(pool.clone());
        let mut lease = held.acquire().await.expect("lease");
        let first = pid(&mut lease).await;
        lease.finish();
        // Kept by the store, never given back to sqlx (whose return pings it).
        assert_eq!((held.idle_count(), held.held_count()), (1, 1));
        assert_eq!(pool.num_idle(), 0);
        let mut again = held.acquire().await.expect("lease");
        assert_eq!(held.idle_count(), 0);
        assert_eq!(pid(&mut again).await, first);
        again.finish();
        assert_eq!((held.idle_count(), held.held_count()), (1, 1));
    }

    #[tokio::test]
    async fn a_lease_dropped_unfinished_goes_back_to_the_pool() {
        let schema = ScratchSchema::create().await.expect("scratch schema");
        let pool = pool(&schema, 4).await;
        let held = Held::new(pool.clone());
        let mut lease = held.acquire().await.expect("lease");
        pid(&mut lease).await;
        drop(lease);
        assert_eq!((held.idle_count(), held.held_count()), (0, 0));
        pool_idle(&pool, 1).await;
    }

    #[tokio::test]
    async fn the_store_keeps_fewer_connections_than_the_pool_has_and_calls_beyond_wait_their_turn()
    {
        let schema = ScratchSchema::create().await.expect("scratch schema");
        let pool = pool(&schema, 4).await;
        let held = Held::new(pool.clone());
        let mut leases = Vec::new();
        let mut pids = Vec::new();
        for _ in 0..3 {
            let mut lease = held.acquire().await.expect("lease");
            pids.push(pid(&mut lease).await);
            leases.push(lease);
        }
        assert_eq!(held.held_count(), 3);
        // A fourth call waits for one of the store's three...
        let waiting = tokio::spawn({
            let held = Arc::clone(&held);
            async move {
                let mut lease = held.acquire().await.expect("lease");
                let pid = pid(&mut lease).await;
                lease.finish();
                pid
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "the store took a fourth connection");
        // ...while the pool's own callers still find one.
        let direct = tokio::time::timeout(Duration::from_secs(1), pool.acquire())
            .await
            .expect("the pool kept a connection for its own callers")
            .expect("acquire");
        drop(direct);
        let first = leases.remove(0);
        first.finish();
        let got = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("the waiting call got the finished connection")
            .expect("task");
        assert_eq!(got, pids[0]);
        leases.into_iter().for_each(Lease::finish);
        assert_eq!((held.idle_count(), held.held_count()), (3, 3));
    }

    #[tokio::test]
    async fn idle_kept_connections_go_back_to_the_pool() {
        let schema = ScratchSchema::create().await.expect("scratch schema");
        let pool = pool(&schema, 4).await;
        let held = Held::new(pool.clone());
        let mut lease = held.acquire().await.expect("lease");
        pid(&mut lease).await;
        lease.finish();
        assert_eq!(held.idle_count(), 1);
        let deadline = Instant::now() + IDLE_LIMIT + SWEEP_EVERY * 4;
        while held.idle_count() > 0 {
            assert!(Instant::now() < deadline, "the idle connection was kept");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(held.held_count(), 0);
        pool_idle(&pool, 1).await;
    }

    #[tokio::test]
    async fn kept_connections_taken_before_a_break_are_not_handed_out() {
        let schema = ScratchSchema::create().await.expect("scratch schema");
        let pool = pool(&schema, 4).await;
        let held = Held::new(pool.clone());
        let mut pids = Vec::new();
        let mut leases = Vec::new();
        for _ in 0..2 {
            let mut lease = held.acquire().await.expect("lease");
            pids.push(pid(&mut lease).await);
            leases.push(lease);
        }
        leases.into_iter().for_each(Lease::finish);
        let mut admin = PgConnection::connect(&test_database_url())
            .await
            .expect("admin connection");
        sqlx::query("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid")
            .bind(&pids)
            .execute(&mut admin)
            .await
            .expect("terminate");
        loop {
            let (left,): (i64,) =
                sqlx::query_as("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
                    .bind(&pids)
                    .fetch_one(&mut admin)
                    .await
                    .expect("sessions");
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The first call meets an ended session; the error records the break.
        let mut lease = held.acquire().await.expect("lease");
        let failed = sqlx::query("SELECT 1").execute(lease.conn()).await;
        let err = failed.expect_err("the session was ended");
        drop(super::super::errors::db(err));
        drop(lease);
        // The other kept connection is older than the break: not handed out.
        let mut lease = held.acquire().await.expect("lease");
        let fresh = pid(&mut lease).await;
        assert!(!pids.contains(&fresh), "an ended session was handed out");
        lease.finish();
    }
}

//! Work under a lease: the one loop every engine (provisioning, purges, exports) runs an
//! attempt in — the attempt under a timeout, the lease renewed every third of its length,
//! and the attempt dropped the moment the lease is lost.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tenantd_domain::ports::Clock;
use tenantd_domain::{Error, RepoError};

/// Why a worker stopped driving a job before it ran out of due work.
#[derive(Debug)]
pub(crate) enum Stop {
    /// Someone else changed the job (a request) or took it over (its lease expired).
    Superseded,
    /// A store or domain failure.
    Failed(Error),
}

impl From<Error> for Stop {
    fn from(err: Error) -> Self {
        Self::Failed(err)
    }
}

impl From<RepoError> for Stop {
    fn from(err: RepoError) -> Self {
        match err {
            RepoError::LeaseLost | RepoError::VersionConflict => Self::Superseded,
            other => Self::Failed(other.into()),
        }
    }
}

/// How an attempt under a lease ended.
#[derive(Debug)]
pub(crate) enum Held<T> {
    /// It finished with this.
    Done(T),
    /// It did not finish within its timeout (and was dropped).
    TimedOut,
    /// The lease was lost (taken over, the job changed, or it expired unrenewed): the
    /// attempt was dropped mid-way and the worker must stop.
    Lost,
}

/// Runs `work` for at most `timeout` while renewing the lease with `renew(until)` every
/// third of `lease`. `renew` answers whether the lease is still held; while the store
/// cannot be reached the lease is ours until it expires, and not a moment longer. `job`
/// names the work in logs. The caller renewed the lease just before (its last write).
pub(crate) async fn renewing<T, R, F>(
    job: &str,
    clock: &dyn Clock,
    lease: Duration,
    timeout: Duration,
    work: impl Future<Output = T>,
    mut renew: R,
) -> Held<T>
where
    R: FnMut(DateTime<Utc>) -> F,
    F: Future<Output = Result<bool, RepoError>>,
{
    let length = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(30));
    let every = (lease / 3).max(Duration::from_millis(10));
    let mut held_until = clock.now() + length;
    let work = tokio::time::timeout(timeout, work);
    tokio::pin!(work);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            done = &mut work => return done.map_or(Held::TimedOut, Held::Done),
            _ = ticker.tick() => {
                let until = clock.now() + length;
                match renew(until).await {
                    Ok(true) => held_until = until,
                    Ok(false) => return Held::Lost,
                    Err(err) if clock.now() < held_until => {
                        tracing::warn!(job, error = %err, "cannot renew a lease; retrying");
                    }
                    Err(err) => {
                        tracing::warn!(job, error = %err, "the lease expired unrenewed; abandoning the attempt");
                        return Held::Lost;
                    }
                }
            }
        }
    }
}

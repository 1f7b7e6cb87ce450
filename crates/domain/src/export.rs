//! Exports (a tenant's data, for the tenant or for offboarding): one archive per request,
//! written by a durable run. Pure state; the service that writes archives and the stores
//! that keep exports build on it.
//!
//! An export is one unit of work — read everything of the tenant, write the archive, make
//! it visible in one rename — so its run is one step with attempts: an attempt that fails
//! (or whose worker is lost) leaves nothing behind, and the next starts from scratch.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::provisioning::{RetryPolicy, StepError};
use crate::{Error, Reason, TenantId};

/// An export's id (UUIDv7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExportId(pub Uuid);

impl fmt::Display for ExportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where an export is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExportState {
    /// Waiting for, or in, an attempt.
    Running,
    /// Its archive is ready to download.
    Succeeded,
    /// Out of attempts; nothing to download.
    Failed,
}

impl ExportState {
    /// Every state.
    pub const ALL: [Self; 3] = [Self::Running, Self::Succeeded, Self::Failed];

    /// The state's name as the API and the store spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
        }
    }

    /// The state spelled `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// The archive an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportArchive {
    /// Its file name in the export directory.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
    /// Files in it (the manifest included).
    pub files: u32,
}

/// How far the attempt in flight (or the last one) got: files and bytes spooled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportProgress {
    /// Files of the archive spooled so far.
    pub files: u32,
    /// Their bytes so far (before compression).
    pub bytes: u64,
}

/// One export of one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Id.
    pub id: ExportId,
    /// The tenant exported.
    pub tenant_id: TenantId,
    /// Who asked for it (a principal's path).
    pub requested_by: String,
    /// Where it is.
    pub state: ExportState,
    /// Attempts started so far.
    pub attempts: u32,
    /// When the running attempt started (`None` between attempts).
    pub attempt_started_at: Option<DateTime<Utc>>,
    /// When the next attempt may start, while running and between attempts.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The last failure.
    pub last_error: Option<StepError>,
    /// The archive, once written.
    pub archive: Option<ExportArchive>,
    /// How far the attempt in flight got, as last recorded.
    pub progress: ExportProgress,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
    /// When it succeeded or failed.
    pub finished_at: Option<DateTime<Utc>>,
    /// When it (and its archive) is deleted.
    pub expires_at: DateTime<Utc>,
    /// Optimistic-concurrency version: 1 on creation, +1 per stored change.
    pub version: u64,
}

impl Export {
    /// A new export, due at once, kept for `retention`.
    pub fn new(
        id: ExportId,
        tenant_id: TenantId,
        requested_by: String,
        now: DateTime<Utc>,
        retention: Duration,
    ) -> Self {
        Self {
            id,
            tenant_id,
            requested_by,
            state: ExportState::Running,
            attempts: 0,
            attempt_started_at: None,
            next_attempt_at: Some(now),
            last_error: None,
            archive: None,
            progress: ExportProgress::default(),
            created_at: now,
            finished_at: None,
            expires_at: now + retention,
            version: 1,
        }
    }

    /// When a worker should next look at it: its next attempt, or the start of the one
    /// running (a worker claiming it then finds the attempt lost); never once ended.
    pub fn due_at(&self) -> Option<DateTime<Utc>> {
        if self.state != ExportState::Running {
            return None;
        }
        self.attempt_started_at.or(self.next_attempt_at)
    }

    fn require_running(&self) -> Result<(), Error> {
        if self.state == ExportState::Running {
            Ok(())
        } else {
            Err(Error::precondition(
                Reason::InvalidTransition,
                format!("the export is {}", self.state.as_str()),
            ))
        }
    }

    /// An attempt starts.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] unless running with no attempt in flight.
    pub fn start(&mut self, now: DateTime<Utc>) -> Result<(), Error> {
        self.require_running()?;
        if self.attempt_started_at.is_some() {
            return Err(Error::precondition(
                Reason::InvalidTransition,
                "an attempt of the export is in flight",
            ));
        }
        self.attempts = self.attempts.saturating_add(1);
        self.attempt_started_at = Some(now);
        self.next_attempt_at = None;
        self.progress = ExportProgress::default();
        Ok(())
    }

    /// The attempt in flight wrote `archive`: the export succeeded.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] without an attempt in flight.
    pub fn succeed(&mut self, archive: ExportArchive, now: DateTime<Utc>) -> Result<(), Error> {
        self.require_attempt()?;
        self.attempt_started_at = None;
        self.archive = Some(archive);
        self.state = ExportState::Succeeded;
        self.finished_at = Some(now);
        Ok(())
    }

    /// The attempt in flight failed with `error`: another is due after the policy's delay,
    /// or — out of attempts, or failed for good — the export fails.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] without an attempt in flight.
    pub fn fail(
        &mut self,
        error: StepError,
        policy: &RetryPolicy,
        jitter: f64,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        self.require_attempt()?;
        self.attempt_started_at = None;
        let retry = policy
            .delay_after(self.attempts, jitter)
            .filter(|_| !error.permanent);
        self.last_error = Some(error);
        if let Some(delay) = retry {
            self.next_attempt_at = Some(now + delay);
        } else {
            self.state = ExportState::Failed;
            self.finished_at = Some(now);
        }
        Ok(())
    }

    fn require_attempt(&self) -> Result<(), Error> {
        self.require_running()?;
        if self.attempt_started_at.is_none() {
            return Err(Error::precondition(
                Reason::InvalidTransition,
                "no attempt of the export is in flight",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap()
    }

    fn export() -> Export {
        let tenant = TenantId::from_uuid(Uuid::now_v7()).unwrap();
        Export::new(
            ExportId(Uuid::now_v7()),
            tenant,
            "admin".into(),
            now(),
            Duration::hours(72),
        )
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::seconds(1),
            max_delay: Duration::seconds(4),
            max_attempts: 2,
        }
    }

    fn archive() -> ExportArchive {
        ExportArchive {
            name: "x.tar.gz".into(),
            size: 10,
            sha256: "ab".into(),
            files: 4,
        }
    }

    #[test]
    fn a_new_export_is_due_now_and_expires_after_its_retention() {
        let e = export();
        assert_eq!(e.due_at(), Some(now()));
        assert_eq!(e.expires_at, now() + Duration::hours(72));
        assert_eq!(e.state, ExportState::Running);
    }

    #[test]
    fn an_attempt_in_flight_is_due_from_its_start_and_succeeds_with_its_archive() {
        let mut e = export();
        let at = now() + Duration::seconds(5);
        e.start(at).unwrap();
        assert_eq!(e.due_at(), Some(at), "a lost attempt is found at once");
        assert!(e.start(at).is_err(), "one attempt at a time");
        e.succeed(archive(), at).unwrap();
        assert_eq!(e.state, ExportState::Succeeded);
        assert_eq!(e.due_at(), None);
        assert_eq!(e.archive, Some(archive()));
        assert!(
            e.fail(StepError::new("X", "y"), &policy(), 1.0, at)
                .is_err()
        );
    }

    #[test]
    fn failures_retry_until_the_attempts_are_spent_then_the_export_fails() {
        let mut e = export();
        e.start(now()).unwrap();
        e.fail(
            StepError::new("EXPORT_DIR_UNWRITABLE", "EACCES"),
            &policy(),
            1.0,
            now(),
        )
        .unwrap();
        assert_eq!(e.state, ExportState::Running);
        assert_eq!(e.due_at(), Some(now() + Duration::seconds(1)));
        e.start(now()).unwrap();
        e.fail(
            StepError::new("EXPORT_DIR_UNWRITABLE", "EACCES"),
            &policy(),
            1.0,
            now(),
        )
        .unwrap();
        assert_eq!(e.state, ExportState::Failed);
        assert_eq!(e.due_at(), None);
        assert_eq!(e.archive, None);
        assert_eq!(
            e.last_error.map(|err| err.reason),
            Some("EXPORT_DIR_UNWRITABLE".to_owned())
        );
    }

    #[test]
    fn a_permanent_failure_fails_at_once() {
        let mut e = export();
        e.start(now()).unwrap();
        e.fail(
            StepError::permanent("TENANT_PURGED", "gone"),
            &policy(),
            1.0,
            now(),
        )
        .unwrap();
        assert_eq!(e.state, ExportState::Failed);
        assert_eq!(e.attempts, 1);
    }
}

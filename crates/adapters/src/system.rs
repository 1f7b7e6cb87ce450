//! Adapters over the operating system: wall clock and UUIDv7 ids.

use chrono::{DateTime, SubsecRound as _, Utc};
use tenantd_domain::api_key::SECRET_BYTES;
use tenantd_domain::ports::{Clock, IdGenerator, SecretGenerator};
use uuid::Uuid;

/// The wall clock, at microsecond precision: what PostgreSQL stores, so a tenant returned
/// by a create equals the same tenant read back later, whatever the store.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now().trunc_subsecs(6)
    }
}

/// UUIDv7 ids from the process-wide v7 context, whose counter keeps them strictly
/// increasing even within one millisecond, so keyset pagination by id is creation order.
#[derive(Debug, Clone, Copy, Default)]
pub struct UuidV7Generator;

impl IdGenerator for UuidV7Generator {
    fn new_v7(&self) -> Uuid {
        Uuid::now_v7()
    }
}

/// Secrets from the operating system's CSPRNG.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl SecretGenerator for OsRandom {
    fn api_key_secret(&self) -> [u8; SECRET_BYTES] {
        let mut secret = [0; SECRET_BYTES];
        // The OS generator only fails on a broken system; better to stop than issue a weak key.
        getrandom::fill(&mut secret).expect("the operating system's random generator failed");
        secret
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random() {
        assert_ne!(OsRandom.api_key_secret(), OsRandom.api_key_secret());
    }

    #[test]
    fn clock_has_microsecond_precision() {
        assert_eq!(SystemClock.now().timestamp_subsec_nanos() % 1_000, 0);
    }

    #[test]
    fn ids_are_v7_and_strictly_increasing() {
        let ids = UuidV7Generator;
        let generated: Vec<Uuid> = (0..10_000).map(|_| ids.new_v7()).collect();
        assert!(generated.iter().all(|id| id.get_version_num() == 7));
        assert!(generated.windows(2).all(|w| w[0] < w[1]));
    }
}

//! Adapters over the operating system: wall clock and UUIDv7 ids.

use std::sync::atomic::{AtomicU64, Ordering};

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

/// UUIDv7 ids, strictly increasing in this process even within one millisecond (a 12-bit
/// counter in `rand_a`), so keyset pagination by id is creation order. No lock and no
/// system call per id: the millisecond and counter advance in one atomic word, and the
/// random bits come from a thread-local generator.
#[derive(Debug, Clone, Copy, Default)]
pub struct UuidV7Generator;

impl IdGenerator for UuidV7Generator {
    fn new_v7(&self) -> Uuid {
        new_v7()
    }
}

/// The last id's Unix milliseconds and counter: `millis << 12 | counter`.
static LAST_V7: AtomicU64 = AtomicU64::new(0);

/// A fresh UUIDv7, greater than every one this process made before (see
/// [`UuidV7Generator`]). When 4,096 ids are made within one millisecond, the next ones
/// borrow from the following millisecond: order wins over the clock by at most that.
pub fn new_v7() -> Uuid {
    let now = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0) << 12;
    let previous = LAST_V7
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or_else(|last| last);
    let packed = now.max(previous + 1);
    let millis = packed >> 12;
    let counter = u16::try_from(packed & 0xFFF).unwrap_or(0);
    // 10 bytes after the timestamp: the version nibble and the counter (rand_a), then
    // random bits (the variant overwrites the top two).
    let random = Uuid::new_v4().into_bytes();
    let mut tail = [0_u8; 10];
    tail[..2].copy_from_slice(&counter.to_be_bytes());
    tail[2..].copy_from_slice(&random[8..]);
    uuid::Builder::from_unix_timestamp_millis(millis, &tail).into_uuid()
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

    #[test]
    fn ids_carry_the_time_and_stay_increasing_across_threads() {
        let before = Utc::now().timestamp_millis();
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..5_000).map(|_| new_v7()).collect::<Vec<_>>()))
            .collect();
        let mut all: Vec<Uuid> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let after = Utc::now().timestamp_millis();
        let count = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), count, "no id twice");
        for id in [all[0], all[count - 1]] {
            let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
            let millis = i64::try_from(secs).unwrap() * 1000 + i64::from(nanos / 1_000_000);
            // 20,000 ids may borrow up to 5 ms past the clock.
            assert!(
                (before..=after + 5).contains(&millis),
                "{millis} outside {before}..={after}"
            );
        }
        assert!(all.iter().all(|id| id.get_version_num() == 7));
    }
}

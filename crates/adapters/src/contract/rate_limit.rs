//! Contract of [`RateLimiter`](tenantd_domain::ports::RateLimiter): token buckets, one per
//! key, refilled at the limit's rate up to its burst.

use std::time::{Duration, Instant};

use tenantd_domain::ports::{Admission, RateLimit};
use uuid::Uuid;

use super::Limiter;

/// A key no other test uses.
fn key(name: &str) -> String {
    format!("contract/{name}/{}", Uuid::new_v4().simple())
}

async fn admitted(limiter: &Limiter, key: &str, limit: RateLimit) -> bool {
    match limiter.limiter.admit(key, limit).await.expect("admit") {
        Admission::Allowed => true,
        Admission::Denied { .. } => false,
    }
}

/// A full bucket admits `burst` requests at once; the next is denied with the time until a
/// token comes back (at most one token's worth of the rate).
pub async fn a_burst_is_admitted_then_the_next_request_waits_for_a_token(limiter: Limiter) {
    let limit = RateLimit {
        per_second: 2,
        burst: 3,
    };
    let key = key("burst");
    for request in 1..=3 {
        assert!(
            admitted(&limiter, &key, limit).await,
            "request {request} of a burst of 3"
        );
    }
    let Admission::Denied { retry_after } =
        limiter.limiter.admit(&key, limit).await.expect("admit")
    else {
        panic!("the fourth request of a burst of 3 must be denied");
    };
    assert!(
        retry_after > Duration::ZERO && retry_after <= Duration::from_millis(500),
        "one token at 2/s comes back within 500 ms, not {retry_after:?}"
    );
}

/// Emptying one key's bucket leaves another key's full.
pub async fn each_key_has_its_own_bucket(limiter: Limiter) {
    let limit = RateLimit {
        per_second: 1,
        burst: 1,
    };
    let (first, second) = (key("first"), key("second"));
    assert!(admitted(&limiter, &first, limit).await);
    assert!(!admitted(&limiter, &first, limit).await);
    assert!(admitted(&limiter, &second, limit).await);
}

/// After a pause the bucket has refilled at the rate, but never beyond the burst.
pub async fn tokens_come_back_at_the_rate_and_never_beyond_the_burst(limiter: Limiter) {
    let limit = RateLimit {
        per_second: 20,
        burst: 2,
    };
    let key = key("refill");
    assert!(admitted(&limiter, &key, limit).await);
    assert!(admitted(&limiter, &key, limit).await);
    assert!(!admitted(&limiter, &key, limit).await, "the burst is spent");
    // 300 ms at 20/s is 6 tokens' worth, but the bucket holds 2.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(admitted(&limiter, &key, limit).await);
    assert!(admitted(&limiter, &key, limit).await);
    assert!(
        !admitted(&limiter, &key, limit).await,
        "a refill stops at the burst"
    );
}

/// At a rate high enough for a limiter to take tokens ahead of need (Redis leases), a
/// bucket still admits no more than its burst plus what the rate refilled meanwhile, and
/// nearly all of that.
pub async fn a_high_rate_admits_its_burst_plus_the_refill_and_no_more(limiter: Limiter) {
    let limit = RateLimit {
        per_second: 2_000,
        burst: 400,
    };
    let key = key("high");
    let started = Instant::now();
    let mut count = 0_u32;
    while started.elapsed() < Duration::from_millis(200) {
        if admitted(&limiter, &key, limit).await {
            count += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let most = 400.0 + 2_000.0 * elapsed;
    assert!(
        f64::from(count) <= most + 1.0,
        "{count} admitted in {elapsed:.3} s: at most {most:.0}"
    );
    // Whatever a limiter holds ahead of need is at most a fraction of the burst.
    assert!(count >= 350, "{count} admitted: the burst alone is 400");
}

//! Open WatchProvisioning streams per principal: each principal may hold at most
//! `--max-watches-per-principal` on this replica; one more is refused with
//! RESOURCE_EXHAUSTED (`TOO_MANY_WATCHES`, the limit in the metadata) until one closes.
//! A watch holds its [`WatchSlot`] for as long as its stream lives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tenantd_domain::{Error, Principal, Reason};

use crate::metrics::LimitMetrics;

/// The open watches of every principal.
#[derive(Debug, Clone)]
pub struct WatchLimits {
    max: usize,
    open: Arc<Mutex<HashMap<Principal, usize>>>,
    metrics: LimitMetrics,
}

impl WatchLimits {
    /// At most `max` open watches per principal, refusals counted in `metrics`.
    pub fn new(max: usize, metrics: LimitMetrics) -> Self {
        Self {
            max,
            open: Arc::default(),
            metrics,
        }
    }

    /// A slot for one more watch of `principal`.
    ///
    /// # Errors
    /// [`Reason::TooManyWatches`] when it has its limit open.
    pub fn admit(&self, principal: &Principal) -> Result<WatchSlot, Error> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(principal.clone()).or_default();
        if *count >= self.max {
            drop(open);
            self.metrics.watch_refused(principal.role());
            return Err(Error::ResourceExhausted {
                reason: Reason::TooManyWatches,
                detail: format!(
                    "this caller has {} WatchProvisioning streams open, the most it may; close one first",
                    self.max
                ),
                retry_after: None,
                limit: Some(u64::try_from(self.max).unwrap_or(u64::MAX)),
            });
        }
        *count += 1;
        Ok(WatchSlot {
            open: self.open.clone(),
            principal: principal.clone(),
        })
    }
}

/// One open watch: frees its principal's slot when dropped.
#[derive(Debug)]
pub struct WatchSlot {
    open: Arc<Mutex<HashMap<Principal, usize>>>,
    principal: Principal,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.principal) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.principal);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_principal_gets_its_own_bounded_count_of_watches() {
        let metrics = LimitMetrics::register(&prometheus::Registry::new()).expect("metrics");
        let limits = WatchLimits::new(2, metrics);
        let billing = Principal::Service("billing".into());
        let first = limits.admit(&billing).expect("within the limit");
        let second = limits.admit(&billing).expect("within the limit");
        let refused = limits.admit(&billing).expect_err("over the limit");
        assert_eq!(refused.reason(), Reason::TooManyWatches);
        assert!(
            limits.admit(&Principal::Admin).is_ok(),
            "other principals are unaffected"
        );
        drop(first);
        let third = limits
            .admit(&billing)
            .expect("a closed watch frees its slot");
        drop(third);
        drop(second);
        assert!(
            limits.open.lock().expect("counts").is_empty(),
            "principals without watches leave no entry"
        );
    }
}

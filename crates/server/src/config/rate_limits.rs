//! Rate-limit settings of the roles without a plan (tenants get their plan's).

use clap::Args;
use tenantd_application::RateLimitSettings;

/// Rates of the roles without a plan.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Rate limits")]
pub struct RateLimitArgs {
    /// Requests per second of each admin identity; 0 = no limit.
    #[arg(long, env = "TENANTD_RATE_LIMIT_ADMIN_RPS", default_value_t = 1000)]
    pub rate_limit_admin_rps: u32,
    /// Requests per second of each service identity; 0 = no limit.
    #[arg(long, env = "TENANTD_RATE_LIMIT_SERVICE_RPS", default_value_t = 5000)]
    pub rate_limit_service_rps: u32,
}

impl RateLimitArgs {
    pub(super) fn resolve(self) -> RateLimitSettings {
        RateLimitSettings {
            admin_per_second: self.rate_limit_admin_rps,
            service_per_second: self.rate_limit_service_rps,
        }
    }
}

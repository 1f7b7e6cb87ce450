//! DNS settings: the names and the address of the records provisioning gives tenants.

use std::net::IpAddr;

use clap::Args;

use super::ConfigError;

/// Tenants' DNS records.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "DNS")]
pub struct DnsArgs {
    /// Domain under which tenants get DNS names, `<slug>.<domain>`.
    #[arg(
        long,
        env = "TENANTD_DNS_BASE_DOMAIN",
        default_value = "tenants.tenantd.local"
    )]
    pub dns_base_domain: String,
    /// Address the tenants' A (or AAAA) records point at.
    #[arg(long, env = "TENANTD_DNS_INGRESS_ADDRESS", default_value = "127.0.0.1")]
    pub dns_ingress_address: IpAddr,
}

/// The validated DNS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// DNS names are `<slug>.<base_domain>`.
    pub base_domain: String,
    /// What the tenants' address records point at.
    pub ingress: IpAddr,
}

impl DnsArgs {
    pub(super) fn resolve(self) -> Result<DnsConfig, ConfigError> {
        let label_ok = |l: &str| {
            (1..=63).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if self.dns_base_domain.len() > 180 || !self.dns_base_domain.split('.').all(label_ok) {
            return Err(ConfigError::new(
                "dns-base-domain",
                "must be a lowercase DNS name such as tenants.example.com",
            ));
        }
        Ok(DnsConfig {
            base_domain: self.dns_base_domain,
            ingress: self.dns_ingress_address,
        })
    }
}

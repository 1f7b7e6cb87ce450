//! Which calls leave an audit record, in the spirit of Kubernetes audit levels and Cloud
//! Audit Logs ("admin activity always, data access optional"): every call that changes
//! something and every denied call (PERMISSION_DENIED, UNAUTHENTICATED, or refused by a
//! rate limit) is always audited; successful and failed reads (Get, List, Verify, Watch,
//! health checks, reflection) only when `--audit-reads` asks for them, all or one in N.

use std::sync::atomic::{AtomicU64, Ordering};

use tonic::Code;

/// What becomes of reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadAudit {
    /// Reads are not audited (denied reads still are).
    None,
    /// Every read is audited.
    All,
    /// One read in every `n` is audited (in the order they end).
    OneIn(u64),
}

impl ReadAudit {
    /// Parses `none`, `all`, or a fraction in (0, 1] (`0.01`: one read in 100).
    ///
    /// # Errors
    /// What is wrong with `text`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "none" => Ok(Self::None),
            "all" => Ok(Self::All),
            other => {
                let fraction: f64 = other.parse().map_err(|_| {
                    format!("{other:?} is neither none, all nor a fraction such as 0.01")
                })?;
                if !(fraction > 0.0 && fraction <= 1.0) {
                    return Err(format!(
                        "{other} is not a fraction in (0, 1]: use none to audit no read"
                    ));
                }
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "1/fraction is in [1, 2^53): rounded to a whole count"
                )]
                let n = (1.0 / fraction).round() as u64;
                Ok(if n <= 1 { Self::All } else { Self::OneIn(n) })
            }
        }
    }
}

/// Whether a gRPC method (its path, `/package.Service/Method`) only reads.
pub fn is_read(path: &str) -> bool {
    path.trim_start_matches('/')
        .split_once('/')
        .is_some_and(|(service, method)| is_read_method(service, method))
}

/// [`is_read`] of a method named apart from its service (`package.Service`).
pub fn is_read_method(service: &str, method: &str) -> bool {
    service.starts_with("grpc.")
        || ["Get", "List", "Verify", "Watch", "Check"]
            .iter()
            .any(|verb| method.starts_with(verb))
}

/// Whether `code` says the call was refused to its caller.
pub fn is_denial(code: Code) -> bool {
    matches!(
        code,
        Code::PermissionDenied | Code::Unauthenticated | Code::ResourceExhausted
    )
}

/// The audit policy of a server.
#[derive(Debug)]
pub struct AuditPolicy {
    reads: ReadAudit,
    reads_seen: AtomicU64,
}

impl AuditPolicy {
    /// A policy auditing reads as `reads` says.
    pub fn new(reads: ReadAudit) -> Self {
        Self {
            reads,
            reads_seen: AtomicU64::new(0),
        }
    }

    /// Whether reads are ever audited without being denied.
    pub fn audits_reads(&self) -> bool {
        self.reads != ReadAudit::None
    }

    /// Whether a call that ended with `code` is audited; `read` from [`is_read`].
    pub fn keeps(&self, read: bool, code: Code) -> bool {
        if !read || is_denial(code) {
            return true;
        }
        match self.reads {
            ReadAudit::None => false,
            ReadAudit::All => true,
            ReadAudit::OneIn(n) => self
                .reads_seen
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_known_by_their_verb_and_grpc_services_are_reads() {
        for read in [
            "/tenant.v1.TenantService/GetTenant",
            "/tenant.v1.TenantService/ListTenants",
            "/tenant.v1.ApiKeyService/VerifyApiKey",
            "/tenant.v1.ProvisioningService/WatchProvisioning",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ] {
            assert!(is_read(read), "{read}");
        }
        for write in [
            "/tenant.v1.TenantService/CreateTenant",
            "/tenant.v1.TenantService/SuspendTenant",
            "/tenant.v1.ApiKeyService/RevokeApiKey",
            "/tenant.v1.MigrationService/StartRollout",
            "nonsense",
        ] {
            assert!(!is_read(write), "{write}");
        }
    }

    #[test]
    fn mutations_and_denials_are_always_kept_reads_only_as_asked() {
        let none = AuditPolicy::new(ReadAudit::None);
        assert!(none.keeps(false, Code::Ok));
        assert!(none.keeps(false, Code::InvalidArgument));
        assert!(!none.keeps(true, Code::Ok));
        assert!(!none.keeps(true, Code::NotFound));
        for denied in [
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::ResourceExhausted,
        ] {
            assert!(none.keeps(true, denied), "{denied:?}");
        }
        assert!(AuditPolicy::new(ReadAudit::All).keeps(true, Code::Ok));
        let sampled = AuditPolicy::new(ReadAudit::OneIn(10));
        let kept = (0..1000).filter(|_| sampled.keeps(true, Code::Ok)).count();
        assert_eq!(kept, 100);
    }

    #[test]
    fn the_setting_parses_names_and_fractions_and_refuses_the_rest() {
        assert_eq!(ReadAudit::parse("none"), Ok(ReadAudit::None));
        assert_eq!(ReadAudit::parse("all"), Ok(ReadAudit::All));
        assert_eq!(ReadAudit::parse("1"), Ok(ReadAudit::All));
        assert_eq!(ReadAudit::parse("0.01"), Ok(ReadAudit::OneIn(100)));
        assert_eq!(ReadAudit::parse("0.3"), Ok(ReadAudit::OneIn(3)));
        for bad in ["0", "-0.5", "1.5", "some", "NaN"] {
            assert!(ReadAudit::parse(bad).is_err(), "{bad}");
        }
    }
}

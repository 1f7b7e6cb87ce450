//! Tenant status and the lifecycle state machine (DESIGN.md §4).

use std::fmt;

/// Where a tenant is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TenantStatus {
    /// Its provisioning run has not finished.
    Provisioning,
    /// Provisioned and serving.
    Active,
    /// Suspended by an operator.
    Suspended,
    /// Provisioning failed.
    Failed,
    /// Provisioning was cancelled.
    Cancelled,
    /// Soft-deleted, restorable until its purge time.
    Deleted,
    /// Its purge run is undoing everything made for it; no way back.
    Purging,
    /// Purged: a tombstone (id, slug, plan, timestamps) is all that is left.
    Purged,
}

impl TenantStatus {
    /// Every status, in declaration order.
    pub const ALL: [Self; 8] = [
        Self::Provisioning,
        Self::Active,
        Self::Suspended,
        Self::Failed,
        Self::Cancelled,
        Self::Deleted,
        Self::Purging,
        Self::Purged,
    ];

    /// Whether the lifecycle allows going from `self` to `next`.
    ///
    /// PROVISIONING -> ACTIVE | FAILED | CANCELLED; ACTIVE <-> SUSPENDED;
    /// FAILED | CANCELLED -> PROVISIONING (retry); any live status -> DELETED;
    /// DELETED -> PURGING -> PURGED. Leaving DELETED for a live status (undelete) restores
    /// the status held before deletion, which [`crate::Tenant::undelete`] checks; it is not
    /// a plain transition.
    pub fn can_become(self, next: Self) -> bool {
        use TenantStatus::{
            Active, Cancelled, Deleted, Failed, Provisioning, Purged, Purging, Suspended,
        };
        matches!(
            (self, next),
            (Provisioning, Active | Failed | Cancelled)
                | (Active, Suspended)
                | (Suspended, Active)
                | (Failed | Cancelled, Provisioning)
                | (
                    Provisioning | Active | Suspended | Failed | Cancelled,
                    Deleted
                )
                | (Deleted, Purging)
                | (Purging, Purged)
        )
    }

    /// Whether the tenant is being or has been purged: nothing but its purge changes it.
    pub fn is_purge(self) -> bool {
        matches!(self, Self::Purging | Self::Purged)
    }

    /// The status name as the API spells it (without the enum prefix).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "PROVISIONING",
            Self::Active => "ACTIVE",
            Self::Suspended => "SUSPENDED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
            Self::Deleted => "DELETED",
            Self::Purging => "PURGING",
            Self::Purged => "PURGED",
        }
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::TenantStatus::{self, *};

    #[test]
    fn transition_table_matches_the_design() {
        let allowed = [
            (Provisioning, Active),
            (Provisioning, Failed),
            (Provisioning, Cancelled),
            (Provisioning, Deleted),
            (Active, Suspended),
            (Active, Deleted),
            (Suspended, Active),
            (Suspended, Deleted),
            (Failed, Provisioning),
            (Failed, Deleted),
            (Cancelled, Provisioning),
            (Cancelled, Deleted),
            (Deleted, Purging),
            (Purging, Purged),
        ];
        for from in TenantStatus::ALL {
            for to in TenantStatus::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }
}

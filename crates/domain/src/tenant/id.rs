//! Tenant identifiers: UUIDv7, so ids sort by creation time (keyset pagination relies on it).

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::Error;

/// A tenant's id: a version 7 UUID, time-ordered.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct TenantId(Uuid);

impl TenantId {
    /// Wraps a UUID, refusing any version but 7.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] on field `tenant_id` when `uuid` is not a UUIDv7.
    pub fn from_uuid(uuid: Uuid) -> Result<Self, Error> {
        if uuid.get_version_num() == 7 {
            Ok(Self(uuid))
        } else {
            Err(Error::invalid("tenant_id", "must be a UUIDv7"))
        }
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// Parses the canonical text form; `field` names the request field in the error.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] on `field` when the text is empty or not a UUIDv7.
    pub fn parse_field(text: &str, field: &str) -> Result<Self, Error> {
        if text.is_empty() {
            return Err(Error::invalid(field, "is required"));
        }
        let uuid = Uuid::parse_str(text).map_err(|_| Error::invalid(field, "must be a UUID"))?;
        Self::from_uuid(uuid).map_err(|_| Error::invalid(field, "must be a UUIDv7"))
    }
}

impl FromStr for TenantId {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse_field(text, "tenant_id")
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_uuid_v7() {
        let uuid = Uuid::now_v7();
        let id: TenantId = uuid.to_string().parse().unwrap();
        assert_eq!(id.as_uuid(), uuid);
        assert_eq!(id.to_string(), uuid.to_string());
    }

    #[test]
    fn refuses_other_uuid_versions_and_garbage() {
        let v4 = "9f1b6a50-8f0e-4d7e-9a57-1b2c3d4e5f60";
        assert!(matches!(
            v4.parse::<TenantId>(),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            "nope".parse::<TenantId>(),
            Err(Error::InvalidArgument { .. })
        ));
        let Err(Error::InvalidArgument { violations: v, .. }) =
            TenantId::parse_field("", "tenant.tenant_id")
        else {
            panic!("empty id accepted");
        };
        assert_eq!(v[0].field, "tenant.tenant_id");
    }
}

//! Tenant API keys. A key is shown once as `tk_<key id>_<secret><checksum>`: the key id is
//! a UUIDv7 (32 hex digits), the secret 160 random bits (40 hex digits) and the checksum
//! the CRC-32 of everything before it (8 hex digits), so a mistyped or truncated key is
//! refused without a lookup. Only a hash of the secret is ever stored.

use std::fmt;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::TenantId;

/// Random bytes in a key's secret.
pub const SECRET_BYTES: usize = 20;
const PREFIX: &str = "tk_";

/// An API key's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiKeyId(pub Uuid);

impl ApiKeyId {
    /// Parses the 32-hex-digit or hyphenated form.
    pub fn parse(text: &str) -> Option<Self> {
        Uuid::parse_str(text).ok().map(Self)
    }
}

impl fmt::Display for ApiKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.simple().fmt(f)
    }
}

/// A full key as handed to its owner once. `Debug` and `Display` redact the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret {
    id: ApiKeyId,
    secret: String,
}

impl ApiKeySecret {
    /// A key with id `id` and the secret `random`.
    pub fn new(id: ApiKeyId, random: &[u8; SECRET_BYTES]) -> Self {
        Self {
            id,
            secret: hex(random),
        }
    }

    /// Parses a presented key, checking its shape and checksum; `None` if it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix(PREFIX)?;
        let (id, tail) = rest.split_once('_')?;
        if id.len() != 32
            || tail.len() != SECRET_BYTES * 2 + 8
            || !is_lower_hex(id)
            || !is_lower_hex(tail)
        {
            return None;
        }
        let (secret, checksum) = tail.split_at(SECRET_BYTES * 2);
        let body = &text[..text.len() - 8];
        if format!("{:08x}", crc32(body.as_bytes())) != checksum {
            return None;
        }
        Some(Self {
            id: ApiKeyId::parse(id)?,
            secret: secret.to_owned(),
        })
    }

    /// The key's id.
    pub fn id(&self) -> ApiKeyId {
        self.id
    }

    /// The secret part, to hash. Never log it.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The full key `tk_<id>_<secret><checksum>`, for the one response that shows it.
    pub fn expose(&self) -> String {
        let body = format!("{PREFIX}{}_{}", self.id, self.secret);
        let checksum = crc32(body.as_bytes());
        format!("{body}{checksum:08x}")
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeySecret(tk_{}_<redacted>)", self.id)
    }
}

/// A stored API key: metadata and the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Id.
    pub id: ApiKeyId,
    /// Owner.
    pub tenant_id: TenantId,
    /// Human-readable name.
    pub display_name: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// SHA-256 of the secret part.
    pub secret_hash: [u8; 32],
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Last successful verification (updated at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// Whether the key verifies at `now`: not revoked, not expired.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// CRC-32 (IEEE 802.3), bitwise: a typo check, not a security measure.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffff_u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xedb8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ApiKeySecret {
        ApiKeySecret::new(ApiKeyId(Uuid::now_v7()), &[7; SECRET_BYTES])
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn a_shown_key_parses_back() {
        let key = key();
        let shown = key.expose();
        assert!(shown.starts_with("tk_"));
        assert_eq!(shown.len(), 3 + 32 + 1 + 40 + 8);
        assert_eq!(ApiKeySecret::parse(&shown), Some(key));
    }

    #[test]
    fn typos_truncations_and_foreign_strings_are_refused_without_lookup() {
        let shown = key().expose();
        let mut typo = shown.clone().into_bytes();
        typo[40] = if typo[40] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).unwrap();
        for bad in [
            typo.as_str(),
            &shown[..shown.len() - 1],
            "tk_",
            "",
            "sk_live_123",
            &shown.to_uppercase(),
        ] {
            assert_eq!(ApiKeySecret::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = key();
        assert!(!format!("{key:?}").contains(key.secret()));
    }
}

//! Encryption at rest: contact emails (with a blind index for exact-match lookups) and
//! small secrets, each bound to its tenant.

use crate::{ContactEmail, TenantId};

/// Why a sealed value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CipherError {
    /// The envelope names a key the ring does not hold.
    #[error("the envelope was sealed with unknown key {0:?}")]
    UnknownKey(String),
    /// The envelope is not in the expected format.
    #[error("the envelope is malformed")]
    Malformed,
    /// The ciphertext, its tenant or its field does not authenticate: tampering, a copy
    /// from another row, or a wrong key.
    #[error("the envelope does not authenticate")]
    Authentication,
}

/// A sealed contact email and the id of the key that sealed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedEmail {
    /// The envelope: version, key id, nonce, ciphertext.
    pub envelope: Vec<u8>,
    /// The sealing key's id.
    pub key_id: String,
}

/// Encryption of contact emails at rest, bound to their tenant, with a blind index for
/// exact-match lookups.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait EmailCipher: Send + Sync {
    /// Seals `email` so it opens only for `tenant`, with the ring's primary key.
    fn seal(&self, tenant: TenantId, email: &ContactEmail) -> SealedEmail;

    /// Opens an envelope sealed for `tenant`.
    ///
    /// # Errors
    /// [`CipherError`] when the envelope is malformed, names an unknown key, or does not
    /// authenticate for this tenant.
    fn open(&self, tenant: TenantId, envelope: &[u8]) -> Result<ContactEmail, CipherError>;

    /// The blind index of `email`: a keyed hash of its normalized form.
    fn blind_index(&self, email: &ContactEmail) -> [u8; 32];

    /// The id of the key new envelopes are sealed with.
    fn primary_key_id(&self) -> String;
}

/// Sealing of small secrets at rest (AES-GCM), bound to their tenant and purpose.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait SecretSealer: Send + Sync {
    /// Seals `secret` so it opens only for `tenant` and `purpose`.
    fn seal_secret(&self, tenant: TenantId, purpose: &'static str, secret: &[u8]) -> Vec<u8>;

    /// Opens an envelope sealed for `tenant` and `purpose`.
    ///
    /// # Errors
    /// [`CipherError`] when the envelope does not open.
    fn open_secret(
        &self,
        tenant: TenantId,
        purpose: &'static str,
        envelope: &[u8],
    ) -> Result<Vec<u8>, CipherError>;
}

//! Encryption at rest: contact emails (with a blind index for exact-match lookups) and
//! small secrets, each bound to its tenant.

use crate::{ContactEmail, RepoError, TenantId};

/// Why a sealed value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CipherError {
    /// The envelope names a key the ring does not hold.
    #[error("the envelope was sealed with unknown key {0:?}")]
    UnknownKey(String),
    /// The envelope is not in the expected format.
    #[error("the envelope is malformed")]
    Malformed,
    /// The envelope was sealed with its tenant's data key, and there is none (destroyed by
    /// the tenant's purge).
    #[error("the envelope was sealed with a data key that is gone")]
    NoDataKey,
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
    /// The sealing key's id: a ring key's, or [`SealedEmail::DATA_KEY`].
    pub key_id: String,
}

impl SealedEmail {
    /// The key id of an email sealed with its tenant's data key: a rotation of the ring
    /// rewraps that key and leaves the email as it is.
    pub const DATA_KEY: &'static str = "tenant-data-key";
}

/// Encryption of contact emails at rest, bound to their tenant, with a blind index for
/// exact-match lookups: with the ring itself (short-lived copies such as cache entries), or
/// with the tenant's data key (what is stored for good, so the tenant's purge can shred it).
pub trait EmailCipher: DataKeyCipher + Send + Sync {
    /// Seals `email` so it opens only for `tenant`, with the ring's primary key.
    fn seal(&self, tenant: TenantId, email: &ContactEmail) -> SealedEmail;

    /// Opens an envelope [`EmailCipher::seal`] sealed for `tenant`.
    ///
    /// # Errors
    /// [`CipherError`] when the envelope is malformed, names an unknown key, or does not
    /// authenticate for this tenant.
    fn open(&self, tenant: TenantId, envelope: &[u8]) -> Result<ContactEmail, CipherError>;

    /// Seals `email` with `tenant`'s data `key`; its key id is [`SealedEmail::DATA_KEY`].
    ///
    /// # Errors
    /// [`CipherError`] when `key` does not unwrap for `tenant`.
    fn seal_with_key(
        &self,
        tenant: TenantId,
        key: &WrappedDataKey,
        email: &ContactEmail,
    ) -> Result<SealedEmail, CipherError>;

    /// Opens an envelope of either kind sealed for `tenant`: one of the ring, or one of
    /// its data `key`.
    ///
    /// # Errors
    /// [`CipherError::NoDataKey`] when it was sealed with a data key and `key` is `None`;
    /// otherwise as [`EmailCipher::open`].
    fn open_with_key(
        &self,
        tenant: TenantId,
        key: Option<&WrappedDataKey>,
        envelope: &[u8],
    ) -> Result<ContactEmail, CipherError>;

    /// The blind index of `email`: a keyed hash of its normalized form.
    fn blind_index(&self, email: &ContactEmail) -> [u8; 32];

    /// The id of the key new envelopes are sealed with.
    fn primary_key_id(&self) -> String;
}

/// Sealing of small secrets at rest (AES-GCM), bound to their tenant and purpose: with the
/// tenant's data key ([`DataKeyCipher::seal_with`]), or, for envelopes written before
/// tenants had data keys, with the ring itself.
pub trait SecretSealer: DataKeyCipher + Send + Sync {
    /// Seals `secret` with the ring so it opens only for `tenant` and `purpose`.
    fn seal_secret(&self, tenant: TenantId, purpose: &'static str, secret: &[u8]) -> Vec<u8>;

    /// Opens an envelope [`SecretSealer::seal_secret`] sealed for `tenant` and `purpose`.
    ///
    /// # Errors
    /// [`CipherError`] when the envelope does not open.
    fn open_secret(
        &self,
        tenant: TenantId,
        purpose: &'static str,
        envelope: &[u8],
    ) -> Result<Vec<u8>, CipherError>;

    /// Opens an envelope of either kind sealed for `tenant` and `purpose`: one of the ring,
    /// or one of its data `key`.
    ///
    /// # Errors
    /// [`CipherError::NoDataKey`] when it was sealed with a data key and `key` is `None`;
    /// otherwise as [`SecretSealer::open_secret`].
    fn open_secret_with_key(
        &self,
        tenant: TenantId,
        key: Option<&WrappedDataKey>,
        purpose: &'static str,
        envelope: &[u8],
    ) -> Result<Vec<u8>, CipherError>;
}

/// A tenant's data-encryption key as it is stored: sealed ("wrapped") by a key of the key
/// ring and bound to its tenant, as KMS envelope encryption keeps data keys. Useless
/// without the ring; destroying it makes everything sealed with it unreadable. Its `Debug`
/// names the wrapping key, never the envelope.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedDataKey {
    /// The data key, sealed by the ring for its tenant.
    pub envelope: Vec<u8>,
    /// The id of the ring key that wrapped it.
    pub key_id: String,
}

impl std::fmt::Debug for WrappedDataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedDataKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Per-tenant data keys: made and wrapped by the key ring, and used to seal a tenant's
/// values. Rotating the ring rewraps the data keys only; what they sealed stays as it is.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait DataKeyCipher: Send + Sync {
    /// A fresh random data key for `tenant`, wrapped by the ring's primary key.
    fn new_data_key(&self, tenant: TenantId) -> WrappedDataKey;

    /// `key` unwrapped and wrapped again by the ring's primary key.
    ///
    /// # Errors
    /// [`CipherError`] when `key` does not unwrap for `tenant`.
    fn rewrap_data_key(
        &self,
        tenant: TenantId,
        key: &WrappedDataKey,
    ) -> Result<WrappedDataKey, CipherError>;

    /// Seals `plaintext` with `tenant`'s data `key`, bound to `tenant` and `purpose`.
    ///
    /// # Errors
    /// [`CipherError`] when `key` does not unwrap for `tenant`.
    fn seal_with(
        &self,
        tenant: TenantId,
        key: &WrappedDataKey,
        purpose: &'static str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CipherError>;

    /// Opens an envelope [`DataKeyCipher::seal_with`] sealed for `tenant` and `purpose`.
    ///
    /// # Errors
    /// [`CipherError`] when `key` does not unwrap, or the envelope is malformed or does not
    /// authenticate for this tenant, purpose and key.
    fn open_with(
        &self,
        tenant: TenantId,
        key: &WrappedDataKey,
        purpose: &'static str,
        envelope: &[u8],
    ) -> Result<Vec<u8>, CipherError>;
}

/// Where the tenants' wrapped data keys are kept: one per tenant, made on first use, and
/// destroyed by its purge (crypto-shredding).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait::async_trait]
pub trait DataKeyRepository: Send + Sync {
    /// `tenant`'s data key; `fresh` is stored as it when it has none yet (concurrent
    /// callers all get the one stored first).
    ///
    /// # Errors
    /// [`RepoError::NotFound`] when there is no such tenant; [`RepoError::Precondition`]
    /// (`TENANT_PURGED`) when its key was destroyed: a destroyed key is never replaced.
    /// Store failures.
    async fn get_or_create(
        &self,
        tenant: TenantId,
        fresh: WrappedDataKey,
    ) -> Result<WrappedDataKey, RepoError>;

    /// `tenant`'s data key, if it has one (not after it was destroyed).
    ///
    /// # Errors
    /// Store failures.
    async fn get(&self, tenant: TenantId) -> Result<Option<WrappedDataKey>, RepoError>;

    /// Destroys `tenant`'s data key for good; `true` when there was one to destroy.
    ///
    /// # Errors
    /// Store failures.
    async fn destroy(&self, tenant: TenantId) -> Result<bool, RepoError>;

    /// Up to `limit` data keys wrapped by a ring key other than `key_id`, by tenant id.
    ///
    /// # Errors
    /// Store failures.
    async fn wrapped_by_other(
        &self,
        key_id: &str,
        limit: usize,
    ) -> Result<Vec<(TenantId, WrappedDataKey)>, RepoError>;

    /// Replaces `tenant`'s data key `old` by `new` (the same key, rewrapped); `false` when
    /// it is no longer `old` (rewrapped or destroyed meanwhile).
    ///
    /// # Errors
    /// Store failures.
    async fn replace(
        &self,
        tenant: TenantId,
        old: &WrappedDataKey,
        new: &WrappedDataKey,
    ) -> Result<bool, RepoError>;
}

//! AES-256-GCM key ring for contact emails and the HMAC-SHA256 blind index.
//!
//! Envelope: `version (1) | key id length (1) | key id | nonce (12) | ciphertext + tag`.
//! Every seal draws a fresh random 96-bit nonce. The associated data is the field name and
//! the tenant id, so a ciphertext copied into another tenant's row (or another field) does
//! not open. The first key of the ring seals; every key opens, which is how keys rotate:
//! put the new key first, run `tenantd keys rewrap`, then drop the old one.
//!
//! Per-tenant data keys ([`DataKeyCipher`]): a random 256-bit key per tenant, kept only
//! wrapped, as a version-1 envelope of the ring bound to the tenant (field
//! `tenantd:data-key:`). What it seals is a version-2 envelope,
//! `version (2) | nonce (12) | ciphertext + tag`, with the same associated data as version 1
//! (`tenantd:<purpose>:` and the tenant id): it names no ring key, so rotating the ring
//! rewraps data keys only, and destroying a tenant's data key leaves every copy of what it
//! sealed unreadable.

use std::fmt;

use aes_gcm::aead::{Aead as _, Generate as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use tenantd_domain::ports::{
    CipherError, DataKeyCipher, EmailCipher, SealedEmail, SecretSealer, WrappedDataKey,
};
use tenantd_domain::{ContactEmail, TenantId};

const VERSION: u8 = 1;
/// The version of envelopes sealed with a tenant's data key.
const DATA_KEY_VERSION: u8 = 2;
/// The field a wrapped data key is bound to.
const DATA_KEY_FIELD: &[u8] = b"tenantd:data-key:";
const NONCE_LEN: usize = 12;
const FIELD: &[u8] = b"tenantd:tenants.contact_email:";
/// The purpose of a contact email sealed with its tenant's data key ([`FIELD`]'s name).
const CONTACT_EMAIL: &str = "tenants.contact_email";

/// One named 256-bit key.
struct RingKey {
    id: String,
    cipher: Aes256Gcm,
}

/// The contact-email key ring. Its `Debug` names key ids, never key material.
pub struct KeyRing {
    keys: Vec<RingKey>,
    blind_index_key: Vec<u8>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field(
                "key_ids",
                &self.keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A key ring configuration that cannot be used. Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRingError {
    /// No encryption key at all.
    #[error("at least one key is required, as id:base64 (32 bytes)")]
    Empty,
    /// An entry is not `id:base64`.
    #[error("entry {0} is not id:base64")]
    Malformed(usize),
    /// A key id is not 1-32 of a-z, 0-9, '-', or repeats.
    #[error("entry {0} has an invalid or repeated key id (1-32 of a-z, 0-9, '-')")]
    BadId(usize),
    /// A key does not decode to exactly 32 bytes.
    #[error("key {0:?} is not 32 bytes of base64")]
    BadKey(String),
    /// The blind-index key is shorter than 32 bytes.
    #[error("the blind-index key must be at least 32 bytes of base64")]
    BadBlindIndexKey,
}

impl KeyRing {
    /// Builds a ring from `id:base64key` entries separated by commas (the first seals) and a
    /// base64 blind-index key.
    ///
    /// # Errors
    /// [`KeyRingError`] naming the bad entry.
    pub fn parse(keys: &str, blind_index_key: &str) -> Result<Self, KeyRingError> {
        let mut ring = Vec::new();
        for (n, entry) in keys
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let position = n + 1;
            let (id, material) = entry
                .split_once(':')
                .ok_or(KeyRingError::Malformed(position))?;
            let id_ok = (1..=32).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !ring.iter().any(|k: &RingKey| k.id == id);
            if !id_ok {
                return Err(KeyRingError::BadId(position));
            }
            let bytes = STANDARD
                .decode(material.trim())
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| KeyRingError::BadKey(id.to_owned()))?;
            let cipher = Aes256Gcm::new_from_slice(&bytes)
                .map_err(|_| KeyRingError::BadKey(id.to_owned()))?;
            ring.push(RingKey {
                id: id.to_owned(),
                cipher,
            });
        }
        if ring.is_empty() {
            return Err(KeyRingError::Empty);
        }
        let blind_index_key = STANDARD
            .decode(blind_index_key.trim())
            .ok()
            .filter(|k| k.len() >= 32)
            .ok_or(KeyRingError::BadBlindIndexKey)?;
        Ok(Self {
            keys: ring,
            blind_index_key,
        })
    }

    /// A fresh random key in the `id:base64` form [`KeyRing::parse`] takes.
    pub fn generate_entry(id: &str) -> String {
        let key = aes_gcm::Key::<Aes256Gcm>::generate();
        format!("{id}:{}", STANDARD.encode(key.as_slice()))
    }

    /// A ring of one fresh random key with id `id` and a fresh blind-index key: what the
    /// embedded mode seals with (its data and its keys die with the process) and what
    /// tests seal with.
    pub fn generate(id: &str) -> Self {
        Self::parse(&Self::generate_entry(id), &Self::generate_blind_index_key())
            .unwrap_or_else(|_| unreachable!("generated entries are well-formed"))
    }

    /// A fresh random blind-index key, base64.
    pub fn generate_blind_index_key() -> String {
        let key = aes_gcm::Key::<Aes256Gcm>::generate();
        STANDARD.encode(key.as_slice())
    }

    fn aad(field: &[u8], tenant: TenantId) -> Vec<u8> {
        let mut aad = field.to_vec();
        aad.extend_from_slice(tenant.as_uuid().as_bytes());
        aad
    }

    /// Seals `plaintext` with the primary key, bound to `field` and `tenant`.
    fn seal_bytes(&self, field: &[u8], tenant: TenantId, plaintext: &[u8]) -> Vec<u8> {
        let key = &self.keys[0];
        let mut envelope = Vec::with_capacity(2 + key.id.len() + NONCE_LEN + plaintext.len() + 16);
        envelope.push(VERSION);
        envelope.push(u8::try_from(key.id.len()).unwrap_or(u8::MAX));
        envelope.extend_from_slice(key.id.as_bytes());
        seal_into(
            &mut envelope,
            &key.cipher,
            &Self::aad(field, tenant),
            plaintext,
        );
        envelope
    }

    /// Opens an envelope sealed for `field` and `tenant`.
    fn open_bytes(
        &self,
        field: &[u8],
        tenant: TenantId,
        envelope: &[u8],
    ) -> Result<Vec<u8>, CipherError> {
        let [version, id_len, rest @ ..] = envelope else {
            return Err(CipherError::Malformed);
        };
        if *version != VERSION || rest.len() < usize::from(*id_len) + NONCE_LEN {
            return Err(CipherError::Malformed);
        }
        let (id, sealed) = rest.split_at(usize::from(*id_len));
        let id = std::str::from_utf8(id).map_err(|_| CipherError::Malformed)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| CipherError::UnknownKey(id.to_owned()))?;
        open_sealed(&key.cipher, &Self::aad(field, tenant), sealed)
    }
}

impl EmailCipher for KeyRing {
    fn seal(&self, tenant: TenantId, email: &ContactEmail) -> SealedEmail {
        SealedEmail {
            envelope: self.seal_bytes(FIELD, tenant, email.expose().as_bytes()),
            key_id: self.keys[0].id.clone(),
        }
    }

    fn open(&self, tenant: TenantId, envelope: &[u8]) -> Result<ContactEmail, CipherError> {
        let plaintext = self.open_bytes(FIELD, tenant, envelope)?;
        let text = String::from_utf8(plaintext).map_err(|_| CipherError::Malformed)?;
        ContactEmail::parse(&text).map_err(|_| CipherError::Malformed)
    }

    fn blind_index(&self, email: &ContactEmail) -> [u8; 32] {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.blind_index_key)
            .expect("HMAC takes keys of any length");
        mac.update(email.normalized().as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn primary_key_id(&self) -> String {
        self.keys[0].id.clone()
    }

    fn seal_with_key(
        &self,
        tenant: TenantId,
        key: &WrappedDataKey,
        email: &ContactEmail,
    ) -> Result<SealedEmail, CipherError> {
        Ok(SealedEmail {
            envelope: self.seal_with(tenant, key, CONTACT_EMAIL, email.expose().as_bytes())?,
            key_id: SealedEmail::DATA_KEY.to_owned(),
        })
    }

    fn open_with_key(
        &self,
        tenant: TenantId,
        key: Option<&WrappedDataKey>,
        envelope: &[u8],
    ) -> Result<ContactEmail, CipherError> {
        if envelope.first() != Some(&DATA_KEY_VERSION) {
            return EmailCipher::open(self, tenant, envelope);
        }
        let key = key.ok_or(CipherError::NoDataKey)?;
        let plaintext = self.open_with(tenant, key, CONTACT_EMAIL, envelope)?;
        let text = String::from_utf8(plaintext).map_err(|_| CipherError::Malformed)?;
        ContactEmail::parse(&text).map_err(|_| CipherError::Malformed)
    }
}

/// Other secrets (the sealed first API key): the purpose takes the place of the field name
/// in the associated data, under its own namespace, so an envelope of one purpose never
/// opens as another, nor as a contact email.
impl SecretSealer for KeyRing {
    fn seal_secret(&self, tenant: TenantId, purpose: &'static str, secret: &[u8]) -> Vec<u8> {
        self.seal_bytes(&secret_field(purpose), tenant, secret)
    }

    fn open_secret(
        &self,
        tenant: TenantId,
        purpose: &'static str,
        envelope: &[u8],
    ) -> Result<Vec<u8>, CipherError> {
        self.open_bytes(&secret_field(purpose), tenant, envelope)
    }

    fn open_secret_with_key(
        &self,
        tenant: TenantId,
        key: Option<&WrappedDataKey>,
        purpose: &'static str,
        envelope: &[u8],
    ) -> Result<Vec<u8>, CipherError> {
        if envelope.first() != Some(&DATA_KEY_VERSION) {
            return self.open_secret(tenant, purpose, envelope);
        }
        let key = key.ok_or(CipherError::NoDataKey)?;
        self.open_with(tenant, key, purpose, envelope)
    }
}

impl KeyRing {
    /// The cipher of `tenant`'s wrapped data `key`.
    fn unwrap_data_key(
        &self,
        tenant: TenantId,
        key: &WrappedDataKey,
    ) -> Result<Aes256Gcm, CipherError> {
        let material = self.open_bytes(DATA_KEY_FIELD, tenant, &key.envelope)?;
        Aes256Gcm::new_from_slice(&material).map_err(|_| CipherError::Malformed)
    }

    fn wrap_data_key(&self, tenant: TenantId, material: &[u8]) -> WrappedDataKey {
        WrappedDataKey {
            envelope: self.seal_bytes(DATA_KEY_FIELD, tenant, material),
            key_id: self.keys[0].id.clone(),
        }
    }
}

impl DataKeyCipher for KeyRing {
    fn new_data_key(&self, tenant: TenantId) -> WrappedDataKey {
        let material = aes_gcm::Key::<Aes256Gcm>::generate();
        self.wrap_data_key(tenant, material.as_slice())
    }

    fn rewrap_data_key(
        &self,
        tenant: TenantId,
        key: &WrappedDataKey,
    ) -> Result<WrappedDataKey, CipherError> {
        let material = self.open_bytes(DATA_KEY_FIELD, tenant, &key.envelope)?;
        Ok(self.wrap_data_key(tenant, &material))
    }

    fn seal_with(
        &self,
        tenant: TenantId,
        key: &WrappedDataKey,
        purpose: &'static str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CipherError> {
        let cipher = self.unwrap_data_key(tenant, key)?;
        let mut envelope = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + 16);
        envelope.push(DATA_KEY_VERSION);
        seal_into(
            &mut envelope,
            &cipher,
            &Self::aad(&purpose_field(purpose), tenant),
            plaintext,
        );
        Ok(envelope)
    }

    fn open_with(
        &self,
        tenant: TenantId,
        key: &WrappedDataKey,
        purpose: &'static str,
        envelope: &[u8],
    ) -> Result<Vec<u8>, CipherError> {
        let [version, rest @ ..] = envelope else {
            return Err(CipherError::Malformed);
        };
        if *version != DATA_KEY_VERSION || rest.len() < NONCE_LEN {
            return Err(CipherError::Malformed);
        }
        let cipher = self.unwrap_data_key(tenant, key)?;
        open_sealed(&cipher, &Self::aad(&purpose_field(purpose), tenant), rest)
    }
}

/// Appends a fresh random nonce and `plaintext` sealed by `cipher` under `aad`.
fn seal_into(envelope: &mut Vec<u8>, cipher: &Aes256Gcm, aad: &[u8], plaintext: &[u8]) {
    let nonce = Nonce::generate();
    // Encryption with a valid key and a 12-byte nonce cannot fail for short messages.
    let ciphertext = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encryption of a short message");
    envelope.extend_from_slice(nonce.as_slice());
    envelope.extend_from_slice(&ciphertext);
}

/// Opens `nonce | ciphertext + tag` that `cipher` sealed under `aad`.
fn open_sealed(cipher: &Aes256Gcm, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CipherError> {
    if sealed.len() < NONCE_LEN {
        return Err(CipherError::Malformed);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_from(nonce).map_err(|_| CipherError::Malformed)?;
    cipher
        .decrypt(
            &nonce,
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| CipherError::Authentication)
}

/// The associated-data prefix of a value sealed for `purpose` with a data key: the same as
/// a version-1 envelope's field (`tenants.contact_email` gives the contact email's).
fn purpose_field(purpose: &str) -> Vec<u8> {
    format!("tenantd:{purpose}:").into_bytes()
}

fn secret_field(purpose: &str) -> Vec<u8> {
    format!("tenantd:secret:{purpose}:").into_bytes()
}

#[cfg(test)]
mod tests;

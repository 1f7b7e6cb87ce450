//! ApiKeyService use cases: create (secret shown once, plan quota enforced atomically by the
//! store), list, revoke, verify (constant-time hash comparison, throttled last-used updates).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tenantd_domain::ports::{
    ApiKeyRepository, Clock, DataKeyRepository, IdGenerator, InitialKeyStore, PlanRepository,
    SecretGenerator, SecretSealer, TenantRepository,
};
use tenantd_domain::{
    ApiKey, ApiKeyId, ApiKeySecret, Error, Event, EventId, EventKind, FieldViolation, Reason,
    RepoError, TenantId, TenantStatus,
};
use tracing::instrument;

use crate::provisioning::INITIAL_KEY_PURPOSE;
use crate::{Page, PageRequest};

/// Most scopes on one key.
const MAX_SCOPES: usize = 32;
/// Forgets throttle entries beyond this many keys (a bound, not a cache policy).
const MAX_TRACKED_KEYS: usize = 10_000;

/// CreateApiKey input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateApiKey {
    /// The tenant the key is for.
    pub tenant_id: String,
    /// Human-readable name, 1 to 100 characters.
    pub display_name: String,
    /// Scopes, e.g. `tenants.read`.
    pub scopes: Vec<String>,
    /// Optional expiry, in the future.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The key (metadata).
    pub key: ApiKey,
    /// Whether its tenant is ACTIVE.
    pub tenant_active: bool,
}

/// The API key use cases.
pub struct ApiKeyService {
    keys: Arc<dyn ApiKeyRepository>,
    tenants: Arc<dyn TenantRepository>,
    plans: Arc<dyn PlanRepository>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    secrets: Arc<dyn SecretGenerator>,
    /// When each key's last-used time was last written, so a busy key costs one write a
    /// minute, not one per verification.
    touched: Mutex<HashMap<ApiKeyId, DateTime<Utc>>>,
    /// First admin keys made by provisioning, and what opens their sealed secrets.
    initial: Option<InitialKeys>,
}

/// Where the first admin keys are and what opens their sealed secrets.
struct InitialKeys {
    store: Arc<dyn InitialKeyStore>,
    sealer: Arc<dyn SecretSealer>,
    data_keys: Arc<dyn DataKeyRepository>,
}

impl std::fmt::Debug for ApiKeyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyService").finish_non_exhaustive()
    }
}

impl ApiKeyService {
    /// How often a key's last-used time is written at most.
    pub const TOUCH_INTERVAL: Duration = Duration::minutes(1);

    /// A service over its ports.
    pub fn new(
        keys: Arc<dyn ApiKeyRepository>,
        tenants: Arc<dyn TenantRepository>,
        plans: Arc<dyn PlanRepository>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
        secrets: Arc<dyn SecretGenerator>,
    ) -> Self {
        Self {
            keys,
            tenants,
            plans,
            clock,
            ids,
            secrets,
            touched: Mutex::default(),
            initial: None,
        }
    }

    /// The same service, able to hand out first admin keys from `store`, opened by `sealer`
    /// with the tenants' `data_keys`.
    #[must_use]
    pub fn with_initial_keys(
        mut self,
        store: Arc<dyn InitialKeyStore>,
        sealer: Arc<dyn SecretSealer>,
        data_keys: Arc<dyn DataKeyRepository>,
    ) -> Self {
        self.initial = Some(InitialKeys {
            store,
            sealer,
            data_keys,
        });
        self
    }

    /// Hands out the secret of the tenant's first admin key (made by provisioning) once: the
    /// sealed copy is destroyed as it is taken, so a second claim gets nothing.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown tenant or one whose provisioning has not made the
    /// key yet; [`Error::FailedPrecondition`] when it was claimed already or was revoked;
    /// store failures.
    #[instrument(skip_all, fields(tenant_id = %tenant_id))]
    pub async fn claim_initial(&self, tenant_id: &str) -> Result<(ApiKey, ApiKeySecret), Error> {
        let tenant = TenantId::parse_field(tenant_id, "tenant_id")?;
        let Some(InitialKeys {
            store,
            sealer,
            data_keys,
        }) = &self.initial
        else {
            return Err(Error::precondition(
                Reason::InitialApiKeysDisabled,
                "this server does not provision first API keys",
            ));
        };
        let not_yet = || Error::not_found(Reason::InitialApiKeyNotFound, "initial API key", tenant);
        let initial = store.initial(tenant).await?.ok_or_else(not_yet)?;
        let claimed = || {
            Error::precondition(
                Reason::InitialApiKeyClaimed,
                "the initial API key was already claimed; create a new key instead",
            )
        };
        if initial.sealed_secret.is_none() {
            return Err(claimed());
        }
        let key = self.keys.get(initial.key_id).await?.ok_or_else(not_yet)?;
        if !key.is_active(self.clock.now()) {
            return Err(Error::precondition(
                Reason::InitialApiKeyRevoked,
                "the initial API key was revoked (its provisioning run was undone)",
            ));
        }
        // Read before the sealed copy is taken: a failure here leaves it to claim again.
        let data_key = data_keys.get(tenant).await?;
        let Some((key_id, envelope)) = store.take_initial_secret(tenant).await? else {
            return Err(claimed());
        };
        let opened = sealer
            .open_secret_with_key(tenant, data_key.as_ref(), INITIAL_KEY_PURPOSE, &envelope)
            .map_err(|e| {
                tracing::error!(tenant_id = %tenant, error = %e, "ALERT: a sealed initial API key does not open");
                Error::Internal("the sealed initial API key does not open".into())
            })?;
        let secret = std::str::from_utf8(&opened)
            .ok()
            .and_then(ApiKeySecret::parse)
            .filter(|s| s.id() == key_id)
            .ok_or_else(|| Error::Internal("the sealed initial API key is malformed".into()))?;
        tracing::info!(tenant_id = %tenant, key_id = %key_id, "initial API key claimed");
        Ok((key, secret))
    }

    /// Creates a key and returns it with its secret, which is never retrievable again.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad fields; [`Error::NotFound`] for an unknown tenant;
    /// [`Error::FailedPrecondition`] for a deleted one; [`Error::ResourceExhausted`] when the
    /// plan's `max_api_keys` active keys exist; store failures.
    #[instrument(skip_all, fields(tenant_id = %cmd.tenant_id))]
    pub async fn create(&self, cmd: CreateApiKey) -> Result<(ApiKey, ApiKeySecret), Error> {
        let tenant_id = TenantId::parse_field(&cmd.tenant_id, "tenant_id")?;
        let now = self.clock.now();
        validate(&cmd, now)?;
        let tenant = self
            .tenants
            .get(tenant_id)
            .await?
            .ok_or_else(|| Error::tenant_not_found(tenant_id))?;
        tenant.ensure_not_purge()?;
        if tenant.status() == TenantStatus::Deleted {
            return Err(Error::precondition(
                Reason::TenantDeleted,
                "a deleted tenant cannot get API keys",
            ));
        }
        let plan = self.plans.get(tenant.plan_id()).await?.ok_or_else(|| {
            Error::Internal(format!("tenant's plan {} is missing", tenant.plan_id()))
        })?;
        let secret = ApiKeySecret::new(ApiKeyId(self.ids.new_v7()), &self.secrets.api_key_secret());
        let key = ApiKey {
            id: secret.id(),
            tenant_id,
            display_name: cmd.display_name.trim().to_owned(),
            scopes: cmd.scopes,
            secret_hash: hash(&secret),
            created_at: now,
            expires_at: cmd.expires_at,
            revoked_at: None,
            last_used_at: None,
        };
        let event = self.event(
            tenant_id,
            EventKind::ApiKeyCreated {
                key_id: key.id.to_string(),
                scopes: key.scopes.clone(),
            },
            now,
        );
        match self
            .keys
            .create(&key, &[event], plan.quotas.max_api_keys, now)
            .await
        {
            Ok(()) => Ok((key, secret)),
            Err(RepoError::LimitReached) => Err(Error::ResourceExhausted {
                reason: Reason::ApiKeyQuotaExceeded,
                detail: format!(
                    "plan {} allows {} active API keys; revoke one first",
                    plan.id, plan.quotas.max_api_keys
                ),
                retry_after: None,
                limit: Some(u64::from(plan.quotas.max_api_keys)),
            }),
            Err(RepoError::NotFound) => Err(Error::tenant_not_found(tenant_id)),
            Err(err) => Err(err.into()),
        }
    }

    /// One page of a tenant's keys, oldest first; revoked and expired ones only if asked.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad tenant id, page size or token; store failures.
    pub async fn list(
        &self,
        tenant_id: &str,
        page_size: i32,
        page_token: &str,
        show_inactive: bool,
    ) -> Result<Page<ApiKey>, Error> {
        let tenant = TenantId::parse_field(tenant_id, "tenant_id")?;
        let filters = format!("api_keys;tenant={tenant};inactive={show_inactive}");
        let page = PageRequest::parse(page_size, page_token, &filters)?;
        let after = match &page.after {
            None => None,
            Some(key) => Some(ApiKeyId::parse(key).ok_or_else(|| {
                Error::invalid_because(
                    Reason::PageTokenInvalid,
                    "page_token",
                    "is malformed; start again without it",
                )
            })?),
        };
        let active_at = (!show_inactive).then(|| self.clock.now());
        let fetched = self
            .keys
            .list(tenant, after, page.fetch_limit(), active_at)
            .await?;
        Ok(page.finish(fetched, &filters, |k| k.id.to_string()))
    }

    /// Revokes a key of `tenant_id`; revoking a revoked key changes nothing.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the key does not exist or belongs to another tenant.
    #[instrument(skip_all, fields(tenant_id = %tenant_id, key_id = %key_id))]
    pub async fn revoke(&self, tenant_id: &str, key_id: &str) -> Result<ApiKey, Error> {
        let tenant = TenantId::parse_field(tenant_id, "tenant_id")?;
        let not_found = || Error::not_found(Reason::ApiKeyNotFound, "api key", key_id);
        let id = ApiKeyId::parse(key_id)
            .ok_or_else(|| Error::invalid("key_id", "is not an API key id"))?;
        let mut key = self
            .keys
            .get(id)
            .await?
            .filter(|k| k.tenant_id == tenant)
            .ok_or_else(not_found)?;
        if key.revoked_at.is_some() {
            return Ok(key);
        }
        let now = self.clock.now();
        let event = self.event(
            tenant,
            EventKind::ApiKeyRevoked {
                key_id: id.to_string(),
            },
            now,
        );
        match self.keys.revoke(id, now, &[event]).await {
            Ok(revoked_at) => {
                key.revoked_at = Some(revoked_at);
                Ok(key)
            }
            Err(RepoError::NotFound) => Err(not_found()),
            Err(err) => Err(err.into()),
        }
    }

    /// Verifies a presented key: `None` unless it is well-formed, known, matches, is
    /// neither revoked nor expired, and its tenant is not deleted. Malformed keys are
    /// refused before any lookup.
    ///
    /// # Errors
    /// Store failures only.
    pub async fn verify(&self, presented: &str) -> Result<Option<Verification>, Error> {
        let Some(secret) = ApiKeySecret::parse(presented) else {
            return Ok(None);
        };
        let Some(key) = self.keys.get(secret.id()).await? else {
            return Ok(None);
        };
        let matches = hashes_match(&hash(&secret), &key.secret_hash);
        let now = self.clock.now();
        if !matches || !key.is_active(now) {
            return Ok(None);
        }
        // A deleted tenant's keys stop verifying (they return if the tenant is restored);
        // a purged one's never do again, even before its purge revokes them.
        let Some(tenant) = self
            .tenants
            .get(key.tenant_id)
            .await?
            .filter(|t| t.status() != TenantStatus::Deleted && !t.status().is_purge())
        else {
            return Ok(None);
        };
        if self.due_for_touch(key.id, now)
            && let Err(err) = self.keys.touch(key.id, now).await
        {
            tracing::warn!(error = %err, key_id = %key.id, "cannot record API key use");
        }
        Ok(Some(Verification {
            key,
            tenant_active: tenant.status() == TenantStatus::Active,
        }))
    }

    fn due_for_touch(&self, id: ApiKeyId, now: DateTime<Utc>) -> bool {
        let mut touched = self.touched.lock().unwrap_or_else(PoisonError::into_inner);
        if touched
            .get(&id)
            .is_some_and(|last| now - *last < Self::TOUCH_INTERVAL)
        {
            return false;
        }
        if touched.len() >= MAX_TRACKED_KEYS {
            touched.clear();
        }
        touched.insert(id, now);
        true
    }

    fn event(&self, tenant: TenantId, kind: EventKind, now: DateTime<Utc>) -> Event {
        Event {
            id: EventId(self.ids.new_v7()),
            subject: tenant.into(),
            occurred_at: now,
            kind,
        }
    }
}

/// Compares two secret hashes in constant time: how long it takes never tells an attacker
/// how many leading bytes of a guess were right.
fn hashes_match(presented: &[u8; 32], stored: &[u8; 32]) -> bool {
    presented.ct_eq(stored).into()
}

pub(crate) fn hash(secret: &ApiKeySecret) -> [u8; 32] {
    Sha256::digest(secret.secret().as_bytes()).into()
}

fn validate(cmd: &CreateApiKey, now: DateTime<Utc>) -> Result<(), Error> {
    let mut violations = Vec::new();
    let name = cmd.display_name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        violations.push(FieldViolation::new(
            "display_name",
            "must be 1 to 100 characters without control characters",
        ));
    }
    if cmd.scopes.len() > MAX_SCOPES {
        violations.push(FieldViolation::new(
            "scopes",
            "at most 32 scopes are allowed",
        ));
    }
    for scope in &cmd.scopes {
        let valid = (1..=64).contains(&scope.len())
            && scope.starts_with(|c: char| c.is_ascii_lowercase())
            && scope
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._:-".contains(&b));
        if !valid {
            violations.push(FieldViolation::new(
                "scopes",
                format!("scope {scope:.64?} must be 1-64 of a-z, 0-9, '.', '_', ':', '-', starting with a letter"),
            ));
        }
    }
    if cmd.expires_at.is_some_and(|at| at <= now) {
        violations.push(FieldViolation::new("expire_time", "must be in the future"));
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(Error::invalid_fields(violations))
    }
}

#[cfg(test)]
mod tests;

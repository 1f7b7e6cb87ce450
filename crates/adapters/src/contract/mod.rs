//! Port contract suites: the behaviour every implementation of the repository ports must
//! show, written once and run against each adapter (in-memory here, PostgreSQL next).
//!
//! An adapter's tests supply an async factory returning fresh, isolated [`Stores`] (for a
//! database: its own schema) and invoke [`repository_contract_tests!`](crate::repository_contract_tests),
//! which expands to one `#[tokio::test]` per contract.

#![expect(
    clippy::missing_panics_doc,
    reason = "a contract fails by panicking, like any test"
)]

mod api_keys;
mod audit;
pub(crate) mod fixtures;
mod outbox;
mod plans;
mod provisioning;
mod tenants;

use std::sync::Arc;

use tenantd_domain::ports::{
    ApiKeyRepository, AuditLog, EventLog, InitialKeyStore, Outbox, PlanRepository,
    ProvisioningRepository, TenantRepository,
};

pub use api_keys::*;
pub use audit::*;
pub use outbox::*;
pub use plans::*;
pub use provisioning::*;
pub use tenants::*;

/// The repository ports of one store under test. `tenants` and `events` must share state:
/// events are written through the tenant repository and read through the event log.
#[derive(Clone)]
#[expect(
    missing_debug_implementations,
    reason = "holds trait objects; test-only"
)]
pub struct Stores {
    /// The tenant repository.
    pub tenants: Arc<dyn TenantRepository>,
    /// Provisioning runs of the same store.
    pub runs: Arc<dyn ProvisioningRepository>,
    /// First admin keys of the same store.
    pub initial_keys: Arc<dyn InitialKeyStore>,
    /// The API key repository of the same store.
    pub api_keys: Arc<dyn ApiKeyRepository>,
    /// The event log of the same store.
    pub events: Arc<dyn EventLog>,
    /// The plan catalogue.
    pub plans: Arc<dyn PlanRepository>,
    /// The audit log.
    pub audit: Arc<dyn AuditLog>,
    /// The outbox of the same store (events written through `tenants`).
    pub outbox: Arc<dyn Outbox>,
    /// Keeps per-test resources alive until the test ends (e.g. a scratch schema that is
    /// dropped with it).
    pub guard: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

/// Expands to one `#[tokio::test]` per repository contract, each calling `$factory()` (an
/// async fn returning [`Stores`]) for fresh stores.
#[macro_export]
macro_rules! repository_contract_tests {
    ($factory:path) => {
        $crate::repository_contract_tests!(@each $factory;
            create_then_get_round_trips_every_field,
            get_of_unknown_id_is_none,
            create_with_taken_slug_fails_and_stores_nothing,
            slug_of_a_deleted_tenant_stays_taken,
            create_appends_its_events_in_order,
            update_at_expected_version_replaces_and_appends_events,
            update_at_stale_version_conflicts_and_stores_nothing,
            update_of_unknown_tenant_is_not_found,
            idempotency_record_is_found_until_it_expires,
            second_create_with_same_request_id_is_refused_and_stores_nothing,
            list_pages_in_id_order,
            list_filters_combine_and_hide_deleted_by_default,
            event_log_pages_after_an_event_and_filters_by_tenant,
            plans_are_seeded,
            api_key_round_trips_and_lists_by_tenant,
            api_key_quota_counts_only_active_keys,
            concurrent_api_key_creates_never_exceed_the_quota,
            api_key_revoke_and_touch_are_recorded,
            api_key_for_unknown_tenant_is_not_found,
            audit_records_list_newest_first_with_filters,
            a_created_run_is_the_latest_and_summarized_on_its_tenant,
            a_due_run_is_claimed_by_one_worker_at_a_time,
            runs_not_due_or_leased_are_not_claimed,
            an_expired_lease_is_taken_over_and_the_old_holder_is_fenced_off,
            a_request_write_conflicts_with_a_stale_version_and_stops_renewals,
            a_save_with_the_tenant_is_atomic,
            overdue_runs_are_found_by_deadline,
            the_first_key_is_stored_once_and_its_secret_taken_once,
            outbox_batches_never_overtake_a_tenants_earlier_event,
            outbox_batches_dropped_or_unpublished_give_events_back,
            outbox_concurrent_relays_publish_each_event_once_in_tenant_order,
        );
    };
    (@each $factory:path; $($contract:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $contract() {
                $crate::contract::$contract($factory().await).await;
            }
        )*
    };
}

//! Port contract suites: the behaviour every implementation of a port must show, written
//! once and run against each adapter (in memory, PostgreSQL, through the Redis cache).
//!
//! Three suites, each a list of `pub async fn`s taking the suite's fixture:
//!
//! | suite | fixture | run by |
//! | --- | --- | --- |
//! | [`repository_contract_tests!`](crate::repository_contract_tests) | [`Stores`] | memory (with and without a cipher), PostgreSQL, PostgreSQL behind the cache |
//! | [`provider_contract_tests!`](crate::provider_contract_tests) | [`ProviderPorts`] | memory, PostgreSQL |
//! | [`rate_limiter_contract_tests!`](crate::rate_limiter_contract_tests) | [`Limiter`] | in-process, Redis |
//!
//! An adapter's tests supply an async factory returning a fresh, isolated fixture (for a
//! database: its own schema; for Redis: its own key prefix) and invoke the suite's macro,
//! which expands to one `#[tokio::test]` per contract. Each macro's list is the one place a
//! contract is registered, and [`tests::every_contract_is_registered_in_its_suite`] fails
//! when a `pub async fn` of a suite's fixture is missing from it (or listed but gone).

#![expect(
    clippy::missing_panics_doc,
    reason = "a contract fails by panicking, like any test"
)]

mod api_keys;
mod audit;
mod data_keys;
mod exports;
pub(crate) mod fixtures;
mod outbox;
mod plans;
mod providers;
mod provisioning;
mod purges;
mod rate_limit;
mod retention;
mod tenant_schemas;
mod tenants;

use std::any::Any;
use std::sync::Arc;

use tenantd_domain::ports::{
    ApiKeyRepository, AuditLog, BillingProvider, DataKeyRepository, DnsProvider, EventLog,
    ExportRepository, InitialKeyStore, Outbox, PlanRepository, ProvisioningRepository,
    PurgeRepository, RateLimiter, Retention, RolloutRepository, TenantDatabases, TenantRepository,
    TenantSchemaDumps, TenantSchemaRepository,
};
use tenantd_domain::tenant_schema::MigrationSet;

pub use api_keys::*;
pub use audit::*;
pub use data_keys::*;
pub use exports::*;
pub use outbox::*;
pub use plans::*;
pub use providers::*;
pub use provisioning::*;
pub use purges::*;
pub use rate_limit::*;
pub use retention::*;
pub use tenant_schemas::*;
pub use tenants::*;

/// Keeps per-test resources alive until the test ends (e.g. a scratch schema that is
/// dropped with it).
pub type Guard = Option<Arc<dyn Any + Send + Sync>>;

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
    /// Purges of the same store.
    pub purges: Arc<dyn PurgeRepository>,
    /// Exports of the same store.
    pub exports: Arc<dyn ExportRepository>,
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
    /// The tenant schemas' records of the same store.
    pub schemas: Arc<dyn TenantSchemaRepository>,
    /// Rollouts of the same store.
    pub rollouts: Arc<dyn RolloutRepository>,
    /// Retention of the same store's events and audit records.
    pub retention: Arc<dyn Retention>,
    /// The tenants' data keys of the same store.
    pub data_keys: Arc<dyn DataKeyRepository>,
    /// Keeps per-test resources alive until the test ends.
    pub guard: Guard,
}

/// The provisioning providers of one backend under test, and the tenant store their
/// tenants must exist in (PostgreSQL's provider tables reference the tenants table).
#[derive(Clone)]
#[expect(
    missing_debug_implementations,
    reason = "holds trait objects; test-only"
)]
pub struct ProviderPorts {
    /// The DATABASE step's provider, with the built-in migrations.
    pub databases: Arc<dyn TenantDatabases>,
    /// What the same provider's schemas hold, for exports.
    pub dumps: Arc<dyn TenantSchemaDumps>,
    /// The same provider (same schemas) with other migrations, as a replica of another
    /// release has it.
    pub databases_with: Arc<dyn Fn(Arc<MigrationSet>) -> Arc<dyn TenantDatabases> + Send + Sync>,
    /// The prefix of the schemas the contracts place tenants in.
    pub schema_prefix: String,
    /// The DNS step's provider; its records are under `dns_base_domain`, pointing at
    /// `dns_ingress`.
    pub dns: Arc<dyn DnsProvider>,
    /// The domain `dns` publishes under.
    pub dns_base_domain: String,
    /// The address `dns` points tenants at.
    pub dns_ingress: std::net::IpAddr,
    /// The BILLING step's provider.
    pub billing: Arc<dyn BillingProvider>,
    /// Where the tenants the providers act for are created.
    pub tenants: Arc<dyn TenantRepository>,
    /// Keeps per-test resources alive until the test ends.
    pub guard: Guard,
}

/// A rate limiter under test, with buckets of its own (say, a Redis key prefix).
#[derive(Clone)]
#[expect(
    missing_debug_implementations,
    reason = "holds trait objects; test-only"
)]
pub struct Limiter {
    /// The limiter.
    pub limiter: Arc<dyn RateLimiter>,
    /// Keeps per-test resources alive until the test ends.
    pub guard: Guard,
}

/// Expands to one `#[tokio::test]` per repository contract, each calling `$factory()` (an
/// async fn returning [`Stores`]) for fresh stores.
#[macro_export]
macro_rules! repository_contract_tests {
    ($factory:path) => { $crate::repository_contract_tests! { @list __contract_tests, $factory } };
    (@list $then:ident, $($arg:tt)*) => {
        $crate::$then! { $($arg)*;
            create_then_get_round_trips_every_field,
            get_of_unknown_id_is_none,
            create_with_taken_slug_fails_and_stores_nothing,
            slug_of_a_deleted_tenant_stays_taken,
            create_appends_its_events_in_order,
            update_at_expected_version_replaces_and_appends_events,
            a_legal_hold_round_trips_until_released,
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
            the_run_due_longest_ago_is_claimed_first,
            runs_not_due_or_leased_are_not_claimed,
            an_expired_lease_is_taken_over_and_the_old_holder_is_fenced_off,
            a_holders_write_renews_its_lease,
            a_request_write_conflicts_with_a_stale_version_and_stops_renewals,
            a_save_with_the_tenant_is_atomic,
            overdue_runs_are_found_by_deadline,
            the_first_key_is_stored_once_and_its_secret_taken_once,
            outbox_batches_never_overtake_a_tenants_earlier_event,
            outbox_batches_dropped_or_unpublished_give_events_back,
            outbox_concurrent_relays_publish_each_event_once_in_tenant_order,
            dead_letters_leave_the_outbox_and_are_listed,
            retried_dead_letters_are_claimed_again_with_no_attempts,
            a_recorded_schema_is_listed_with_its_placement_until_forgotten,
            a_rollout_takes_the_tenants_behind_its_target_canary_first,
            one_rollout_at_a_time_and_one_without_tenants_succeeds_at_once,
            claims_follow_the_waves_and_the_parallelism_limit,
            an_expired_tenant_lease_is_taken_over_and_the_old_worker_fenced_off,
            outcomes_move_the_schemas_and_the_budget_pauses_the_rollout,
            commands_queue_cancel_and_refuse_as_the_state_says,
            a_gone_schema_is_skipped_and_a_failed_canary_pauses,
            retention_trims_old_published_events_and_never_an_unpublished_one,
            retention_trims_audit_records_before_the_cutoff_in_batches,
            retention_keeps_everything_of_a_tenant_under_legal_hold,
            concurrent_trims_delete_each_row_once,
            a_started_purge_makes_its_tenant_purging_atomically_once,
            a_due_purge_is_claimed_by_one_worker_and_fenced_after_takeover,
            the_tombstone_write_is_atomic_with_the_purge_and_its_events,
            purgeable_tenants_are_deleted_unheld_and_past_their_purge_time,
            a_tombstones_slug_stays_taken_until_released,
            forgetting_requests_deletes_only_that_tenants_idempotency_records,
            an_export_is_stored_for_an_existing_tenant_only,
            an_export_is_claimed_once_fenced_after_takeover_and_keeps_its_archive,
            expired_exports_are_listed_oldest_first_and_deleted,
            an_attempts_progress_is_recorded_under_its_lease_only,
            a_data_key_is_made_once_per_existing_tenant,
            a_destroyed_data_key_is_gone_for_good,
            data_keys_of_older_ring_keys_are_listed_and_replaced_once,
        }
    };
}

/// Expands to one `#[tokio::test]` per provider contract, each calling `$factory()` (an
/// async fn returning [`ProviderPorts`]) for fresh providers.
#[macro_export]
macro_rules! provider_contract_tests {
    ($factory:path) => { $crate::provider_contract_tests! { @list __contract_tests, $factory } };
    (@list $then:ident, $($arg:tt)*) => {
        $crate::$then! { $($arg)*;
            a_tenant_database_exists_once_provisioned_and_provisioning_again_is_harmless,
            a_deprovisioned_tenant_database_is_gone_and_deprovisioning_again_is_harmless,
            tenant_databases_of_tenants_are_separate,
            a_new_schema_is_at_the_newest_version_and_migrating_applies_only_what_it_lacks,
            an_applied_migration_edited_since_is_drift_and_changes_nothing,
            migrating_a_schema_that_does_not_exist_finds_nothing,
            published_dns_records_name_the_slug_under_the_base_domain,
            publishing_dns_records_again_changes_nothing,
            a_dns_name_held_by_another_tenant_fails_permanently,
            withdrawn_dns_records_are_gone_and_their_names_free_again,
            withdrawing_one_tenants_dns_records_leaves_the_others,
            a_subscription_is_active_for_the_tenants_plan_and_subscribing_again_is_harmless,
            a_cancelled_subscription_is_inactive_and_can_be_renewed,
            cancelling_without_a_subscription_is_harmless,
            a_dump_holds_the_schemas_tables_of_its_tenant_only,
        }
    };
}

/// Expands to one `#[tokio::test]` per rate-limiter contract, each calling `$factory()`
/// (an async fn returning [`Limiter`]) for a fresh limiter.
#[macro_export]
macro_rules! rate_limiter_contract_tests {
    ($factory:path) => { $crate::rate_limiter_contract_tests! { @list __contract_tests, $factory } };
    (@list $then:ident, $($arg:tt)*) => {
        $crate::$then! { $($arg)*;
            a_burst_is_admitted_then_the_next_request_waits_for_a_token,
            each_key_has_its_own_bucket,
            tokens_come_back_at_the_rate_and_never_beyond_the_burst,
            a_high_rate_admits_its_burst_plus_the_refill_and_no_more,
        }
    };
}

/// The tests of one suite: `$factory; contract, ...` (see the suite macros).
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_tests {
    ($factory:path; $($contract:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $contract() {
                $crate::contract::$contract($factory().await).await;
            }
        )*
    };
}

/// The names of one suite's contracts (for the registration check).
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_names {
    (; $($contract:ident),* $(,)?) => {
        &[$(stringify!($contract)),*]
    };
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    /// The `pub async fn NAME(x: Fixture)` of every file of this directory, by fixture.
    fn defined() -> BTreeMap<String, BTreeSet<String>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/contract");
        let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).expect("the contract directory") {
            let path = entry.expect("a directory entry").path();
            let text = std::fs::read_to_string(&path).expect("a contract file");
            for item in text.split("\npub async fn ").skip(1) {
                // `NAME(x: Fixture)`, possibly over several lines.
                let (name, rest) = item.split_once('(').expect("a parameter list");
                let params = rest.split_once(')').map_or(rest, |(params, _)| params);
                let fixture = params
                    .split_once(':')
                    .map(|(_, ty)| ty.split(',').next().unwrap_or_default().trim())
                    .unwrap_or_default();
                found
                    .entry(fixture.to_owned())
                    .or_default()
                    .insert(name.trim().to_owned());
            }
        }
        found
    }

    #[test]
    fn every_contract_is_registered_in_its_suite() {
        let listed = |names: &[&str]| -> BTreeSet<String> {
            names.iter().map(|n| (*n).to_owned()).collect()
        };
        let suites: BTreeMap<String, BTreeSet<String>> = [
            (
                "Stores",
                listed(crate::repository_contract_tests!(@list __contract_names,)),
            ),
            (
                "ProviderPorts",
                listed(crate::provider_contract_tests!(@list __contract_names,)),
            ),
            (
                "Limiter",
                listed(crate::rate_limiter_contract_tests!(@list __contract_names,)),
            ),
        ]
        .into_iter()
        .map(|(fixture, names)| (fixture.to_owned(), names))
        .collect();
        let defined = defined();
        assert_eq!(
            defined.keys().collect::<Vec<_>>(),
            suites.keys().collect::<Vec<_>>(),
            "a contract takes a fixture no suite runs"
        );
        for (fixture, names) in &suites {
            assert_eq!(
                &defined[fixture], names,
                "the {fixture} suite's list and its contracts differ"
            );
        }
    }
}

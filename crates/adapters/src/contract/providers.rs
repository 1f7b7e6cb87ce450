//! Contracts of the provisioning provider ports:
//! [`TenantDatabases`](tenantd_domain::ports::TenantDatabases),
//! [`DnsProvider`](tenantd_domain::ports::DnsProvider) and
//! [`BillingProvider`](tenantd_domain::ports::BillingProvider). Every operation is
//! idempotent (a step re-run after a crash must be harmless) and an undo removes exactly
//! what its tenant was given.

use std::sync::Arc;

use tenantd_domain::ports::{DnsRecord, ProvisioningTarget, Subscription};
use tenantd_domain::tenant_schema::{
    AppliedMigration, MigrationLimits, MigrationSet, PlacementRule,
};
use tenantd_domain::{PlanId, Slug};

use super::ProviderPorts;
use super::fixtures::{Collected, run_for, slug, tenant};

/// Stores a new tenant with slug `slug` on `plan` and returns what the providers get.
async fn target(ports: &ProviderPorts, slug: &str, plan: &str) -> ProvisioningTarget {
    let tenant = tenant(slug, plan, &[]);
    ports
        .tenants
        .create(&tenant, &run_for(&tenant), &[], None)
        .await
        .expect("store the tenant");
    ProvisioningTarget {
        tenant_id: tenant.id(),
        slug: tenant.slug().clone(),
        display_name: tenant.display_name().clone(),
        plan_id: tenant.plan_id().clone(),
        contact_email: tenant
            .contact_email()
            .cloned()
            .expect("a live tenant's address"),
        placement: PlacementRule::Shared("default".into()).place(tenant.id(), &ports.schema_prefix),
    }
}

/// A set of `n` migrations of a `widgets` table (`edit` changes the first one's text).
fn widgets(n: u32, edit: bool) -> Arc<MigrationSet> {
    let mut files = vec![(
        "0001_widgets.sql".to_owned(),
        if edit {
            "CREATE TABLE widgets (id bigint PRIMARY KEY); -- edited"
                .as_bytes()
                .to_vec()
        } else {
            "CREATE TABLE widgets (id bigint PRIMARY KEY);"
                .as_bytes()
                .to_vec()
        },
    )];
    for v in 2..=n {
        files.push((
            format!("{v:04}_column_{v}.sql"),
            format!("ALTER TABLE widgets ADD COLUMN c{v} integer NOT NULL DEFAULT {v};")
                .into_bytes(),
        ));
    }
    Arc::new(MigrationSet::parse(files).expect("a valid set"))
}

const LIMITS: MigrationLimits = MigrationLimits {
    lock_timeout_ms: 5_000,
    statement_timeout_ms: 30_000,
};

fn expected_records(ports: &ProviderPorts, slug: &Slug) -> Vec<DnsRecord> {
    let mut records =
        DnsRecord::of_tenant(slug, &ports.dns_base_domain, ports.dns_ingress).to_vec();
    records.sort();
    records
}

/// A provisioned tenant database exists; provisioning it again succeeds and keeps it.
pub async fn a_tenant_database_exists_once_provisioned_and_provisioning_again_is_harmless(
    ports: ProviderPorts,
) {
    let target = target(&ports, &slug("db"), "pro").await;
    assert!(
        !ports
            .databases
            .exists(&target.placement)
            .await
            .expect("exists")
    );
    ports.databases.provision(&target).await.expect("provision");
    assert!(
        ports
            .databases
            .exists(&target.placement)
            .await
            .expect("exists")
    );
    ports
        .databases
        .provision(&target)
        .await
        .expect("provision again");
    assert!(
        ports
            .databases
            .exists(&target.placement)
            .await
            .expect("exists")
    );
}

/// A deprovisioned tenant database is gone; deprovisioning again (or a tenant that never
/// had one) succeeds, and it can be provisioned anew.
pub async fn a_deprovisioned_tenant_database_is_gone_and_deprovisioning_again_is_harmless(
    ports: ProviderPorts,
) {
    let target = target(&ports, &slug("db"), "pro").await;
    ports
        .databases
        .deprovision(target.tenant_id, &target.placement)
        .await
        .expect("deprovision what never was");
    ports.databases.provision(&target).await.expect("provision");
    ports
        .databases
        .deprovision(target.tenant_id, &target.placement)
        .await
        .expect("deprovision");
    assert!(
        !ports
            .databases
            .exists(&target.placement)
            .await
            .expect("exists")
    );
    ports
        .databases
        .deprovision(target.tenant_id, &target.placement)
        .await
        .expect("deprovision again");
    ports
        .databases
        .provision(&target)
        .await
        .expect("provision anew");
    assert!(
        ports
            .databases
            .exists(&target.placement)
            .await
            .expect("exists")
    );
}

/// One tenant's database comes and goes without touching another's.
pub async fn tenant_databases_of_tenants_are_separate(ports: ProviderPorts) {
    let first = target(&ports, &slug("one"), "pro").await;
    let second = target(&ports, &slug("two"), "free").await;
    ports.databases.provision(&first).await.expect("provision");
    ports.databases.provision(&second).await.expect("provision");
    ports
        .databases
        .deprovision(first.tenant_id, &first.placement)
        .await
        .expect("deprovision");
    assert!(
        !ports
            .databases
            .exists(&first.placement)
            .await
            .expect("exists")
    );
    assert!(
        ports
            .databases
            .exists(&second.placement)
            .await
            .expect("exists")
    );
}

/// A new schema is made at the newest version and records every migration; migrating it
/// with a newer set applies only the versions it lacks (again: nothing), and a target
/// below its version changes nothing.
pub async fn a_new_schema_is_at_the_newest_version_and_migrating_applies_only_what_it_lacks(
    ports: ProviderPorts,
) {
    let target = target(&ports, &slug("mig"), "pro").await;
    let v2 = (ports.databases_with)(widgets(2, false));
    let made = v2.provision(&target).await.expect("provision");
    assert_eq!((made.from, made.to, made.applied.len()), (0, 2, 2));
    let recorded = v2.applied(&target.placement).await.expect("applied");
    let expected: Vec<AppliedMigration> = widgets(2, false)
        .migrations()
        .iter()
        .map(AppliedMigration::from)
        .collect();
    assert_eq!(recorded, expected);
    let again = v2.provision(&target).await.expect("provision again");
    assert_eq!((again.from, again.to, again.applied.len()), (2, 2, 0));

    let v4 = (ports.databases_with)(widgets(4, false));
    let to_three = v4
        .migrate(&target.placement, 3, LIMITS)
        .await
        .expect("migrate")
        .expect("the schema exists");
    assert_eq!((to_three.from, to_three.to), (2, 3));
    assert_eq!(
        to_three
            .applied
            .iter()
            .map(|m| m.version)
            .collect::<Vec<_>>(),
        [3]
    );
    let to_four = v4
        .migrate(&target.placement, 4, LIMITS)
        .await
        .expect("migrate")
        .expect("exists");
    assert_eq!((to_four.from, to_four.to, to_four.applied.len()), (3, 4, 1));
    let nothing = v4
        .migrate(&target.placement, 4, LIMITS)
        .await
        .expect("migrate")
        .expect("exists");
    assert_eq!((nothing.from, nothing.to, nothing.applied.len()), (4, 4, 0));
    let below = v2
        .migrate(&target.placement, 2, LIMITS)
        .await
        .expect("an older release's replica")
        .expect("exists");
    assert_eq!((below.from, below.to, below.applied.len()), (4, 4, 0));
    assert_eq!(
        v4.applied(&target.placement).await.expect("applied").len(),
        4
    );
}

/// A schema whose applied migration was edited since is refused (`MIGRATION_DRIFT`,
/// permanent), and left as it was.
pub async fn an_applied_migration_edited_since_is_drift_and_changes_nothing(ports: ProviderPorts) {
    let target = target(&ports, &slug("drift"), "pro").await;
    (ports.databases_with)(widgets(1, false))
        .provision(&target)
        .await
        .expect("provision");
    let edited = (ports.databases_with)(widgets(2, true));
    let err = edited
        .migrate(&target.placement, 2, LIMITS)
        .await
        .expect_err("drift");
    assert_eq!(
        (err.reason.as_str(), err.permanent),
        ("MIGRATION_DRIFT", true)
    );
    assert!(err.message.contains("0001_widgets.sql"), "{}", err.message);
    assert_eq!(
        edited
            .applied(&target.placement)
            .await
            .expect("applied")
            .len(),
        1
    );
}

/// Migrating (or reading) a schema that does not exist finds nothing and makes nothing.
pub async fn migrating_a_schema_that_does_not_exist_finds_nothing(ports: ProviderPorts) {
    let target = target(&ports, &slug("none"), "pro").await;
    let found = ports
        .databases
        .migrate(&target.placement, 2, LIMITS)
        .await
        .expect("migrate");
    assert_eq!(found, None);
    assert!(
        !ports
            .databases
            .exists(&target.placement)
            .await
            .expect("exists")
    );
    assert_eq!(
        ports
            .databases
            .applied(&target.placement)
            .await
            .expect("applied"),
        []
    );
}

/// Publishing gives the tenant `<slug>.<base domain>` to the ingress address and `www.`
/// as a CNAME to it, and nothing else.
pub async fn published_dns_records_name_the_slug_under_the_base_domain(ports: ProviderPorts) {
    let target = target(&ports, &slug("dns"), "pro").await;
    assert_eq!(
        ports.dns.records(target.tenant_id).await.expect("records"),
        []
    );
    ports.dns.publish(&target).await.expect("publish");
    assert_eq!(
        ports.dns.records(target.tenant_id).await.expect("records"),
        expected_records(&ports, &target.slug)
    );
}

/// Publishing again keeps the same records.
pub async fn publishing_dns_records_again_changes_nothing(ports: ProviderPorts) {
    let target = target(&ports, &slug("dns"), "pro").await;
    ports.dns.publish(&target).await.expect("publish");
    ports.dns.publish(&target).await.expect("publish again");
    assert_eq!(
        ports.dns.records(target.tenant_id).await.expect("records"),
        expected_records(&ports, &target.slug)
    );
}

/// A name another tenant holds fails the publish permanently with `DNS_NAME_TAKEN`, and
/// nothing is written for the newcomer.
pub async fn a_dns_name_held_by_another_tenant_fails_permanently(ports: ProviderPorts) {
    let holder = target(&ports, &slug("held"), "pro").await;
    ports.dns.publish(&holder).await.expect("publish");
    // A second tenant whose slug yields the same names (the first one's slug, which the
    // tenant store would refuse, is used under another tenant id).
    let mut newcomer = target(&ports, &slug("new"), "pro").await;
    newcomer.slug = holder.slug.clone();
    let err = ports
        .dns
        .publish(&newcomer)
        .await
        .expect_err("the names are held");
    assert_eq!(err.reason, "DNS_NAME_TAKEN");
    assert!(err.permanent, "retrying cannot help: {err:?}");
    assert_eq!(
        ports
            .dns
            .records(newcomer.tenant_id)
            .await
            .expect("records"),
        []
    );
    assert_eq!(
        ports.dns.records(holder.tenant_id).await.expect("records"),
        expected_records(&ports, &holder.slug)
    );
}

/// Withdrawing removes every record of the tenant (again: harmless), and the names can
/// then be published for another tenant.
pub async fn withdrawn_dns_records_are_gone_and_their_names_free_again(ports: ProviderPorts) {
    let first = target(&ports, &slug("gone"), "pro").await;
    ports.dns.publish(&first).await.expect("publish");
    ports.dns.withdraw(first.tenant_id).await.expect("withdraw");
    assert_eq!(
        ports.dns.records(first.tenant_id).await.expect("records"),
        []
    );
    ports
        .dns
        .withdraw(first.tenant_id)
        .await
        .expect("withdraw again");
    let mut next = target(&ports, &slug("next"), "pro").await;
    next.slug = first.slug.clone();
    ports.dns.publish(&next).await.expect("the names are free");
    assert_eq!(
        ports.dns.records(next.tenant_id).await.expect("records"),
        expected_records(&ports, &next.slug)
    );
}

/// Withdrawing one tenant's records leaves another's in place.
pub async fn withdrawing_one_tenants_dns_records_leaves_the_others(ports: ProviderPorts) {
    let first = target(&ports, &slug("one"), "pro").await;
    let second = target(&ports, &slug("two"), "pro").await;
    ports.dns.publish(&first).await.expect("publish");
    ports.dns.publish(&second).await.expect("publish");
    ports.dns.withdraw(first.tenant_id).await.expect("withdraw");
    assert_eq!(
        ports.dns.records(second.tenant_id).await.expect("records"),
        expected_records(&ports, &second.slug)
    );
}

/// Subscribing makes an active subscription to the tenant's plan; again, the same.
pub async fn a_subscription_is_active_for_the_tenants_plan_and_subscribing_again_is_harmless(
    ports: ProviderPorts,
) {
    let target = target(&ports, &slug("bill"), "basic").await;
    assert_eq!(
        ports
            .billing
            .subscription(target.tenant_id)
            .await
            .expect("read"),
        None
    );
    let active = Some(Subscription {
        plan_id: PlanId::new("basic"),
        active: true,
    });
    ports.billing.subscribe(&target).await.expect("subscribe");
    assert_eq!(
        ports
            .billing
            .subscription(target.tenant_id)
            .await
            .expect("read"),
        active
    );
    ports
        .billing
        .subscribe(&target)
        .await
        .expect("subscribe again");
    assert_eq!(
        ports
            .billing
            .subscription(target.tenant_id)
            .await
            .expect("read"),
        active
    );
}

/// Cancelling makes the subscription inactive (again: harmless); subscribing renews it.
pub async fn a_cancelled_subscription_is_inactive_and_can_be_renewed(ports: ProviderPorts) {
    let target = target(&ports, &slug("bill"), "pro").await;
    ports.billing.subscribe(&target).await.expect("subscribe");
    ports
        .billing
        .cancel(target.tenant_id)
        .await
        .expect("cancel");
    ports
        .billing
        .cancel(target.tenant_id)
        .await
        .expect("cancel again");
    let read = ports
        .billing
        .subscription(target.tenant_id)
        .await
        .expect("read");
    assert_eq!(
        read,
        Some(Subscription {
            plan_id: PlanId::new("pro"),
            active: false,
        })
    );
    ports.billing.subscribe(&target).await.expect("renew");
    let renewed = ports
        .billing
        .subscription(target.tenant_id)
        .await
        .expect("read")
        .expect("subscribed");
    assert!(renewed.active);
}

/// Cancelling a tenant that never subscribed succeeds and subscribes it to nothing.
pub async fn cancelling_without_a_subscription_is_harmless(ports: ProviderPorts) {
    let target = target(&ports, &slug("bill"), "pro").await;
    ports
        .billing
        .cancel(target.tenant_id)
        .await
        .expect("cancel");
    assert_eq!(
        ports
            .billing
            .subscription(target.tenant_id)
            .await
            .expect("read"),
        None
    );
}

/// A dump of a provisioned schema holds its tables in name order, `schema_migrations` with
/// a row per applied migration among them, each with its DDL; a tenant without a schema
/// dumps nothing, and a dump never shows another tenant's schema.
pub async fn a_dump_holds_the_schemas_tables_of_its_tenant_only(ports: ProviderPorts) {
    let (a, b) = (
        target(&ports, &slug("dump-a"), "pro").await,
        target(&ports, &slug("dump-b"), "pro").await,
    );
    let dump = |target: &ProvisioningTarget| {
        let (dumps, target) = (ports.dumps.clone(), target.clone());
        async move {
            let mut tables = Collected::default();
            dumps
                .dump(target.tenant_id, &target.placement, &mut tables)
                .await
                .expect("dump");
            tables.0
        }
    };
    assert_eq!(dump(&a).await, Vec::new(), "no schema yet");
    let made = ports.databases.provision(&a).await.expect("provision");
    let tables = dump(&a).await;
    let names: Vec<&str> = tables.iter().map(|t| t.0.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "name order");
    let (_, ddl, csv) = tables
        .iter()
        .find(|t| t.0 == "schema_migrations")
        .expect("the migrations table");
    assert!(
        ddl.starts_with("CREATE TABLE \"schema_migrations\" ("),
        "{ddl}"
    );
    assert!(ddl.contains("\"version\" integer NOT NULL"), "{ddl}");
    let csv = String::from_utf8(csv.clone()).expect("CSV is text");
    let mut lines = csv.lines();
    let header = lines.next().expect("a header");
    assert!(
        header.starts_with("version,name,") && header.contains("checksum"),
        "{header}"
    );
    assert_eq!(
        lines.count(),
        usize::try_from(made.to).expect("a small version"),
        "a row per applied migration"
    );
    assert_eq!(dump(&b).await, Vec::new(), "the other tenant has no schema");
}

//! Test data for the contract suites.

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use tenantd_domain::provisioning::{ProvisioningRun, RunId};
use tenantd_domain::{
    ContactEmail, DisplayName, Event, EventId, EventKind, Labels, NewTenant, PlanId, Slug, Tenant,
    TenantConfig, TenantId,
};
use uuid::Uuid;

/// Now, at the microsecond precision every store keeps.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A unique-enough slug: `prefix` plus random hex.
pub(crate) fn slug(prefix: &str) -> String {
    format!("{prefix}-{}", &Uuid::new_v4().simple().to_string()[..12])
}

/// A new tenant with the given slug, plan and labels.
pub(crate) fn tenant(slug: &str, plan: &str, labels: &[(&str, &str)]) -> Tenant {
    let mut config = serde_json::Map::new();
    config.insert("region".into(), serde_json::json!("eu-west-1"));
    config.insert(
        "limits".into(),
        serde_json::json!({"seats": 10, "sso": true}),
    );
    let new = NewTenant {
        slug: Slug::parse(slug).expect("valid slug"),
        display_name: DisplayName::parse("Contract Test Inc").expect("valid name"),
        plan_id: PlanId::new(plan),
        contact_email: ContactEmail::parse(&format!("Ops@{slug}.example")).expect("valid email"),
        labels: Labels::parse(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        )
        .expect("valid labels"),
        config: TenantConfig::parse(config).expect("valid config"),
    };
    Tenant::create(TenantId::from_uuid(Uuid::now_v7()).expect("v7"), new, now())
}

/// An event about `tenant`.
pub(crate) fn event(tenant: &Tenant, kind: EventKind) -> Event {
    Event {
        id: EventId(Uuid::now_v7()),
        subject: tenant.id().into(),
        occurred_at: now(),
        kind,
    }
}

/// A `TenantCreated` event for `tenant`.
pub(crate) fn created(tenant: &Tenant) -> Event {
    event(
        tenant,
        EventKind::TenantCreated {
            slug: tenant.slug().to_string(),
            display_name: tenant.display_name().as_str().to_owned(),
            plan_id: tenant.plan_id().to_string(),
            labels: tenant.labels().as_map().clone(),
        },
    )
}

/// A new provisioning run for `tenant`, as a create stores it.
pub(crate) fn run_for(tenant: &Tenant) -> ProvisioningRun {
    ProvisioningRun::new(
        RunId(Uuid::now_v7()),
        tenant.id(),
        tenant.created_at(),
        chrono::Duration::minutes(30),
    )
}

/// A dump's tables as a sink receives them: (name, DDL, CSV), for the dump contracts.
#[derive(Debug, Default)]
pub struct Collected(pub Vec<(String, String, Vec<u8>)>);

#[async_trait::async_trait]
impl tenantd_domain::ports::DumpSink for Collected {
    async fn table(
        &mut self,
        name: &str,
        ddl: &str,
    ) -> Result<(), tenantd_domain::provisioning::StepError> {
        self.0.push((name.to_owned(), ddl.to_owned(), Vec::new()));
        Ok(())
    }

    async fn rows(&mut self, csv: &[u8]) -> Result<(), tenantd_domain::provisioning::StepError> {
        match self.0.last_mut() {
            Some((_, _, rows)) => {
                rows.extend_from_slice(csv);
                Ok(())
            }
            None => Err(tenantd_domain::provisioning::StepError::new(
                "NO_TABLE",
                "rows before any table",
            )),
        }
    }
}

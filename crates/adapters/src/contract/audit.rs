//! Contract of [`AuditLog`](tenantd_domain::ports::AuditLog).

use chrono::Duration;
use tenantd_domain::{AuditQuery, AuditRecord, TenantId};
use uuid::Uuid;

use super::Stores;
use super::fixtures::now;

fn record(principal: &str, method: &str, tenant: Option<TenantId>) -> AuditRecord {
    AuditRecord {
        id: Uuid::now_v7(),
        principal: principal.into(),
        method: method.into(),
        tenant_id: tenant,
        code: "OK".into(),
        at: now(),
        request_id: Uuid::new_v4().to_string(),
    }
}

/// Records list newest first, filtered, after a cursor; appending twice stores once.
pub async fn audit_records_list_newest_first_with_filters(stores: Stores) {
    let tenant = Some(TenantId::from_uuid(Uuid::now_v7()).expect("v7"));
    let unique = format!(
        "spiffe://tenantd.local/service/audit-{}",
        Uuid::new_v4().simple()
    );
    let a = record(&unique, "/tenant.v1.TenantService/GetTenant", tenant);
    let b = record(&unique, "/tenant.v1.PlanService/ListPlans", None);
    let c = record(&unique, "/tenant.v1.TenantService/GetTenant", None);
    stores
        .audit
        .append(&[a.clone(), b.clone()])
        .await
        .expect("append");
    stores
        .audit
        .append(&[c.clone(), a.clone()])
        .await
        .expect("append again");
    let query = AuditQuery {
        limit: 10,
        principal: Some(unique.clone()),
        ..AuditQuery::default()
    };
    assert_eq!(
        stores.audit.list(&query).await.expect("list"),
        vec![c.clone(), b.clone(), a.clone()]
    );
    let page = AuditQuery {
        before: Some(c.id),
        limit: 1,
        ..query.clone()
    };
    assert_eq!(
        stores.audit.list(&page).await.expect("list"),
        vec![b.clone()]
    );
    let by_tenant = AuditQuery {
        tenant_id: tenant,
        ..query.clone()
    };
    assert_eq!(
        stores.audit.list(&by_tenant).await.expect("list"),
        vec![a.clone()]
    );
    let by_method = AuditQuery {
        method: Some("/tenant.v1.TenantService/GetTenant".into()),
        ..query.clone()
    };
    assert_eq!(
        stores.audit.list(&by_method).await.expect("list"),
        vec![c, a]
    );
    let later = AuditQuery {
        start: Some(now() + Duration::hours(1)),
        ..query
    };
    assert!(stores.audit.list(&later).await.expect("list").is_empty());
}

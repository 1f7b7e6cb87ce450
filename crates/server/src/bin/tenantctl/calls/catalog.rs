//! `tenantctl plans ...`, `events ...` and `audit ...`.

use clap::Subcommand;
use tenantd_server::proto::event_service_client::EventServiceClient;
use tenantd_server::proto::plan_service_client::PlanServiceClient;
use tenantd_server::proto::{
    DeadLetter, GetPlanRequest, ListAuditRecordsRequest, ListDeadLettersRequest, ListPlansRequest,
    ListTenantEventsRequest, Plan, RetryDeadLettersRequest,
};

use super::{Page, more};
use crate::output::{Printer, Table, time};
use crate::{Connection, Failure};

/// `tenantctl plans ...`.
#[derive(Debug, Subcommand)]
pub enum Plans {
    /// Lists the plans.
    List,
    /// Shows a plan.
    Get {
        /// The plan's id.
        plan_id: String,
    },
}

/// `tenantctl events ...`.
#[derive(Debug, Subcommand)]
pub enum Events {
    /// Lists lifecycle events, oldest first.
    List {
        /// Only this tenant's.
        #[arg(long, default_value = "")]
        tenant: String,
        #[command(flatten)]
        page: Page,
    },
    /// Lists the dead letters: events the relay gave up on.
    DeadLetters {
        /// Only this tenant's.
        #[arg(long, default_value = "")]
        tenant: String,
        #[command(flatten)]
        page: Page,
    },
    /// Puts dead letters back in the outbox: these events, or all of a tenant's.
    RetryDeadLetters {
        /// The events' ids.
        #[arg(required_unless_present = "tenant")]
        event_ids: Vec<String>,
        /// Every dead letter of this tenant.
        #[arg(long, conflicts_with = "event_ids")]
        tenant: Option<String>,
    },
}

/// `tenantctl audit ...`.
#[derive(Debug, Subcommand)]
pub enum Audit {
    /// Lists audit records, newest first.
    List {
        /// Only calls about this tenant.
        #[arg(long, default_value = "")]
        tenant: String,
        /// Only calls of this principal (`spiffe://.../admin`).
        #[arg(long, default_value = "")]
        principal: String,
        /// Only this method (`/tenant.v1.TenantService/CreateTenant`).
        #[arg(long, default_value = "")]
        method: String,
        #[command(flatten)]
        page: Page,
    },
}

fn plans_table(plans: &[Plan]) -> Table {
    let mut table = Table::new(&["PLAN", "MAX API KEYS", "REQUESTS/S", "MAX USERS", "NAME"]);
    for plan in plans {
        let quotas = plan.quotas.unwrap_or_default();
        table.row(vec![
            plan.plan_id.clone(),
            quotas.max_api_keys.to_string(),
            quotas.requests_per_second.to_string(),
            quotas.max_users.to_string(),
            plan.display_name.clone(),
        ]);
    }
    table
}

fn dead_letters_table(letters: &[DeadLetter]) -> Table {
    let mut table = Table::new(&[
        "EVENT ID",
        "TENANT",
        "TYPE",
        "ATTEMPTS",
        "DEAD SINCE",
        "ERROR",
    ]);
    for letter in letters {
        table.row(vec![
            letter.event_id.clone(),
            letter.tenant_id.clone(),
            letter.event_type.clone(),
            letter.delivery_attempts.to_string(),
            time(letter.dead_letter_time.as_ref()),
            letter.last_error.clone(),
        ]);
    }
    table
}

/// Runs a plans command.
pub async fn plans(
    command: Plans,
    connection: &Connection,
    printer: &Printer,
) -> Result<(), Failure> {
    let mut client = PlanServiceClient::new(connection.channel());
    match command {
        Plans::List => {
            let page = client
                .list_plans(connection.request(ListPlansRequest::default()))
                .await?;
            printer.print(page.get_ref(), |r| plans_table(&r.plans))?;
        }
        Plans::Get { plan_id } => {
            let got = client
                .get_plan(connection.request(GetPlanRequest { plan_id }))
                .await?;
            printer.print(got.get_ref(), |r| plans_table(r.plan.as_slice()))?;
        }
    }
    Ok(())
}

/// Runs an events command.
pub async fn events(
    command: Events,
    connection: &Connection,
    printer: &Printer,
) -> Result<(), Failure> {
    let mut client = EventServiceClient::new(connection.channel());
    match command {
        Events::List { tenant, page } => {
            let request = ListTenantEventsRequest {
                tenant_id: tenant,
                page_size: page.page_size,
                page_token: page.page_token,
            };
            let page = client
                .list_tenant_events(connection.request(request))
                .await?;
            printer.print(page.get_ref(), |r| {
                let mut table = Table::new(&["EVENT ID", "TENANT", "TIME", "TYPE"]);
                for event in &r.events {
                    let kind = event
                        .payload
                        .as_ref()
                        .map(|p| {
                            let debug = format!("{p:?}");
                            debug.split('(').next().unwrap_or_default().to_owned()
                        })
                        .unwrap_or_default();
                    table.row(vec![
                        event.event_id.clone(),
                        event.tenant_id.clone(),
                        time(event.occur_time.as_ref()),
                        kind,
                    ]);
                }
                table
            })?;
            more(&page.get_ref().next_page_token);
        }
        Events::DeadLetters { tenant, page } => {
            let request = ListDeadLettersRequest {
                tenant_id: tenant,
                page_size: page.page_size,
                page_token: page.page_token,
            };
            let page = client
                .list_dead_letters(connection.request(request))
                .await?;
            printer.print(page.get_ref(), |r| dead_letters_table(&r.dead_letters))?;
            more(&page.get_ref().next_page_token);
        }
        Events::RetryDeadLetters { event_ids, tenant } => {
            let request = RetryDeadLettersRequest {
                event_ids,
                tenant_id: tenant.unwrap_or_default(),
            };
            let retried = client
                .retry_dead_letters(connection.request(request))
                .await?;
            printer.print(retried.get_ref(), |r| {
                let mut table = Table::new(&["RETRIED EVENT ID"]);
                for id in &r.event_ids {
                    table.row(vec![id.clone()]);
                }
                table
            })?;
        }
    }
    Ok(())
}

/// Runs an audit command.
pub async fn audit(
    command: Audit,
    connection: &Connection,
    printer: &Printer,
) -> Result<(), Failure> {
    let mut client = EventServiceClient::new(connection.channel());
    let Audit::List {
        tenant,
        principal,
        method,
        page,
    } = command;
    let request = ListAuditRecordsRequest {
        tenant_id: tenant,
        principal,
        method,
        start_time: None,
        end_time: None,
        page_size: page.page_size,
        page_token: page.page_token,
    };
    let page = client
        .list_audit_records(connection.request(request))
        .await?;
    printer.print(page.get_ref(), |r| {
        let mut table = Table::new(&["TIME", "PRINCIPAL", "METHOD", "CODE", "TENANT"]);
        for record in &r.records {
            table.row(vec![
                time(record.time.as_ref()),
                record.principal.clone(),
                record.method.clone(),
                record.code.clone(),
                record.tenant_id.clone(),
            ]);
        }
        table
    })?;
    more(&page.get_ref().next_page_token);
    Ok(())
}

//! `tenantctl tenants ...`.

use std::collections::BTreeMap;

use clap::Subcommand;
use tenantd_server::proto::tenant_service_client::TenantServiceClient;
use tenantd_server::proto::{
    CreateTenantRequest, DeleteTenantRequest, GetTenantRequest, ListTenantsRequest,
    ResumeTenantRequest, SuspendTenantRequest, Tenant, TenantStatus, UndeleteTenantRequest,
    UpdateTenantRequest,
};

use super::{key_value, more};
use crate::output::{Printer, Table, short, time};
use crate::{Connection, Failure};

/// A `--status` value (`active`, `suspended`, ...) as the proto's status, by its name:
/// the proto is the one list of statuses.
fn status(text: &str) -> Result<TenantStatus, String> {
    let name = format!("TENANT_STATUS_{}", text.to_ascii_uppercase());
    TenantStatus::from_str_name(&name)
        .filter(|s| *s != TenantStatus::Unspecified)
        .ok_or_else(|| {
            let known: Vec<String> = (1..)
                .map_while(|n| TenantStatus::try_from(n).ok())
                .map(|s| short(s.as_str_name(), "TENANT_STATUS_").to_ascii_lowercase())
                .collect();
            format!("{text:?} is not a status ({})", known.join(", "))
        })
}

/// `tenantctl tenants ...`.
#[derive(Debug, Subcommand)]
pub enum Tenants {
    /// Creates a tenant and starts its provisioning.
    Create {
        /// The tenant's slug (its DNS label).
        #[arg(long)]
        slug: String,
        /// Its display name.
        #[arg(long)]
        display_name: String,
        /// Its plan.
        #[arg(long)]
        plan: String,
        /// Where to write to the tenant.
        #[arg(long)]
        contact_email: String,
        /// A label, KEY=VALUE (repeatable).
        #[arg(long = "label", value_parser = key_value)]
        labels: Vec<(String, String)>,
        /// Its configuration, a JSON object.
        #[arg(long)]
        config: Option<String>,
        /// Makes the create idempotent: a retry with the same id gets the same tenant.
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Shows a tenant.
    Get {
        /// The tenant's id.
        tenant_id: String,
    },
    /// Lists tenants, filtered.
    List(ListArgs),
    /// Changes the fields given (a field mask of exactly those).
    Update(UpdateArgs),
    /// Deletes a tenant (it can be undeleted until its purge time).
    Delete {
        /// The tenant's id.
        tenant_id: String,
        /// Only if the tenant is still at this etag.
        #[arg(long, default_value = "")]
        etag: String,
    },
    /// Brings a deleted tenant back.
    Undelete {
        /// The tenant's id.
        tenant_id: String,
        /// Only if the tenant is still at this etag.
        #[arg(long, default_value = "")]
        etag: String,
    },
    /// Suspends a tenant (its API keys stop verifying as active).
    Suspend {
        /// The tenant's id.
        tenant_id: String,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Only if the tenant is still at this etag.
        #[arg(long, default_value = "")]
        etag: String,
    },
    /// Resumes a suspended tenant.
    Resume {
        /// The tenant's id.
        tenant_id: String,
        /// Only if the tenant is still at this etag.
        #[arg(long, default_value = "")]
        etag: String,
    },
}

/// `tenants list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only tenants of this status (provisioning, active, suspended, ...).
    #[arg(long, value_parser = status)]
    pub status: Option<TenantStatus>,
    /// Only tenants on this plan.
    #[arg(long)]
    pub plan: Option<String>,
    /// Only tenants with this label, KEY=VALUE (repeatable: all must match).
    #[arg(long = "label", value_parser = key_value)]
    pub labels: Vec<(String, String)>,
    /// Only tenants whose slug starts so.
    #[arg(long)]
    pub slug_prefix: Option<String>,
    /// Also deleted tenants.
    #[arg(long)]
    pub show_deleted: bool,
    /// Tenants per page.
    #[arg(long, default_value_t = 0)]
    pub page_size: i32,
    /// The page after the one that gave this token.
    #[arg(long, default_value = "")]
    pub page_token: String,
    /// Every page (table output only).
    #[arg(long, conflicts_with = "page_token")]
    pub all: bool,
}

/// `tenants update`.
#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// The tenant's id.
    pub tenant_id: String,
    /// A new display name.
    #[arg(long)]
    pub display_name: Option<String>,
    /// A new plan.
    #[arg(long)]
    pub plan: Option<String>,
    /// A new contact email.
    #[arg(long)]
    pub contact_email: Option<String>,
    /// The labels, replacing all of them: KEY=VALUE (repeatable).
    #[arg(long = "label", value_parser = key_value)]
    pub labels: Vec<(String, String)>,
    /// Removes every label.
    #[arg(long, conflicts_with = "labels")]
    pub clear_labels: bool,
    /// The configuration, replacing it: a JSON object.
    #[arg(long)]
    pub config: Option<String>,
    /// Only if the tenant is still at this etag.
    #[arg(long, default_value = "")]
    pub etag: String,
}

/// A JSON object flag as a `google.protobuf.Struct`.
fn config(text: &str) -> Result<prost_types::Struct, Failure> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Failure::Usage(format!("--config is not JSON: {e}")))?;
    let serde_json::Value::Object(fields) = value else {
        return Err(Failure::Usage("--config must be a JSON object".into()));
    };
    Ok(prost_types::Struct {
        fields: fields.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
    })
}

fn to_value(value: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(to_value).collect(),
        }),
        serde_json::Value::Object(fields) => Kind::StructValue(prost_types::Struct {
            fields: fields.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

fn status_name(tenant: &Tenant) -> String {
    short(tenant.status().as_str_name(), "TENANT_STATUS_")
}

fn labels(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// One tenant as FIELD / VALUE rows.
pub fn tenant_table(tenant: Option<&Tenant>) -> Table {
    let Some(t) = tenant else {
        return Table::new(&["FIELD", "VALUE"]);
    };
    let run = t.provisioning.as_ref();
    Table::fields(vec![
        ("id", t.tenant_id.clone()),
        ("slug", t.slug.clone()),
        ("display name", t.display_name.clone()),
        ("plan", t.plan_id.clone()),
        ("status", status_name(t)),
        ("status reason", t.status_reason.clone()),
        ("contact email", t.contact_email.clone()),
        ("labels", labels(&t.labels)),
        (
            "provisioning",
            run.map(|r| short(r.state().as_str_name(), "RUN_STATE_"))
                .unwrap_or_default(),
        ),
        ("created", time(t.create_time.as_ref())),
        ("updated", time(t.update_time.as_ref())),
        ("deleted", time(t.delete_time.as_ref())),
        ("purge at", time(t.purge_time.as_ref())),
        ("etag", t.etag.clone()),
    ])
}

fn list_table(tenants: &[Tenant]) -> Table {
    let mut table = Table::new(&["ID", "SLUG", "STATUS", "PLAN", "CREATED", "DISPLAY NAME"]);
    for t in tenants {
        table.row(vec![
            t.tenant_id.clone(),
            t.slug.clone(),
            status_name(t),
            t.plan_id.clone(),
            time(t.create_time.as_ref()),
            t.display_name.clone(),
        ]);
    }
    table
}

/// Runs a tenants command.
pub async fn run(
    command: Tenants,
    connection: &Connection,
    printer: &Printer,
) -> Result<(), Failure> {
    let mut client = TenantServiceClient::new(connection.channel());
    match command {
        Tenants::Create {
            slug,
            display_name,
            plan,
            contact_email,
            labels,
            config: json,
            request_id,
        } => {
            let tenant = Tenant {
                slug,
                display_name,
                plan_id: plan,
                contact_email,
                labels: labels.into_iter().collect(),
                config: json.as_deref().map(config).transpose()?,
                ..Tenant::default()
            };
            let request = CreateTenantRequest {
                tenant: Some(tenant),
                request_id,
            };
            let created = client.create_tenant(connection.request(request)).await?;
            printer.print(created.get_ref(), |r| tenant_table(r.tenant.as_ref()))?;
        }
        Tenants::Get { tenant_id } => {
            let got = client
                .get_tenant(connection.request(GetTenantRequest { tenant_id }))
                .await?;
            printer.print(got.get_ref(), |r| tenant_table(r.tenant.as_ref()))?;
        }
        Tenants::List(args) => list(args, &mut client, connection, printer).await?,
        Tenants::Update(args) => update(args, &mut client, connection, printer).await?,
        Tenants::Delete { tenant_id, etag } => {
            let request = DeleteTenantRequest { tenant_id, etag };
            let deleted = client.delete_tenant(connection.request(request)).await?;
            printer.print(deleted.get_ref(), |r| tenant_table(r.tenant.as_ref()))?;
        }
        Tenants::Undelete { tenant_id, etag } => {
            let request = UndeleteTenantRequest { tenant_id, etag };
            let back = client.undelete_tenant(connection.request(request)).await?;
            printer.print(back.get_ref(), |r| tenant_table(r.tenant.as_ref()))?;
        }
        Tenants::Suspend {
            tenant_id,
            reason,
            etag,
        } => {
            let request = SuspendTenantRequest {
                tenant_id,
                reason,
                etag,
            };
            let suspended = client.suspend_tenant(connection.request(request)).await?;
            printer.print(suspended.get_ref(), |r| tenant_table(r.tenant.as_ref()))?;
        }
        Tenants::Resume { tenant_id, etag } => {
            let request = ResumeTenantRequest { tenant_id, etag };
            let resumed = client.resume_tenant(connection.request(request)).await?;
            printer.print(resumed.get_ref(), |r| tenant_table(r.tenant.as_ref()))?;
        }
    }
    Ok(())
}

type Client = TenantServiceClient<tonic::transport::Channel>;

async fn list(
    args: ListArgs,
    client: &mut Client,
    connection: &Connection,
    printer: &Printer,
) -> Result<(), Failure> {
    let ListArgs {
        status,
        plan,
        labels,
        slug_prefix,
        show_deleted,
        page_size,
        page_token,
        all,
    } = args;

    let mut request = ListTenantsRequest {
        page_size,
        page_token,
        status: status.map_or(0, |s| s as i32),
        plan_id: plan.unwrap_or_default(),
        labels: labels.into_iter().collect(),
        slug_prefix: slug_prefix.unwrap_or_default(),
        contact_email: String::new(),
        show_deleted,
    };
    if all && printer.format() == crate::output::Format::Table {
        let mut tenants = Vec::new();
        loop {
            let page = client
                .list_tenants(connection.request(request.clone()))
                .await?
                .into_inner();
            tenants.extend(page.tenants);
            if page.next_page_token.is_empty() {
                break;
            }
            request.page_token = page.next_page_token;
        }
        crate::output::emit(&list_table(&tenants).render())?;
    } else {
        let page = client.list_tenants(connection.request(request)).await?;
        printer.print(page.get_ref(), |r| list_table(&r.tenants))?;
        more(&page.get_ref().next_page_token);
    }

    Ok(())
}

async fn update(
    args: UpdateArgs,
    client: &mut Client,
    connection: &Connection,
    printer: &Printer,
) -> Result<(), Failure> {
    let UpdateArgs {
        tenant_id,
        display_name,
        plan,
        contact_email,
        labels,
        clear_labels,
        config: json,
        etag,
    } = args;

    let mut paths = Vec::new();
    let mut tenant = Tenant {
        tenant_id,
        etag,
        ..Tenant::default()
    };
    if let Some(name) = display_name {
        tenant.display_name = name;
        paths.push("display_name");
    }
    if let Some(plan) = plan {
        tenant.plan_id = plan;
        paths.push("plan_id");
    }
    if let Some(email) = contact_email {
        tenant.contact_email = email;
        paths.push("contact_email");
    }
    if clear_labels || !labels.is_empty() {
        tenant.labels = labels.into_iter().collect();
        paths.push("labels");
    }
    if let Some(json) = json {
        tenant.config = Some(config(&json)?);
        paths.push("config");
    }
    if paths.is_empty() {
        return Err(Failure::Usage(
            "nothing to update: give --display-name, --plan, --contact-email, --label, \
                     --clear-labels or --config"
                .into(),
        ));
    }
    let request = UpdateTenantRequest {
        tenant: Some(tenant),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.into_iter().map(str::to_owned).collect(),
        }),
    };
    let updated = client.update_tenant(connection.request(request)).await?;
    printer.print(updated.get_ref(), |r| tenant_table(r.tenant.as_ref()))?;

    Ok(())
}

//! `tenantctl rollouts ...` and `tenant-schemas ...`: the application's migrations across
//! the tenants' schemas.

use clap::Subcommand;
use tenantd_server::proto::migration_service_client::MigrationServiceClient;
use tenantd_server::proto::{
    CanarySelector, CancelRolloutRequest, ErrorBudget, GetRolloutRequest, LabelSelector,
    ListRolloutsRequest, ListTenantSchemasRequest, PauseRolloutRequest, ResumeRolloutRequest,
    RetryFailedTenantsRequest, Rollout, RolloutCounts, StartRolloutRequest, TenantIds,
    WatchRolloutRequest, canary_selector,
};

use super::{Page, key_value, more};
use crate::output::{Printer, Table, short, step_error, time};
use crate::{Connection, Failure};

/// `tenantctl rollouts ...`.
#[derive(Debug, Subcommand)]
pub enum Rollouts {
    /// Starts migrating every tenant schema behind the target version: a canary wave, then
    /// the rest.
    Start(StartArgs),
    /// Shows a rollout.
    Get {
        /// The rollout's id.
        rollout_id: String,
        /// Follows it until it ends (as `watch`).
        #[arg(long, short)]
        watch: bool,
    },
    /// Lists rollouts, newest first.
    List {
        #[command(flatten)]
        page: Page,
    },
    /// Follows a rollout until it ends.
    Watch {
        /// The rollout's id.
        rollout_id: String,
    },
    /// Pauses a running rollout (tenants in flight finish).
    Pause {
        /// The rollout's id.
        rollout_id: String,
    },
    /// Resumes a paused rollout.
    Resume {
        /// The rollout's id.
        rollout_id: String,
    },
    /// Cancels a rollout (tenants in flight finish; the rest stay where they are).
    Cancel {
        /// The rollout's id.
        rollout_id: String,
    },
    /// Queues the rollout's failed tenants again.
    RetryFailed {
        /// The rollout's id.
        rollout_id: String,
    },
}

/// `tenantctl rollouts start`.
#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// The version to migrate to.
    #[arg(long)]
    pub target_version: i32,
    /// The canary wave: the first N tenants behind the target.
    #[arg(long, conflicts_with_all = ["canary_tenant", "canary_label"])]
    pub canary_first: Option<i32>,
    /// The canary wave: these tenants (repeatable).
    #[arg(long, conflicts_with = "canary_label")]
    pub canary_tenant: Vec<String>,
    /// The canary wave: tenants with this label, KEY=VALUE (repeatable: all must match).
    #[arg(long, value_parser = key_value)]
    pub canary_label: Vec<(String, String)>,
    /// Tenants migrated at once across replicas (0: the server's default).
    #[arg(long, default_value_t = 0)]
    pub max_parallel: i32,
    /// Tenants migrated at once by one replica (0: the server's default).
    #[arg(long, default_value_t = 0)]
    pub max_parallel_per_replica: i32,
    /// Failed tenants after which the rollout pauses.
    #[arg(long)]
    pub error_budget_count: Option<i32>,
    /// Share of failed tenants after which the rollout pauses.
    #[arg(long)]
    pub error_budget_ratio: Option<f64>,
    /// `lock_timeout` of each migration, in milliseconds.
    #[arg(long)]
    pub lock_timeout_ms: Option<i64>,
    /// `statement_timeout` of each migration, in milliseconds.
    #[arg(long)]
    pub statement_timeout_ms: Option<i64>,
}

/// `tenantctl tenant-schemas ...`.
#[derive(Debug, Subcommand)]
pub enum TenantSchemas {
    /// Lists the tenants' schemas and their versions.
    List {
        /// Only schemas behind this version.
        #[arg(long, default_value_t = 0)]
        behind: i32,
        #[command(flatten)]
        page: Page,
    },
}

fn counts(counts: Option<&RolloutCounts>) -> String {
    let c = counts.copied().unwrap_or_default();
    format!(
        "{}/{} succeeded, {} running, {} pending, {} failed, {} skipped, {} cancelled",
        c.succeeded, c.total, c.running, c.pending, c.failed, c.skipped, c.cancelled
    )
}

fn rollout_table(rollout: Option<&Rollout>) -> Table {
    let Some(r) = rollout else {
        return Table::new(&["FIELD", "VALUE"]);
    };
    Table::fields(vec![
        ("rollout id", r.rollout_id.clone()),
        ("state", short(r.state().as_str_name(), "ROLLOUT_STATE_")),
        (
            "target version",
            r.spec
                .as_ref()
                .map(|s| s.target_version.to_string())
                .unwrap_or_default(),
        ),
        ("canary", counts(r.canary.as_ref())),
        ("tenants", counts(r.tenants.as_ref())),
        ("reason", step_error(r.reason.as_ref())),
        ("created by", r.created_by.clone()),
        ("created", time(r.create_time.as_ref())),
        ("finished", time(r.finish_time.as_ref())),
    ])
}

fn rollouts_table(rollouts: &[Rollout]) -> Table {
    let mut table = Table::new(&[
        "ROLLOUT ID",
        "STATE",
        "TARGET",
        "SUCCEEDED",
        "FAILED",
        "CREATED",
    ]);
    for r in rollouts {
        let c = r.tenants.unwrap_or_default();
        table.row(vec![
            r.rollout_id.clone(),
            short(r.state().as_str_name(), "ROLLOUT_STATE_"),
            r.spec
                .as_ref()
                .map(|s| s.target_version.to_string())
                .unwrap_or_default(),
            format!("{}/{}", c.succeeded, c.total),
            c.failed.to_string(),
            time(r.create_time.as_ref()),
        ]);
    }
    table
}

fn start_request(args: StartArgs) -> StartRolloutRequest {
    let selector = if let Some(first) = args.canary_first {
        Some(canary_selector::Selector::First(first))
    } else if !args.canary_tenant.is_empty() {
        Some(canary_selector::Selector::TenantIds(TenantIds {
            ids: args.canary_tenant,
        }))
    } else if !args.canary_label.is_empty() {
        Some(canary_selector::Selector::Labels(LabelSelector {
            match_labels: args.canary_label.into_iter().collect(),
        }))
    } else {
        None
    };
    let error_budget = (args.error_budget_count.is_some() || args.error_budget_ratio.is_some())
        .then(|| ErrorBudget {
            count: args.error_budget_count.unwrap_or(0),
            ratio: args.error_budget_ratio.unwrap_or(0.0),
        });
    StartRolloutRequest {
        target_version: args.target_version,
        canary: selector.map(|selector| CanarySelector {
            selector: Some(selector),
        }),
        max_parallel: args.max_parallel,
        max_parallel_per_replica: args.max_parallel_per_replica,
        error_budget,
        lock_timeout_ms: args.lock_timeout_ms,
        statement_timeout_ms: args.statement_timeout_ms,
    }
}

/// Runs a rollouts command.
pub async fn rollouts(
    command: Rollouts,
    connection: &Connection,
    printer: &Printer,
) -> Result<(), Failure> {
    let mut client = MigrationServiceClient::new(connection.channel());
    match command {
        Rollouts::Start(args) => {
            let started = client
                .start_rollout(connection.request(start_request(args)))
                .await?;
            printer.print(started.get_ref(), |r| rollout_table(r.rollout.as_ref()))?;
        }
        Rollouts::Get {
            rollout_id,
            watch: true,
        }
        | Rollouts::Watch { rollout_id } => {
            let request = Connection::stream_request(WatchRolloutRequest { rollout_id });
            let stream = client.watch_rollout(request).await?.into_inner();
            printer
                .follow(stream, |u| rollout_table(u.rollout.as_ref()))
                .await?;
        }
        Rollouts::Get {
            rollout_id,
            watch: false,
        } => {
            let got = client
                .get_rollout(connection.request(GetRolloutRequest { rollout_id }))
                .await?;
            printer.print(got.get_ref(), |r| rollout_table(r.rollout.as_ref()))?;
        }
        Rollouts::List { page } => {
            let request = ListRolloutsRequest {
                page_size: page.page_size,
                page_token: page.page_token,
            };
            let page = client.list_rollouts(connection.request(request)).await?;
            printer.print(page.get_ref(), |r| rollouts_table(&r.rollouts))?;
            more(&page.get_ref().next_page_token);
        }
        Rollouts::Pause { rollout_id } => {
            let paused = client
                .pause_rollout(connection.request(PauseRolloutRequest { rollout_id }))
                .await?;
            printer.print(paused.get_ref(), |r| rollout_table(r.rollout.as_ref()))?;
        }
        Rollouts::Resume { rollout_id } => {
            let resumed = client
                .resume_rollout(connection.request(ResumeRolloutRequest { rollout_id }))
                .await?;
            printer.print(resumed.get_ref(), |r| rollout_table(r.rollout.as_ref()))?;
        }
        Rollouts::Cancel { rollout_id } => {
            let cancelled = client
                .cancel_rollout(connection.request(CancelRolloutRequest { rollout_id }))
                .await?;
            printer.print(cancelled.get_ref(), |r| rollout_table(r.rollout.as_ref()))?;
        }
        Rollouts::RetryFailed { rollout_id } => {
            let retried = client
                .retry_failed_tenants(connection.request(RetryFailedTenantsRequest { rollout_id }))
                .await?;
            printer.print(retried.get_ref(), |r| rollout_table(r.rollout.as_ref()))?;
        }
    }
    Ok(())
}

/// Runs a tenant-schemas command.
pub async fn tenant_schemas(
    command: TenantSchemas,
    connection: &Connection,
    printer: &Printer,
) -> Result<(), Failure> {
    let mut client = MigrationServiceClient::new(connection.channel());
    let TenantSchemas::List { behind, page } = command;
    let request = ListTenantSchemasRequest {
        behind_version: behind,
        page_size: page.page_size,
        page_token: page.page_token,
    };
    let page = client
        .list_tenant_schemas(connection.request(request))
        .await?;
    printer.print(page.get_ref(), |r| {
        let mut table = Table::new(&["TENANT", "VERSION", "MIGRATED", "SCHEMA", "ERROR"]);
        for schema in &r.schemas {
            table.row(vec![
                schema.tenant_id.clone(),
                schema.version.to_string(),
                time(schema.migrate_time.as_ref()),
                schema
                    .placement
                    .as_ref()
                    .map(|p| p.schema.clone())
                    .unwrap_or_default(),
                step_error(schema.last_error.as_ref()),
            ]);
        }
        table
    })?;
    eprintln!("(newest version: {})", page.get_ref().newest_version);
    more(&page.get_ref().next_page_token);
    Ok(())
}

//! `tenantctl provisioning ...`.

use clap::Subcommand;
use tenantd_server::proto::provisioning_service_client::ProvisioningServiceClient;
use tenantd_server::proto::{
    CancelProvisioningRequest, GetProvisioningRequest, ProvisioningRun, RetryProvisioningRequest,
    WatchProvisioningRequest,
};

use crate::output::{Printer, Table, short, step_error, time};
use crate::{Connection, Failure};

/// `tenantctl provisioning ...`.
#[derive(Debug, Subcommand)]
pub enum Provisioning {
    /// Shows a tenant's latest provisioning run and its steps.
    Get {
        /// The tenant's id.
        tenant_id: String,
        /// Follows the run until it settles (as `watch`).
        #[arg(long, short)]
        watch: bool,
    },
    /// Follows a tenant's run until it settles: a live table on a terminal, else each
    /// change (with -o json, one object per line).
    Watch {
        /// The tenant's id.
        tenant_id: String,
    },
    /// Cancels a running run; the steps done are compensated.
    Cancel {
        /// The tenant's id.
        tenant_id: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Restarts a failed or cancelled run from the step that did not succeed.
    Retry {
        /// The tenant's id.
        tenant_id: String,
    },
}

/// A run: a line of its own, then a row per step.
pub fn run_table(run: Option<&ProvisioningRun>) -> Table {
    let mut table = Table::new(&["STEP", "STATE", "ATTEMPTS", "STARTED", "FINISHED", "ERROR"]);
    let Some(run) = run else {
        return table;
    };
    table.row(vec![
        "RUN".into(),
        short(run.state().as_str_name(), "RUN_STATE_"),
        String::new(),
        time(run.create_time.as_ref()),
        time(run.finish_time.as_ref()),
        step_error(run.error.as_ref()),
    ]);
    for step in &run.steps {
        table.row(vec![
            short(step.kind().as_str_name(), "STEP_KIND_"),
            short(step.state().as_str_name(), "STEP_STATE_"),
            step.attempts.to_string(),
            time(step.start_time.as_ref()),
            time(step.finish_time.as_ref()),
            step_error(step.last_error.as_ref()),
        ]);
    }
    table
}

/// Runs a provisioning command.
pub async fn run(
    command: Provisioning,
    connection: &Connection,
    printer: &Printer,
) -> Result<(), Failure> {
    let mut client = ProvisioningServiceClient::new(connection.channel());
    match command {
        Provisioning::Get {
            tenant_id,
            watch: true,
        }
        | Provisioning::Watch { tenant_id } => {
            let request = Connection::stream_request(WatchProvisioningRequest { tenant_id });
            let stream = client.watch_provisioning(request).await?.into_inner();
            printer
                .follow(stream, |u| run_table(u.run.as_ref()))
                .await?;
        }
        Provisioning::Get {
            tenant_id,
            watch: false,
        } => {
            let got = client
                .get_provisioning(connection.request(GetProvisioningRequest { tenant_id }))
                .await?;
            printer.print(got.get_ref(), |r| run_table(r.run.as_ref()))?;
        }
        Provisioning::Cancel { tenant_id, reason } => {
            let request = CancelProvisioningRequest { tenant_id, reason };
            let cancelled = client
                .cancel_provisioning(connection.request(request))
                .await?;
            printer.print(cancelled.get_ref(), |r| run_table(r.run.as_ref()))?;
        }
        Provisioning::Retry { tenant_id } => {
            let request = RetryProvisioningRequest { tenant_id };
            let retried = client
                .retry_provisioning(connection.request(request))
                .await?;
            printer.print(retried.get_ref(), |r| run_table(r.run.as_ref()))?;
        }
    }
    Ok(())
}

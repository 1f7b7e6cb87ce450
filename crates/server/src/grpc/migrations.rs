//! `tenant.v1.MigrationService`: tenant-schema rollouts (start, read, watch, steer) and the
//! tenant schemas' versions, with the conversions of their messages. Admin only.

use std::pin::Pin;

use futures::{Stream, StreamExt as _};
use tenantd_application::{MigrationService, Operation, RolloutView, StartRollout};
use tenantd_domain::tenant_schema::{
    Canary, ErrorBudget, Rollout, RolloutCommand, RolloutTenant, StateCounts, TenantRolloutState,
    TenantSchema, Wave,
};
use tenantd_domain::{Error, TenantId};
use tonic::{Request, Response, Status};

use super::convert::{count, placement, rollout_state, step_error, timestamp, wide};
use super::status::to_status;
use crate::identity::Caller;
use crate::proto::{self, migration_service_server};

/// The MigrationService handlers.
#[derive(Debug, Clone)]
pub struct MigrationApi {
    service: MigrationService,
}

impl MigrationApi {
    /// Handlers over `service`.
    pub fn new(service: MigrationService) -> Self {
        Self { service }
    }

    /// Authorizes and returns who the caller is (for the rollout's record and the log).
    fn caller<T>(request: &Request<T>, operation: Operation) -> Result<String, Status> {
        super::allow(request, operation, None)?;
        Ok(request
            .extensions()
            .get::<Caller>()
            .and_then(|c| c.principal.as_ref())
            .map(ToString::to_string)
            .unwrap_or_default())
    }

    async fn command(
        &self,
        rollout_id: &str,
        command: RolloutCommand,
        by: &str,
    ) -> Result<Option<proto::Rollout>, Status> {
        let view = self
            .service
            .command(rollout_id, command, by)
            .await
            .map_err(to_status)?;
        Ok(Some(rollout_view(&view)))
    }
}

fn non_negative(value: i32, field: &str) -> Result<u32, Error> {
    u32::try_from(value).map_err(|_| Error::invalid(field, "is not negative"))
}

fn millis(value: Option<i64>, field: &str) -> Result<Option<u64>, Error> {
    value
        .map(|ms| u64::try_from(ms).map_err(|_| Error::invalid(field, "is not negative")))
        .transpose()
}

/// The use case's input of a StartRollout request.
fn start_input(request: &proto::StartRolloutRequest) -> Result<StartRollout, Error> {
    use proto::canary_selector::Selector;
    let canary = match request.canary.as_ref().and_then(|c| c.selector.as_ref()) {
        None => Canary::None,
        Some(Selector::TenantIds(ids)) => Canary::Tenants(
            ids.ids
                .iter()
                .map(|id| TenantId::parse_field(id, "canary.tenant_ids"))
                .collect::<Result<_, _>>()?,
        ),
        Some(Selector::Labels(labels)) => Canary::Labels(labels.match_labels.clone()),
        Some(Selector::First(n)) => Canary::First(non_negative(*n, "canary.first")?),
    };
    let error_budget = request
        .error_budget
        .as_ref()
        .map(|b| {
            Ok::<_, Error>(ErrorBudget {
                count: non_negative(b.count, "error_budget.count")?,
                ratio: b.ratio,
            })
        })
        .transpose()?;
    Ok(StartRollout {
        target_version: non_negative(request.target_version, "target_version")?,
        canary,
        max_parallel: non_negative(request.max_parallel, "max_parallel")?,
        max_parallel_per_replica: non_negative(
            request.max_parallel_per_replica,
            "max_parallel_per_replica",
        )?,
        error_budget,
        lock_timeout_ms: millis(request.lock_timeout_ms, "lock_timeout_ms")?,
        statement_timeout_ms: millis(request.statement_timeout_ms, "statement_timeout_ms")?,
    })
}

fn counts(counts: &StateCounts) -> proto::RolloutCounts {
    proto::RolloutCounts {
        pending: wide(counts.pending),
        running: wide(counts.running),
        succeeded: wide(counts.succeeded),
        skipped: wide(counts.skipped),
        failed: wide(counts.failed),
        cancelled: wide(counts.cancelled),
        total: wide(counts.total()),
    }
}

fn tenant_state(state: TenantRolloutState) -> proto::RolloutTenantState {
    match state {
        TenantRolloutState::Pending => proto::RolloutTenantState::Pending,
        TenantRolloutState::Running => proto::RolloutTenantState::Running,
        TenantRolloutState::Succeeded => proto::RolloutTenantState::Succeeded,
        TenantRolloutState::Skipped => proto::RolloutTenantState::Skipped,
        TenantRolloutState::Failed => proto::RolloutTenantState::Failed,
        TenantRolloutState::Cancelled => proto::RolloutTenantState::Cancelled,
    }
}

fn rollout_tenant(tenant: &RolloutTenant) -> proto::RolloutTenant {
    proto::RolloutTenant {
        tenant_id: tenant.tenant_id.to_string(),
        wave: match tenant.wave {
            Wave::Canary => proto::Wave::Canary,
            Wave::Rest => proto::Wave::Rest,
        }
        .into(),
        state: tenant_state(tenant.state).into(),
        attempts: count(tenant.attempts),
        from_version: tenant.from_version.map_or(0, count),
        to_version: tenant.to_version.map_or(0, count),
        error: tenant.error.as_ref().map(step_error),
        permanent: tenant.error.as_ref().is_some_and(|e| e.permanent),
        start_time: tenant.started_at.map(timestamp),
        finish_time: tenant.finished_at.map(timestamp),
    }
}

fn rollout(rollout: &Rollout, failures: &[RolloutTenant]) -> proto::Rollout {
    use proto::canary_selector::Selector;
    let spec = &rollout.spec;
    let canary = match &spec.canary {
        Canary::None => None,
        Canary::Tenants(ids) => Some(Selector::TenantIds(proto::TenantIds {
            ids: ids.iter().map(ToString::to_string).collect(),
        })),
        Canary::Labels(labels) => Some(Selector::Labels(proto::LabelSelector {
            match_labels: labels.clone(),
        })),
        Canary::First(n) => Some(Selector::First(count(*n))),
    };
    proto::Rollout {
        rollout_id: rollout.id.to_string(),
        spec: Some(proto::RolloutSpec {
            target_version: count(spec.target_version),
            canary: canary.map(|selector| proto::CanarySelector {
                selector: Some(selector),
            }),
            max_parallel: count(spec.max_parallel),
            max_parallel_per_replica: count(spec.max_parallel_per_replica),
            error_budget: Some(proto::ErrorBudget {
                count: count(spec.error_budget.count),
                ratio: spec.error_budget.ratio,
            }),
            lock_timeout_ms: wide(spec.limits.lock_timeout_ms),
            statement_timeout_ms: wide(spec.limits.statement_timeout_ms),
        }),
        state: rollout_state(rollout.state).into(),
        reason: rollout.reason.as_ref().map(step_error),
        tenants: Some(counts(&rollout.counts.all())),
        canary: Some(counts(&rollout.counts.canary)),
        failures: failures.iter().map(rollout_tenant).collect(),
        created_by: rollout.created_by.clone(),
        create_time: Some(timestamp(rollout.created_at)),
        update_time: Some(timestamp(rollout.updated_at)),
        finish_time: rollout.finished_at.map(timestamp),
    }
}

fn rollout_view(view: &RolloutView) -> proto::Rollout {
    rollout(&view.rollout, &view.failures)
}

fn tenant_schema(schema: &TenantSchema) -> proto::TenantSchema {
    proto::TenantSchema {
        tenant_id: schema.tenant_id.to_string(),
        placement: schema.placement.as_ref().map(placement),
        version: count(schema.version),
        migrate_time: schema.migrated_at.map(timestamp),
        last_error: schema.last_error.as_ref().map(step_error),
    }
}

#[tonic::async_trait]
impl migration_service_server::MigrationService for MigrationApi {
    type WatchRolloutStream =
        Pin<Box<dyn Stream<Item = Result<proto::WatchRolloutResponse, Status>> + Send>>;

    async fn start_rollout(
        &self,
        request: Request<proto::StartRolloutRequest>,
    ) -> Result<Response<proto::StartRolloutResponse>, Status> {
        let by = Self::caller(&request, Operation::StartRollout)?;
        let input = start_input(request.get_ref()).map_err(to_status)?;
        let started = self.service.start(&by, input).await.map_err(to_status)?;
        Ok(Response::new(proto::StartRolloutResponse {
            rollout: Some(rollout(&started, &[])),
        }))
    }

    async fn get_rollout(
        &self,
        request: Request<proto::GetRolloutRequest>,
    ) -> Result<Response<proto::GetRolloutResponse>, Status> {
        Self::caller(&request, Operation::GetRollout)?;
        let view = self
            .service
            .get(&request.get_ref().rollout_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::GetRolloutResponse {
            rollout: Some(rollout_view(&view)),
        }))
    }

    async fn list_rollouts(
        &self,
        request: Request<proto::ListRolloutsRequest>,
    ) -> Result<Response<proto::ListRolloutsResponse>, Status> {
        Self::caller(&request, Operation::ListRollouts)?;
        let r = request.get_ref();
        let page = self
            .service
            .list(r.page_size, &r.page_token)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::ListRolloutsResponse {
            rollouts: page.items.iter().map(|r| rollout(r, &[])).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn watch_rollout(
        &self,
        request: Request<proto::WatchRolloutRequest>,
    ) -> Result<Response<Self::WatchRolloutStream>, Status> {
        Self::caller(&request, Operation::WatchRollout)?;
        let watch = self
            .service
            .watch(&request.get_ref().rollout_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(Box::pin(watch.map(|item| {
            item.map(|view| proto::WatchRolloutResponse {
                rollout: Some(rollout_view(&view)),
            })
            .map_err(to_status)
        }))))
    }

    async fn pause_rollout(
        &self,
        request: Request<proto::PauseRolloutRequest>,
    ) -> Result<Response<proto::PauseRolloutResponse>, Status> {
        let by = Self::caller(&request, Operation::PauseRollout)?;
        let rollout = self
            .command(&request.get_ref().rollout_id, RolloutCommand::Pause, &by)
            .await?;
        Ok(Response::new(proto::PauseRolloutResponse { rollout }))
    }

    async fn resume_rollout(
        &self,
        request: Request<proto::ResumeRolloutRequest>,
    ) -> Result<Response<proto::ResumeRolloutResponse>, Status> {
        let by = Self::caller(&request, Operation::ResumeRollout)?;
        let rollout = self
            .command(&request.get_ref().rollout_id, RolloutCommand::Resume, &by)
            .await?;
        Ok(Response::new(proto::ResumeRolloutResponse { rollout }))
    }

    async fn cancel_rollout(
        &self,
        request: Request<proto::CancelRolloutRequest>,
    ) -> Result<Response<proto::CancelRolloutResponse>, Status> {
        let by = Self::caller(&request, Operation::CancelRollout)?;
        let rollout = self
            .command(&request.get_ref().rollout_id, RolloutCommand::Cancel, &by)
            .await?;
        Ok(Response::new(proto::CancelRolloutResponse { rollout }))
    }

    async fn retry_failed_tenants(
        &self,
        request: Request<proto::RetryFailedTenantsRequest>,
    ) -> Result<Response<proto::RetryFailedTenantsResponse>, Status> {
        let by = Self::caller(&request, Operation::RetryFailedTenants)?;
        let rollout = self
            .command(
                &request.get_ref().rollout_id,
                RolloutCommand::RetryFailed,
                &by,
            )
            .await?;
        Ok(Response::new(proto::RetryFailedTenantsResponse { rollout }))
    }

    async fn list_tenant_schemas(
        &self,
        request: Request<proto::ListTenantSchemasRequest>,
    ) -> Result<Response<proto::ListTenantSchemasResponse>, Status> {
        Self::caller(&request, Operation::ListTenantSchemas)?;
        let r = request.get_ref();
        let behind = match non_negative(r.behind_version, "behind_version").map_err(to_status)? {
            0 => None,
            v => Some(v),
        };
        let page = self
            .service
            .list_schemas(behind, r.page_size, &r.page_token)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::ListTenantSchemasResponse {
            schemas: page.items.iter().map(tenant_schema).collect(),
            next_page_token: page.next_page_token,
            newest_version: count(self.service.migrations().newest()),
        }))
    }
}

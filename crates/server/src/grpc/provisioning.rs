//! `tenant.v1.ProvisioningService`: the tenant's provisioning run, a live watch of it (the
//! use case's stream, mapped), and cancel / retry.

use std::pin::Pin;

use futures::{Stream, StreamExt as _};
use tenantd_application::{Operation, ProvisioningService};
use tonic::{Request, Response, Status};

use super::status::to_status;
use crate::identity::Caller;
use crate::limits::WatchLimits;
use crate::proto::{self, provisioning_service_server};

/// The ProvisioningService handlers.
#[derive(Debug, Clone)]
pub struct ProvisioningApi {
    service: ProvisioningService,
    watches: WatchLimits,
}

impl ProvisioningApi {
    /// Handlers over `service`; each principal's open watches are bounded by `watches`.
    pub fn new(service: ProvisioningService, watches: WatchLimits) -> Self {
        Self { service, watches }
    }
}

#[tonic::async_trait]
impl provisioning_service_server::ProvisioningService for ProvisioningApi {
    type WatchProvisioningStream =
        Pin<Box<dyn Stream<Item = Result<proto::WatchProvisioningResponse, Status>> + Send>>;

    async fn get_provisioning(
        &self,
        request: Request<proto::GetProvisioningRequest>,
    ) -> Result<Response<proto::GetProvisioningResponse>, Status> {
        super::allow(
            &request,
            Operation::GetProvisioning,
            Some(&request.get_ref().tenant_id),
        )?;
        let run = self
            .service
            .get(&request.get_ref().tenant_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::GetProvisioningResponse {
            run: Some(proto::ProvisioningRun::from(&run)),
        }))
    }

    async fn watch_provisioning(
        &self,
        request: Request<proto::WatchProvisioningRequest>,
    ) -> Result<Response<Self::WatchProvisioningStream>, Status> {
        super::allow(
            &request,
            Operation::WatchProvisioning,
            Some(&request.get_ref().tenant_id),
        )?;
        // Held by the stream: the principal's slot is freed when the watch ends. (`allow`
        // refused callers without a principal.)
        let slot = request
            .extensions()
            .get::<Caller>()
            .and_then(|caller| caller.principal.as_ref())
            .map(|principal| self.watches.admit(principal))
            .transpose()
            .map_err(to_status)?;
        let watch = self
            .service
            .watch(&request.get_ref().tenant_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(Box::pin(watch.map(move |item| {
            let _open = &slot;
            item.map(|run| proto::WatchProvisioningResponse {
                run: Some(proto::ProvisioningRun::from(&run)),
            })
            .map_err(to_status)
        }))))
    }

    async fn cancel_provisioning(
        &self,
        request: Request<proto::CancelProvisioningRequest>,
    ) -> Result<Response<proto::CancelProvisioningResponse>, Status> {
        super::allow(
            &request,
            Operation::CancelProvisioning,
            Some(&request.get_ref().tenant_id),
        )?;
        let request = request.into_inner();
        let run = self
            .service
            .cancel(&request.tenant_id, &request.reason)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::CancelProvisioningResponse {
            run: Some(proto::ProvisioningRun::from(&run)),
        }))
    }

    async fn retry_provisioning(
        &self,
        request: Request<proto::RetryProvisioningRequest>,
    ) -> Result<Response<proto::RetryProvisioningResponse>, Status> {
        super::allow(
            &request,
            Operation::RetryProvisioning,
            Some(&request.get_ref().tenant_id),
        )?;
        let run = self
            .service
            .retry(&request.get_ref().tenant_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::RetryProvisioningResponse {
            run: Some(proto::ProvisioningRun::from(&run)),
        }))
    }
}

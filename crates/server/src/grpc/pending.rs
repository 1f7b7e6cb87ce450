//! Services whose capability is not built yet. Every method answers UNIMPLEMENTED naming
//! what is missing, so clients generated from the full contract get a clear answer.

use std::pin::Pin;

use futures::Stream;
use tenantd_application::Operation;
use tonic::{Request, Response, Status};

use super::status::not_yet;
use crate::proto::{self, provisioning_service_server};

const PIPELINE: &str = "the durable provisioning pipeline";

/// ProvisioningService until the provisioning pipeline lands.
#[derive(Debug, Clone, Copy, Default)]
pub struct PendingProvisioningApi;

#[tonic::async_trait]
impl provisioning_service_server::ProvisioningService for PendingProvisioningApi {
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
        Err(not_yet("GetProvisioning", PIPELINE))
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
        Err(not_yet("WatchProvisioning", PIPELINE))
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
        Err(not_yet("CancelProvisioning", PIPELINE))
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
        Err(not_yet("RetryProvisioning", PIPELINE))
    }
}

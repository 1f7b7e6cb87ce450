//! Services whose capability is not built yet. Every method answers UNIMPLEMENTED naming
//! what is missing, so clients generated from the full contract get a clear answer.

use std::pin::Pin;

use futures::Stream;
use tenantd_application::Operation;
use tonic::{Request, Response, Status};

use super::status::not_yet;
use crate::proto::{self, api_key_service_server, provisioning_service_server};

const PIPELINE: &str = "the durable provisioning pipeline";
const API_KEYS: &str = "tenant API keys";

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

/// ApiKeyService until tenant API keys land.
#[derive(Debug, Clone, Copy, Default)]
pub struct PendingApiKeyApi;

#[tonic::async_trait]
impl api_key_service_server::ApiKeyService for PendingApiKeyApi {
    async fn create_api_key(
        &self,
        request: Request<proto::CreateApiKeyRequest>,
    ) -> Result<Response<proto::CreateApiKeyResponse>, Status> {
        super::allow(
            &request,
            Operation::CreateApiKey,
            Some(&request.get_ref().tenant_id),
        )?;
        Err(not_yet("CreateApiKey", API_KEYS))
    }

    async fn list_api_keys(
        &self,
        request: Request<proto::ListApiKeysRequest>,
    ) -> Result<Response<proto::ListApiKeysResponse>, Status> {
        super::allow(
            &request,
            Operation::ListApiKeys,
            Some(&request.get_ref().tenant_id),
        )?;
        Err(not_yet("ListApiKeys", API_KEYS))
    }

    async fn revoke_api_key(
        &self,
        request: Request<proto::RevokeApiKeyRequest>,
    ) -> Result<Response<proto::RevokeApiKeyResponse>, Status> {
        super::allow(
            &request,
            Operation::RevokeApiKey,
            Some(&request.get_ref().tenant_id),
        )?;
        Err(not_yet("RevokeApiKey", API_KEYS))
    }

    async fn verify_api_key(
        &self,
        request: Request<proto::VerifyApiKeyRequest>,
    ) -> Result<Response<proto::VerifyApiKeyResponse>, Status> {
        super::allow(&request, Operation::VerifyApiKey, None)?;
        Err(not_yet("VerifyApiKey", API_KEYS))
    }

    async fn claim_initial_api_key(
        &self,
        request: Request<proto::ClaimInitialApiKeyRequest>,
    ) -> Result<Response<proto::ClaimInitialApiKeyResponse>, Status> {
        super::allow(
            &request,
            Operation::ClaimInitialApiKey,
            Some(&request.get_ref().tenant_id),
        )?;
        Err(not_yet("ClaimInitialApiKey", API_KEYS))
    }
}

//! `tenant.v1.ApiKeyService`.

use tenantd_application::{ApiKeyService, CreateApiKey, Operation};
use tonic::{Request, Response, Status};

use super::convert::time;
use super::status::to_status;
use crate::proto::{self, api_key_service_server};

/// The ApiKeyService handlers.
#[derive(Debug, Clone)]
pub struct ApiKeyApi {
    service: std::sync::Arc<ApiKeyService>,
}

impl ApiKeyApi {
    /// Handlers over `service`.
    pub fn new(service: std::sync::Arc<ApiKeyService>) -> Self {
        Self { service }
    }
}

#[tonic::async_trait]
impl api_key_service_server::ApiKeyService for ApiKeyApi {
    async fn create_api_key(
        &self,
        request: Request<proto::CreateApiKeyRequest>,
    ) -> Result<Response<proto::CreateApiKeyResponse>, Status> {
        super::allow(
            &request,
            Operation::CreateApiKey,
            Some(&request.get_ref().tenant_id),
        )?;
        let request = request.into_inner();
        let expires_at = request
            .expire_time
            .as_ref()
            .map(|t| time(t, "expire_time"))
            .transpose()
            .map_err(to_status)?;
        let (key, secret) = self
            .service
            .create(CreateApiKey {
                tenant_id: request.tenant_id,
                display_name: request.display_name,
                scopes: request.scopes,
                expires_at,
            })
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::CreateApiKeyResponse {
            api_key: Some((&key).into()),
            secret: secret.expose(),
        }))
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
        let request = request.into_inner();
        let page = self
            .service
            .list(
                &request.tenant_id,
                request.page_size,
                &request.page_token,
                request.show_inactive,
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::ListApiKeysResponse {
            api_keys: page.items.iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
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
        let request = request.into_inner();
        let key = self
            .service
            .revoke(&request.tenant_id, &request.key_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::RevokeApiKeyResponse {
            api_key: Some((&key).into()),
        }))
    }

    async fn verify_api_key(
        &self,
        request: Request<proto::VerifyApiKeyRequest>,
    ) -> Result<Response<proto::VerifyApiKeyResponse>, Status> {
        super::allow(&request, Operation::VerifyApiKey, None)?;
        let verified = self
            .service
            .verify(&request.into_inner().api_key)
            .await
            .map_err(to_status)?;
        Ok(Response::new(match verified {
            None => proto::VerifyApiKeyResponse::default(),
            Some(v) => proto::VerifyApiKeyResponse {
                valid: true,
                tenant_id: v.key.tenant_id.to_string(),
                key_id: v.key.id.to_string(),
                scopes: v.key.scopes,
                tenant_active: v.tenant_active,
            },
        }))
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
        let (key, secret) = self
            .service
            .claim_initial(&request.get_ref().tenant_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::ClaimInitialApiKeyResponse {
            api_key: Some(proto::ApiKey::from(&key)),
            secret: secret.expose(),
        }))
    }
}

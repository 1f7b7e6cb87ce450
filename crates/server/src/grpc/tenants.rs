//! `tenant.v1.TenantService`: request -> use-case input, call, result -> response.

use std::pin::Pin;
use tenantd_application::Operation;

use futures::Stream;
use tenantd_application::exports::ExportService;
use tenantd_application::{
    CreateTenant, ListTenants, PurgeService, TenantFields, TenantService, UpdateTenant,
};
use tenantd_domain::Error;
use tonic::{Request, Response, Status};

use super::convert::{status_filter, struct_to_json};
use super::status::to_status;
use crate::proto::{self, tenant_service_server};

/// The TenantService handlers.
#[derive(Debug, Clone)]
pub struct TenantApi {
    service: TenantService,
    purges: PurgeService,
    exports: ExportService,
}

impl TenantApi {
    /// Handlers over `service`, purging with `purges` and exporting with `exports`.
    pub fn new(service: TenantService, purges: PurgeService, exports: ExportService) -> Self {
        Self {
            service,
            purges,
            exports,
        }
    }
}

fn fields(tenant: proto::Tenant) -> Result<TenantFields, Error> {
    Ok(TenantFields {
        slug: tenant.slug,
        display_name: tenant.display_name,
        plan_id: tenant.plan_id,
        contact_email: tenant.contact_email,
        labels: tenant.labels,
        config: tenant
            .config
            .map(|c| struct_to_json(c, "tenant.config"))
            .transpose()?
            .unwrap_or_default(),
    })
}

fn required(tenant: Option<proto::Tenant>) -> Result<proto::Tenant, Status> {
    tenant.ok_or_else(|| to_status(Error::invalid("tenant", "is required")))
}

#[tonic::async_trait]
impl tenant_service_server::TenantService for TenantApi {
    type DownloadExportStream =
        Pin<Box<dyn Stream<Item = Result<proto::DownloadExportResponse, Status>> + Send>>;

    async fn create_tenant(
        &self,
        request: Request<proto::CreateTenantRequest>,
    ) -> Result<Response<proto::CreateTenantResponse>, Status> {
        super::allow(&request, Operation::CreateTenant, None)?;
        let request = request.into_inner();
        let tenant = fields(required(request.tenant)?).map_err(to_status)?;
        let created = self
            .service
            .create(CreateTenant {
                tenant,
                request_id: request.request_id,
            })
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::CreateTenantResponse {
            tenant: Some(proto::Tenant::from(&created)),
        }))
    }

    async fn get_tenant(
        &self,
        request: Request<proto::GetTenantRequest>,
    ) -> Result<Response<proto::GetTenantResponse>, Status> {
        super::allow(
            &request,
            Operation::GetTenant,
            Some(&request.get_ref().tenant_id),
        )?;
        let tenant = self
            .service
            .get(&request.into_inner().tenant_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::GetTenantResponse {
            tenant: Some(proto::Tenant::from(&tenant)),
        }))
    }

    async fn list_tenants(
        &self,
        request: Request<proto::ListTenantsRequest>,
    ) -> Result<Response<proto::ListTenantsResponse>, Status> {
        super::allow(&request, Operation::ListTenants, None)?;
        let request = request.into_inner();
        let page = self
            .service
            .list(ListTenants {
                page_size: request.page_size,
                page_token: request.page_token,
                status: status_filter(request.status, "status").map_err(to_status)?,
                plan_id: request.plan_id,
                labels: request.labels,
                slug_prefix: request.slug_prefix,
                contact_email: request.contact_email,
                show_deleted: request.show_deleted,
            })
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::ListTenantsResponse {
            tenants: page.items.iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_tenant(
        &self,
        request: Request<proto::UpdateTenantRequest>,
    ) -> Result<Response<proto::UpdateTenantResponse>, Status> {
        super::allow(
            &request,
            Operation::UpdateTenant,
            request
                .get_ref()
                .tenant
                .as_ref()
                .map(|t| t.tenant_id.as_str()),
        )?;
        let request = request.into_inner();
        let tenant = required(request.tenant)?;
        let tenant_id = tenant.tenant_id.clone();
        let etag = tenant.etag.clone();
        let updated = self
            .service
            .update(UpdateTenant {
                tenant_id,
                etag,
                tenant: fields(tenant).map_err(to_status)?,
                update_mask: request.update_mask.map(|m| m.paths).unwrap_or_default(),
            })
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::UpdateTenantResponse {
            tenant: Some(proto::Tenant::from(&updated)),
        }))
    }

    async fn delete_tenant(
        &self,
        request: Request<proto::DeleteTenantRequest>,
    ) -> Result<Response<proto::DeleteTenantResponse>, Status> {
        super::allow(
            &request,
            Operation::DeleteTenant,
            Some(&request.get_ref().tenant_id),
        )?;
        let request = request.into_inner();
        let tenant = self
            .service
            .delete(&request.tenant_id, &request.etag)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::DeleteTenantResponse {
            tenant: Some(proto::Tenant::from(&tenant)),
        }))
    }

    async fn undelete_tenant(
        &self,
        request: Request<proto::UndeleteTenantRequest>,
    ) -> Result<Response<proto::UndeleteTenantResponse>, Status> {
        super::allow(
            &request,
            Operation::UndeleteTenant,
            Some(&request.get_ref().tenant_id),
        )?;
        let request = request.into_inner();
        let tenant = self
            .service
            .undelete(&request.tenant_id, &request.etag)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::UndeleteTenantResponse {
            tenant: Some(proto::Tenant::from(&tenant)),
        }))
    }

    async fn suspend_tenant(
        &self,
        request: Request<proto::SuspendTenantRequest>,
    ) -> Result<Response<proto::SuspendTenantResponse>, Status> {
        super::allow(
            &request,
            Operation::SuspendTenant,
            Some(&request.get_ref().tenant_id),
        )?;
        let request = request.into_inner();
        let tenant = self
            .service
            .suspend(&request.tenant_id, &request.reason, &request.etag)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::SuspendTenantResponse {
            tenant: Some(proto::Tenant::from(&tenant)),
        }))
    }

    async fn set_legal_hold(
        &self,
        request: Request<proto::SetLegalHoldRequest>,
    ) -> Result<Response<proto::SetLegalHoldResponse>, Status> {
        super::allow(
            &request,
            Operation::SetLegalHold,
            Some(&request.get_ref().tenant_id),
        )?;
        let request = request.into_inner();
        let tenant = self
            .service
            .set_legal_hold(&request.tenant_id, &request.reason, &request.etag)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::SetLegalHoldResponse {
            tenant: Some(proto::Tenant::from(&tenant)),
        }))
    }

    async fn release_legal_hold(
        &self,
        request: Request<proto::ReleaseLegalHoldRequest>,
    ) -> Result<Response<proto::ReleaseLegalHoldResponse>, Status> {
        super::allow(
            &request,
            Operation::ReleaseLegalHold,
            Some(&request.get_ref().tenant_id),
        )?;
        let request = request.into_inner();
        let tenant = self
            .service
            .release_legal_hold(&request.tenant_id, &request.reason, &request.etag)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::ReleaseLegalHoldResponse {
            tenant: Some(proto::Tenant::from(&tenant)),
        }))
    }

    async fn resume_tenant(
        &self,
        request: Request<proto::ResumeTenantRequest>,
    ) -> Result<Response<proto::ResumeTenantResponse>, Status> {
        super::allow(
            &request,
            Operation::ResumeTenant,
            Some(&request.get_ref().tenant_id),
        )?;
        let request = request.into_inner();
        let tenant = self
            .service
            .resume(&request.tenant_id, &request.etag)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::ResumeTenantResponse {
            tenant: Some(proto::Tenant::from(&tenant)),
        }))
    }

    async fn purge_tenant(
        &self,
        request: Request<proto::PurgeTenantRequest>,
    ) -> Result<Response<proto::PurgeTenantResponse>, Status> {
        super::allow(
            &request,
            Operation::PurgeTenant,
            Some(&request.get_ref().tenant_id),
        )?;
        let requested_by = super::principal_path(&request);
        let request = request.into_inner();
        let (tenant, purge) = self
            .purges
            .purge(
                &requested_by,
                &request.tenant_id,
                &request.etag,
                request.force,
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::PurgeTenantResponse {
            tenant: Some(proto::Tenant::from(&tenant)),
            purge: Some(proto::Purge::from(&purge)),
        }))
    }

    async fn get_purge(
        &self,
        request: Request<proto::GetPurgeRequest>,
    ) -> Result<Response<proto::GetPurgeResponse>, Status> {
        super::allow(
            &request,
            Operation::GetPurge,
            Some(&request.get_ref().tenant_id),
        )?;
        let purge = self
            .purges
            .get(&request.get_ref().tenant_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::GetPurgeResponse {
            purge: Some(proto::Purge::from(&purge)),
        }))
    }

    async fn export_tenant(
        &self,
        request: Request<proto::ExportTenantRequest>,
    ) -> Result<Response<proto::ExportTenantResponse>, Status> {
        super::allow(
            &request,
            Operation::ExportTenant,
            Some(&request.get_ref().tenant_id),
        )?;
        let requested_by = super::principal_path(&request);
        let export = self
            .exports
            .export(&requested_by, &request.get_ref().tenant_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::ExportTenantResponse {
            export: Some(proto::Export::from(&export)),
        }))
    }

    async fn get_export(
        &self,
        request: Request<proto::GetExportRequest>,
    ) -> Result<Response<proto::GetExportResponse>, Status> {
        super::allow(
            &request,
            Operation::GetExport,
            Some(&request.get_ref().tenant_id),
        )?;
        let request = request.into_inner();
        let export = self
            .exports
            .get(&request.tenant_id, &request.export_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::GetExportResponse {
            export: Some(proto::Export::from(&export)),
        }))
    }

    async fn download_export(
        &self,
        request: Request<proto::DownloadExportRequest>,
    ) -> Result<Response<Self::DownloadExportStream>, Status> {
        super::allow(
            &request,
            Operation::DownloadExport,
            Some(&request.get_ref().tenant_id),
        )?;
        let request = request.into_inner();
        let download = self
            .exports
            .download(&request.tenant_id, &request.export_id)
            .await
            .map_err(to_status)?;
        let chunks = futures::stream::try_unfold(
            (download, 0_u64),
            |(download, offset)| async move {
                if offset >= download.size {
                    return Ok(None);
                }
                let data = download.chunk(offset).await.map_err(to_status)?;
                if data.is_empty() {
                    tracing::error!(archive = %download.name, offset, size = download.size, "an export archive is shorter than recorded");
                    return Err(Status::data_loss(
                        "the export archive is shorter than recorded",
                    ));
                }
                let next = offset + data.len() as u64;
                let chunk = proto::DownloadExportResponse {
                    data,
                    offset: i64::try_from(offset).unwrap_or(i64::MAX),
                    total_size: i64::try_from(download.size).unwrap_or(i64::MAX),
                    sha256: download.sha256.clone(),
                };
                Ok(Some((chunk, (download, next))))
            },
        );
        Ok(Response::new(Box::pin(chunks)))
    }
}

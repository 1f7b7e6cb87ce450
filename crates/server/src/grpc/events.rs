//! `tenant.v1.EventService`.

use tenantd_application::EventService;
use tenantd_application::Operation;
use tonic::{Request, Response, Status};

use super::status::{not_yet, to_status};
use crate::proto::{self, event_service_server};

/// The EventService handlers.
#[derive(Debug, Clone)]
pub struct EventApi {
    service: EventService,
}

impl EventApi {
    /// Handlers over `service`.
    pub fn new(service: EventService) -> Self {
        Self { service }
    }
}

#[tonic::async_trait]
impl event_service_server::EventService for EventApi {
    async fn list_tenant_events(
        &self,
        request: Request<proto::ListTenantEventsRequest>,
    ) -> Result<Response<proto::ListTenantEventsResponse>, Status> {
        super::allow(
            &request,
            Operation::ListTenantEvents,
            Some(request.get_ref().tenant_id.as_str()).filter(|t| !t.is_empty()),
        )?;
        let request = request.into_inner();
        let page = self
            .service
            .list_tenant_events(&request.tenant_id, request.page_size, &request.page_token)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::ListTenantEventsResponse {
            events: page.items.iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn list_audit_records(
        &self,
        request: Request<proto::ListAuditRecordsRequest>,
    ) -> Result<Response<proto::ListAuditRecordsResponse>, Status> {
        super::allow(&request, Operation::ListAuditRecords, None)?;
        Err(not_yet("ListAuditRecords", "the audit log"))
    }
}

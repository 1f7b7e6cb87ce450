//! `tenant.v1.EventService`.

use tenantd_application::Operation;
use tenantd_application::{AuditService, EventService, ListAuditRecords};
use tonic::{Request, Response, Status};

use super::convert::time;
use super::status::to_status;
use crate::proto::{self, event_service_server};

/// The EventService handlers.
#[derive(Debug, Clone)]
pub struct EventApi {
    service: EventService,
    audit: AuditService,
}

impl EventApi {
    /// Handlers over the event log and the audit log.
    pub fn new(service: EventService, audit: AuditService) -> Self {
        Self { service, audit }
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
        let request = request.into_inner();
        let start = request
            .start_time
            .as_ref()
            .map(|t| time(t, "start_time"))
            .transpose();
        let end = request
            .end_time
            .as_ref()
            .map(|t| time(t, "end_time"))
            .transpose();
        let page = self
            .audit
            .list(ListAuditRecords {
                tenant_id: request.tenant_id,
                principal: request.principal,
                method: request.method,
                start: start.map_err(to_status)?,
                end: end.map_err(to_status)?,
                page_size: request.page_size,
                page_token: request.page_token,
            })
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::ListAuditRecordsResponse {
            records: page.items.iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<proto::ListDeadLettersRequest>,
    ) -> Result<Response<proto::ListDeadLettersResponse>, Status> {
        super::allow(
            &request,
            Operation::ListDeadLetters,
            Some(request.get_ref().tenant_id.as_str()).filter(|t| !t.is_empty()),
        )?;
        let request = request.into_inner();
        let page = self
            .service
            .list_dead_letters(&request.tenant_id, request.page_size, &request.page_token)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::ListDeadLettersResponse {
            dead_letters: page.items.iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn retry_dead_letters(
        &self,
        request: Request<proto::RetryDeadLettersRequest>,
    ) -> Result<Response<proto::RetryDeadLettersResponse>, Status> {
        super::allow(
            &request,
            Operation::RetryDeadLetters,
            Some(request.get_ref().tenant_id.as_str()).filter(|t| !t.is_empty()),
        )?;
        let request = request.into_inner();
        let retried = self
            .service
            .retry_dead_letters(&request.event_ids, &request.tenant_id)
            .await
            .map_err(to_status)?;
        if !retried.is_empty() {
            tracing::info!(
                events = retried.len(),
                "dead letters put back in the outbox"
            );
        }
        Ok(Response::new(proto::RetryDeadLettersResponse {
            event_ids: retried.iter().map(|id| id.0.to_string()).collect(),
        }))
    }
}

//! `tenant.v1.PlanService`.

use tenantd_application::Operation;
use tenantd_application::PlanService;
use tonic::{Request, Response, Status};

use super::status::to_status;
use crate::proto::{self, plan_service_server};

/// The PlanService handlers.
#[derive(Debug, Clone)]
pub struct PlanApi {
    service: PlanService,
}

impl PlanApi {
    /// Handlers over `service`.
    pub fn new(service: PlanService) -> Self {
        Self { service }
    }
}

#[tonic::async_trait]
impl plan_service_server::PlanService for PlanApi {
    async fn list_plans(
        &self,
        request: Request<proto::ListPlansRequest>,
    ) -> Result<Response<proto::ListPlansResponse>, Status> {
        super::allow(&request, Operation::ListPlans, None)?;
        let request = request.into_inner();
        let page = self
            .service
            .list(request.page_size, &request.page_token)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::ListPlansResponse {
            plans: page.items.iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn get_plan(
        &self,
        request: Request<proto::GetPlanRequest>,
    ) -> Result<Response<proto::GetPlanResponse>, Status> {
        super::allow(&request, Operation::GetPlan, None)?;
        let plan = self
            .service
            .get(&request.into_inner().plan_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::GetPlanResponse {
            plan: Some((&plan).into()),
        }))
    }
}

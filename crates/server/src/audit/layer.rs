//! The audit layer: each call's audit record, made when the call ends (as
//! [`crate::call`] observes it) and queued without blocking the call.

use chrono::Utc;
use tenantd_domain::AuditRecord;
use tonic::Code;
use uuid::Uuid;

use super::AuditSink;
use crate::call::{CallContext, CallTenant, Finish, ObserveLayer, Observer, status_name};

/// Tower layer auditing every call of the services it wraps (inside the identity layer).
pub type AuditLayer = ObserveLayer<AuditSink>;

/// A call's audit record, waiting for its outcome.
#[derive(Debug)]
pub struct Audit {
    sink: AuditSink,
    method: String,
    principal: String,
    request_id: String,
    tenant: CallTenant,
}

impl Finish for Audit {
    fn finish(self, code: Code) {
        self.sink.record(AuditRecord {
            id: Uuid::now_v7(),
            principal: self.principal,
            method: self.method,
            tenant_id: self.tenant.get(),
            code: status_name(code).to_owned(),
            at: Utc::now(),
            request_id: self.request_id,
        });
    }
}

impl Observer for AuditSink {
    type Guard = Audit;

    fn start<B>(&self, request: &mut http::Request<B>) -> Audit {
        let context = CallContext::of(request);
        Audit {
            sink: self.clone(),
            method: request.uri().path().to_owned(),
            principal: context.principal,
            request_id: context.request_id,
            tenant: context.tenant,
        }
    }
}

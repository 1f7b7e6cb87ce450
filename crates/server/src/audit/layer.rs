//! The audit layer: each call's audit record, made when the call ends (as
//! [`crate::call`] observes it) if the [`AuditPolicy`] keeps it, and queued without
//! blocking the call.

use std::sync::Arc;

use chrono::Utc;
use tenantd_domain::AuditRecord;
use tonic::Code;
use uuid::Uuid;

use super::AuditSink;
use super::policy::{AuditPolicy, is_read};
use crate::call::{CallContext, CallTenant, Finish, ObserveLayer, Observer, status_name};

/// Tower layer auditing the calls of the services it wraps that its policy keeps (inside
/// the identity layer).
pub type AuditLayer = ObserveLayer<Auditor>;

/// What the audit layer observes calls with: the policy and the queue.
#[derive(Debug, Clone)]
pub struct Auditor {
    sink: AuditSink,
    policy: Arc<AuditPolicy>,
}

impl Auditor {
    /// Audits the calls `policy` keeps into `sink`.
    pub fn new(sink: AuditSink, policy: AuditPolicy) -> Self {
        Self {
            sink,
            policy: Arc::new(policy),
        }
    }
}

/// A call's audit record, waiting for its outcome.
#[derive(Debug)]
pub struct Audit {
    sink: AuditSink,
    policy: Arc<AuditPolicy>,
    read: bool,
    method: String,
    principal: String,
    request_id: String,
    tenant: CallTenant,
}

impl Finish for Audit {
    fn finish(self, code: Code) {
        if !self.policy.keeps(self.read, code) {
            return;
        }
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

impl Observer for Auditor {
    type Guard = Audit;

    fn start<B>(&self, request: &mut http::Request<B>) -> Audit {
        let context = CallContext::of(request);
        let method = request.uri().path();
        Audit {
            sink: self.sink.clone(),
            policy: self.policy.clone(),
            read: is_read(method),
            method: method.to_owned(),
            principal: context.principal,
            request_id: context.request_id,
            tenant: context.tenant,
        }
    }
}

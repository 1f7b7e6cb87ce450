//! The audit layer: each call's audit record, made when the call ends (as
//! [`crate::call`] observes it) if the [`AuditPolicy`] keeps it, and queued without
//! blocking the call.

use std::sync::Arc;

use chrono::Utc;
use tenantd_domain::AuditRecord;
use tonic::Code;

use super::AuditSink;
use super::policy::{AuditPolicy, is_read};
use crate::call::{CallContext, Finish, ObserveLayer, Observer, status_name};

/// Tower layer auditing the calls of the services it wraps that its policy keeps (the
/// caller comes from the connection, see `identity::Identified`).
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
    uri: http::Uri,
    context: CallContext,
}

impl Finish for Audit {
    fn finish(self, code: Code) {
        if !self.policy.keeps(self.read, code) {
            return;
        }
        self.sink.record(AuditRecord {
            id: tenantd_adapters::system::new_v7(),
            principal: self.context.principal(),
            method: self.uri.path().to_owned(),
            tenant_id: self.context.tenant(),
            code: status_name(code).to_owned(),
            at: Utc::now(),
            request_id: self.context.request_id().to_owned(),
        });
    }
}

impl Observer for Auditor {
    type Guard = Audit;

    fn start<B>(&self, request: &mut http::Request<B>) -> Audit {
        let context = CallContext::of(request);
        Audit {
            sink: self.sink.clone(),
            policy: self.policy.clone(),
            read: is_read(request.uri().path()),
            uri: request.uri().clone(),
            context,
        }
    }
}

//! Audit records of calls: a tower layer ([`AuditLayer`], `layer.rs`) records each call
//! its policy keeps (`policy.rs`: every mutation and denied call, reads as configured) —
//! principal, method, tenant, code, request id — when it ends, into a bounded in-process
//! queue that a write-behind writer appends to the audit log in batches (`queue.rs`).

mod layer;
mod policy;
mod queue;

pub use layer::{AuditLayer, Auditor};
pub use policy::{AuditPolicy, ReadAudit, is_denial, is_read, is_read_method};
pub use queue::{AuditSink, CAPACITY, queue, write_behind};

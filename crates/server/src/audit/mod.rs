//! Audit records of calls: a tower layer ([`AuditLayer`], `layer.rs`) records every call
//! (principal, method, tenant, code, request id) when it ends, into a bounded in-process
//! queue that a write-behind writer appends to the audit log in batches (`queue.rs`).

mod layer;
mod queue;

pub use layer::AuditLayer;
pub use queue::{AuditSink, CAPACITY, queue, write_behind};

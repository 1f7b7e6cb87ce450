//! The gRPC server's resource limits (`config/limits.rs` has each one's setting and
//! default): call deadlines, load shedding of calls beyond `--max-concurrent-calls`, message sizes
//! reported as RESOURCE_EXHAUSTED, connection slots and idle connections, and open watches
//! per principal. HTTP/2 settings (streams per connection, keepalive, header list size)
//! and the TLS handshake limits are applied where the server and the acceptor are built
//! (`app.rs`, `tls.rs`).

mod connections;
mod deadline;
mod messages;
mod shed;
mod watches;

pub use connections::{ActiveCalls, Activity, ConnectionGate, ConnectionSlot, IdleTimer};
pub use deadline::{DeadlineLayer, parse_grpc_timeout};
pub use messages::{LimitedBody, MessageLimitLayer, MessageLimited};
pub use shed::{LoadShedLayer, SHED_RETRY_AFTER};
pub use watches::{WatchLimits, WatchSlot};

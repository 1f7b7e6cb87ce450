//! Resource limits of the gRPC server: message sizes, calls in flight, HTTP/2 streams,
//! connections and handshakes, keepalive, idle connections, header lists and open watches.
//! Every limit has a default; what a client sees past each one is in the README's "Limits
//! and failure behaviour".

use std::time::Duration;

use clap::Args;

use super::ConfigError;

/// The server's resource limits.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// Largest request message accepted, in bytes (larger: RESOURCE_EXHAUSTED,
    /// MESSAGE_TOO_LARGE).
    #[arg(
        long,
        env = "TENANTD_MAX_REQUEST_BYTES",
        default_value_t = 4 * 1024 * 1024,
        value_parser = clap::value_parser!(u32).range(1024..)
    )]
    pub max_request_bytes: u32,
    /// Largest response message sent, in bytes (larger: RESOURCE_EXHAUSTED,
    /// MESSAGE_TOO_LARGE).
    #[arg(
        long,
        env = "TENANTD_MAX_RESPONSE_BYTES",
        default_value_t = 4 * 1024 * 1024,
        value_parser = clap::value_parser!(u32).range(1024..)
    )]
    pub max_response_bytes: u32,
    /// Calls handled at once by this replica; beyond, a call is refused at once with
    /// UNAVAILABLE (OVERLOADED, with RetryInfo) instead of queueing. Health and reflection
    /// are never refused.
    #[arg(
        long,
        env = "TENANTD_MAX_CONCURRENT_CALLS",
        default_value_t = 1024,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_concurrent_calls: u32,
    /// HTTP/2 streams (calls, watches included) open at once on one connection
    /// (SETTINGS_MAX_CONCURRENT_STREAMS; clients queue beyond it).
    #[arg(
        long,
        env = "TENANTD_MAX_STREAMS_PER_CONNECTION",
        default_value_t = 256,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_streams_per_connection: u32,
    /// Client connections open at once, handshakes included; beyond, new ones are closed
    /// as soon as they are accepted.
    #[arg(
        long,
        env = "TENANTD_MAX_CONNECTIONS",
        default_value_t = 4096,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections: u32,
    /// TLS handshakes in progress at once; beyond, accepting waits.
    #[arg(
        long,
        env = "TENANTD_MAX_HANDSHAKES",
        default_value_t = 1024,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_handshakes: u32,
    /// TLS handshakes in progress at once from one IP address; beyond, its new
    /// connections are closed at once.
    #[arg(
        long,
        env = "TENANTD_MAX_HANDSHAKES_PER_PEER",
        default_value_t = 32,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_handshakes_per_peer: u32,
    /// Longest a client may take to complete its TLS handshake, in milliseconds.
    #[arg(
        long,
        env = "TENANTD_HANDSHAKE_TIMEOUT_MS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub handshake_timeout_ms: u64,
    /// Interval of the server's HTTP/2 keepalive pings, in seconds; 0 = no pings.
    #[arg(
        long,
        env = "TENANTD_HTTP2_KEEPALIVE_INTERVAL_SECONDS",
        default_value_t = 60
    )]
    pub http2_keepalive_interval_seconds: u64,
    /// How long a keepalive ping may go unanswered before the connection is closed, in
    /// seconds.
    #[arg(
        long,
        env = "TENANTD_HTTP2_KEEPALIVE_TIMEOUT_SECONDS",
        default_value_t = 20,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub http2_keepalive_timeout_seconds: u64,
    /// A connection with no call in flight for this long is closed, in seconds; 0 = never.
    #[arg(
        long,
        env = "TENANTD_IDLE_CONNECTION_TIMEOUT_SECONDS",
        default_value_t = 300
    )]
    pub idle_connection_timeout_seconds: u64,
    /// Largest header list of a request (names, values and 32 bytes per entry), in bytes.
    #[arg(
        long,
        env = "TENANTD_MAX_HEADER_LIST_BYTES",
        default_value_t = 16 * 1024,
        value_parser = clap::value_parser!(u32).range(1024..)
    )]
    pub max_header_list_bytes: u32,
    /// WatchProvisioning streams one principal may have open at once on this replica;
    /// beyond, RESOURCE_EXHAUSTED (TOO_MANY_WATCHES).
    #[arg(
        long,
        env = "TENANTD_MAX_WATCHES_PER_PRINCIPAL",
        default_value_t = 256,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_watches_per_principal: u32,
}

/// The validated limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Largest request message, in bytes.
    pub max_request_bytes: usize,
    /// Largest response message, in bytes.
    pub max_response_bytes: usize,
    /// Calls handled at once.
    pub max_concurrent_calls: usize,
    /// HTTP/2 streams per connection.
    pub max_streams_per_connection: u32,
    /// Connections open at once.
    pub max_connections: usize,
    /// TLS handshakes in progress at once.
    pub max_handshakes: usize,
    /// TLS handshakes in progress from one address.
    pub max_handshakes_per_peer: usize,
    /// Deadline of a TLS handshake.
    pub handshake_timeout: Duration,
    /// Keepalive ping interval, when pings are on.
    pub http2_keepalive_interval: Option<Duration>,
    /// How long a keepalive ping may go unanswered.
    pub http2_keepalive_timeout: Duration,
    /// How long a connection may stay without calls, when limited.
    pub idle_connection_timeout: Option<Duration>,
    /// Largest request header list, in bytes.
    pub max_header_list_bytes: u32,
    /// Open watches per principal.
    pub max_watches_per_principal: usize,
}

impl LimitArgs {
    pub(super) fn resolve(self) -> Result<LimitsConfig, ConfigError> {
        if self.max_handshakes_per_peer > self.max_handshakes {
            return Err(ConfigError::new(
                "max-handshakes-per-peer",
                "cannot be above --max-handshakes",
            ));
        }
        if self.max_handshakes > self.max_connections {
            return Err(ConfigError::new(
                "max-handshakes",
                "cannot be above --max-connections (a handshake holds a connection)",
            ));
        }
        let seconds = |s: u64| (s > 0).then(|| Duration::from_secs(s));
        Ok(LimitsConfig {
            max_request_bytes: self.max_request_bytes as usize,
            max_response_bytes: self.max_response_bytes as usize,
            max_concurrent_calls: self.max_concurrent_calls as usize,
            max_streams_per_connection: self.max_streams_per_connection,
            max_connections: self.max_connections as usize,
            max_handshakes: self.max_handshakes as usize,
            max_handshakes_per_peer: self.max_handshakes_per_peer as usize,
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            http2_keepalive_interval: seconds(self.http2_keepalive_interval_seconds),
            http2_keepalive_timeout: Duration::from_secs(self.http2_keepalive_timeout_seconds),
            idle_connection_timeout: seconds(self.idle_connection_timeout_seconds),
            max_header_list_bytes: self.max_header_list_bytes,
            max_watches_per_principal: self.max_watches_per_principal as usize,
        })
    }
}

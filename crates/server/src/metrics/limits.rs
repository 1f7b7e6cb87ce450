//! Resource-limit metrics: `calls_in_flight`, `calls_shed_total`, `connections_open`,
//! `connections_refused_total{reason}`, `connections_closed_idle_total`,
//! `messages_too_large_total{direction}` and `watches_refused_total{role}`. Every label
//! takes a value from a fixed list.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Why a connection was closed before it could carry a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-connections` were open.
    MaxConnections,
    /// Its address had `--max-handshakes-per-peer` handshakes in progress.
    HandshakesPerPeer,
    /// The TLS handshake failed (no or a bad client certificate, not TLS, ...).
    HandshakeFailed,
    /// The TLS handshake took longer than `--handshake-timeout-ms`.
    HandshakeTimeout,
}

impl Refusal {
    const ALL: [Self; 4] = [
        Self::MaxConnections,
        Self::HandshakesPerPeer,
        Self::HandshakeFailed,
        Self::HandshakeTimeout,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::MaxConnections => "max_connections",
            Self::HandshakesPerPeer => "handshakes_per_peer",
            Self::HandshakeFailed => "handshake_failed",
            Self::HandshakeTimeout => "handshake_timeout",
        }
    }
}

/// Which way a message too large was going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A client's request.
    Request,
    /// tenantd's response.
    Response,
}

impl Direction {
    /// The label value (and the ErrorInfo metadata value): `request` or `response`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Response => "response",
        }
    }
}

/// What the limits refused, and what is open.
#[derive(Debug, Clone)]
pub struct LimitMetrics {
    in_flight: IntGauge,
    shed: IntCounter,
    open: IntGauge,
    refused: IntCounterVec,
    closed_idle: IntCounter,
    too_large: IntCounterVec,
    watches_refused: IntCounterVec,
}

impl LimitMetrics {
    /// Registers the metrics in `registry`, every label value at zero.
    ///
    /// # Errors
    /// When a metric is invalid or already registered.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let in_flight = IntGauge::new(
            "calls_in_flight",
            "Calls being handled by this replica (health and reflection not counted).",
        )?;
        let shed = IntCounter::new(
            "calls_shed_total",
            "Calls refused with UNAVAILABLE (OVERLOADED) because --max-concurrent-calls were in flight.",
        )?;
        let open = IntGauge::new(
            "connections_open",
            "Client connections open, TLS handshakes in progress included.",
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "connections_refused_total",
                "Connections closed before carrying a call, by reason (max_connections, handshakes_per_peer, handshake_failed, handshake_timeout).",
            ),
            &["reason"],
        )?;
        let closed_idle = IntCounter::new(
            "connections_closed_idle_total",
            "Connections closed after --idle-connection-timeout-seconds without a call.",
        )?;
        let too_large = IntCounterVec::new(
            Opts::new(
                "messages_too_large_total",
                "Calls refused with RESOURCE_EXHAUSTED (MESSAGE_TOO_LARGE), by direction (request, response).",
            ),
            &["direction"],
        )?;
        let watches_refused = IntCounterVec::new(
            Opts::new(
                "watches_refused_total",
                "WatchProvisioning streams refused with RESOURCE_EXHAUSTED (TOO_MANY_WATCHES), by role.",
            ),
            &["role"],
        )?;
        for refusal in Refusal::ALL {
            refused.with_label_values(&[refusal.as_str()]);
        }
        for direction in [Direction::Request, Direction::Response] {
            too_large.with_label_values(&[direction.as_str()]);
        }
        for role in ["admin", "service", "tenant"] {
            watches_refused.with_label_values(&[role]);
        }
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(shed.clone()))?;
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(closed_idle.clone()))?;
        registry.register(Box::new(too_large.clone()))?;
        registry.register(Box::new(watches_refused.clone()))?;
        Ok(Self {
            in_flight,
            shed,
            open,
            refused,
            closed_idle,
            too_large,
            watches_refused,
        })
    }

    /// The gauge of calls in flight.
    pub fn in_flight(&self) -> &IntGauge {
        &self.in_flight
    }

    /// A call was shed.
    pub fn shed(&self) {
        self.shed.inc();
    }

    /// The gauge of open connections.
    pub fn open(&self) -> &IntGauge {
        &self.open
    }

    /// A connection was refused.
    pub fn refused(&self, why: Refusal) {
        self.refused.with_label_values(&[why.as_str()]).inc();
    }

    /// A connection was closed for being idle.
    pub fn closed_idle(&self) {
        self.closed_idle.inc();
    }

    /// A message too large was refused.
    pub fn too_large(&self, direction: Direction) {
        self.too_large
            .with_label_values(&[direction.as_str()])
            .inc();
    }

    /// A watch of a `role` principal was refused.
    pub fn watch_refused(&self, role: &'static str) {
        self.watches_refused.with_label_values(&[role]).inc();
    }
}

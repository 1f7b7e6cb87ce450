//! tenantd end to end, in one test binary (one link, shared harness): the real server on
//! free ports over mutual TLS, on the embedded store and on PostgreSQL (a scratch schema per
//! test), beside real Redis, Kafka-protocol brokers and, where a test needs it, the real
//! `tenantd` binary as a child process. One module per area.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers take the server as an argument, so they are not #[test] fns; a failed unwrap fails the test"
)]

mod api_keys;
mod audit;
mod authorization;
mod cache;
mod concurrency;
mod dead_letters;
mod encryption;
mod events_kafka;
mod exports;
mod fuzz_corpus;
mod legal_hold;
mod limits;
mod metrics_hygiene;
mod outage;
mod probes;
mod processes;
mod provisioning;
mod purge;
mod rate_limits;
mod retention;
mod rollouts;
mod rotation;
mod server;
mod shutdown;
mod tenant_service;
mod tenantctl;

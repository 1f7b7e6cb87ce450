//! Harness of the end-to-end tests (`tests/e2e/`): the real tenantd server in-process on
//! free ports ([`server`]), gRPC clients that talk to it over mutual TLS ([`client`]),
//! waits and metrics ([`wait`]), the real binary as a child process ([`process`]), real
//! Redis and Kafka-protocol brokers and an independent consumer ([`services`]), provider
//! faults ([`faults`]) and a cuttable TCP proxy ([`proxy`]). Spawned processes start from
//! a cleared environment ([`spawn`]).

pub mod client;
pub mod faults;
pub mod process;
pub mod proxy;
pub mod server;
pub mod services;
pub mod spawn;
pub mod wait;

pub use client::{
    admin_channel, admin_identity_from_foreign_ca, assert_reason, channel, create, identity,
    new_tenant, settle, violated_fields,
};
pub use server::{
    Backend, TestKeys, TestServer, fast_provisioning, http_get, postgres_store,
    postgres_store_with, test_config, with_schema_args,
};
pub use wait::{counter, eventually, health_is};

/// Re-exported for tests: the generated messages.
pub use tenantd_server::proto as pb;

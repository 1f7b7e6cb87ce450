//! The generated `tenant.v1` code: messages, server traits and clients. Other Rust services
//! (and this repository's end-to-end tests) use the clients from here.

// Generated code follows prost's conventions, not this workspace's lints.
#![allow(clippy::pedantic, missing_debug_implementations)]

tonic::include_proto!("tenant.v1");

/// The encoded `FileDescriptorSet` of `tenant.v1`, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tenant_v1_descriptor");

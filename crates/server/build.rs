//! Generates the tenant.v1 gRPC code (client and server) and the encoded file descriptor
//! set that server reflection serves. protoc comes from $PROTOC when set, else from the
//! vendored binary, so a fresh machine needs no system package.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let protos: Vec<PathBuf> = [
        "tenant",
        "provisioning",
        "api_key",
        "plan",
        "event",
        "migration",
        "errors",
    ]
    .iter()
    .map(|name| root.join(format!("tenant/v1/{name}.proto")))
    .collect();
    let mut includes = vec![root.clone()];
    let mut config = prost_build::Config::new();
    if let Some(system_protoc) = std::env::var_os("PROTOC") {
        config.protoc_executable(system_protoc);
    } else {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
        includes.push(protoc_bin_vendored::include_path()?);
    }
    config.btree_map(["."]);
    let descriptor = PathBuf::from(std::env::var("OUT_DIR")?).join("tenant_v1_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor)
        .compile_with_config(config, &protos, &includes)?;
    // Each file by name: a directory's mtime moves only when entries are added or removed.
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}

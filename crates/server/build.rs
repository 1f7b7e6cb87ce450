//! Generates the tenant.v1 gRPC code (client and server) and the encoded file descriptor
//! set that server reflection serves. protoc comes from $PROTOC when set, else from the
//! vendored binary, so a fresh machine needs no system package. Also names the commit the
//! build is of (`TENANTD_COMMIT`: git's short hash, `unknown` outside a git checkout, or
//! `$TENANTD_COMMIT` when set, e.g. by a build from a source archive).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs git in `dir`; its trimmed output when it succeeds.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

/// Sets `TENANTD_COMMIT` and reruns when the checkout's HEAD moves.
fn commit(manifest_dir: &Path) {
    println!("cargo:rerun-if-env-changed=TENANTD_COMMIT");
    let commit = std::env::var("TENANTD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(manifest_dir, &["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=TENANTD_COMMIT={commit}");
    if let Some(git_dir) = git(manifest_dir, &["rev-parse", "--absolute-git-dir"]) {
        // HEAD is the worktree's; the refs are in the common directory (the same one
        // outside a worktree).
        let common = git(
            manifest_dir,
            &["rev-parse", "--path-format=absolute", "--git-common-dir"],
        )
        .map_or_else(|| PathBuf::from(&git_dir), PathBuf::from);
        let mut watched = vec![
            PathBuf::from(&git_dir).join("HEAD"),
            common.join("packed-refs"),
        ];
        if let Some(head) = git(manifest_dir, &["symbolic-ref", "-q", "HEAD"]) {
            let loose = common.join(&head);
            // The ref's directory too: a ref that lives only in packed-refs gets a loose
            // file at the next commit, which changes the directory.
            watched.extend(loose.parent().map(Path::to_path_buf));
            watched.push(loose);
        }
        // Only paths that exist: cargo reruns a script watching a missing one every build.
        for path in watched.iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    commit(Path::new(env!("CARGO_MANIFEST_DIR")));
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
    // `prost::Name` on every message: tenantctl finds each one's descriptor by its name.
    config.enable_type_names();
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

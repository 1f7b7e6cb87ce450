//! Processes a test starts see only what the test gives them: [`cleared`] clears the
//! environment the test runs in (which may carry `KAFKA_BROKERS`, `REDIS_URL`,
//! `DATABASE_URL` or `TENANTD_*` settings of its own) and passes on only where programs
//! are found.

use tokio::process::Command;

/// The variables every spawned process keeps: where programs and their interpreters are
/// found (`python3` may be a pyenv shim), and nothing that configures tenantd or a service.
const KEPT: [&str; 2] = ["PATH", "HOME"];

/// `program` with an empty environment but [`KEPT`]'s variables.
pub fn cleared(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    command.env_clear();
    for name in KEPT {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command
}

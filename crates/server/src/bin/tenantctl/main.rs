//! tenantctl: the command line for tenantd, on the generated gRPC client.
//!
//! ```text
//! tenantctl tenants create --slug acme --display-name "Acme" --plan pro --contact-email ops@acme.example
//! tenantctl tenants list -o json
//! tenantctl provisioning watch <tenant id>
//! ```
//!
//! With no `--endpoint` it calls the default address, with no certificate flags it presents
//! the development certificates under `.tenantd/dev-certs/`; `tenantctl context add` names
//! other setups. Exit codes: 0 done, 1 any other failure, 2 a usage error, 3 an invalid
//! argument, 4 not found, 5 permission denied or unauthenticated, 6 unavailable or past the
//! deadline, 7 a conflict (a precondition, an etag, an existing resource), 8 rate limited
//! or over a quota.

mod calls;
mod context;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, CommandFactory as _, Parser};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::context::{Config, Context, Overrides};
use crate::output::{Format, Printer};

/// tenantctl: operate tenantd (tenants, provisioning, API keys, legal holds, purges,
/// exports, rollouts, plans, events, audit).
#[derive(Debug, Parser)]
#[command(
    name = "tenantctl",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("TENANTD_COMMIT"), ")")
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: calls::Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
struct Global {
    /// tenantd's address, host:port (default: the context's, else 127.0.0.1:50051).
    #[arg(long, global = true, env = "TENANTCTL_ENDPOINT")]
    endpoint: Option<String>,
    /// The context to use (default: the config file's current one).
    #[arg(long, global = true, env = "TENANTCTL_CONTEXT")]
    context: Option<String>,
    /// The config file of the contexts (default: $TENANTCTL_CONFIG, else
    /// ~/.config/tenantctl/config.toml).
    #[arg(long, global = true)]
    config_file: Option<PathBuf>,
    /// The CA certificate (PEM) the server's certificate is checked against.
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// The client certificate (PEM).
    #[arg(long, global = true)]
    cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, global = true)]
    key: Option<PathBuf>,
    /// The name the server's certificate must carry (default: the endpoint's host).
    #[arg(long, global = true)]
    server_name: Option<String>,
    /// Where the development certificates are, when no certificate is configured.
    #[arg(long, global = true, default_value = context::DEFAULT_DEV_CERTS)]
    dev_certs_dir: PathBuf,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    /// How long a call may take, in seconds (streams are not limited).
    #[arg(long, global = true, default_value_t = 30)]
    timeout_seconds: u64,
}

/// What went wrong, and the exit code that says so.
enum Failure {
    Status(tonic::Status),
    Usage(String),
    Other(anyhow::Error),
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        Self::Status(status)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Self::Other(err)
    }
}

/// The exit code of a failed call with `code`.
fn exit_code(code: Code) -> u8 {
    match code {
        Code::InvalidArgument | Code::OutOfRange => 3,
        Code::NotFound => 4,
        Code::PermissionDenied | Code::Unauthenticated => 5,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => 6,
        Code::FailedPrecondition | Code::Aborted | Code::AlreadyExists => 7,
        Code::ResourceExhausted => 8,
        _ => 1,
    }
}

/// A connection to tenantd over mutual TLS, and the timeout of its calls.
#[derive(Debug)]
pub struct Connection {
    channel: Channel,
    timeout: Duration,
}

impl Connection {
    /// A request carrying the call timeout.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    /// A request without a timeout (a stream).
    pub fn stream_request<T>(message: T) -> tonic::Request<T> {
        tonic::Request::new(message)
    }

    /// The channel.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }
}

fn read(path: &std::path::Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| {
        format!(
            "cannot read the {what} {} (pass --ca/--cert/--key, use a context, or run where \
             tenantd wrote its development certificates)",
            path.display()
        )
    })
}

async fn connect(target: &Context, timeout: Duration) -> Result<Connection, Failure> {
    let host = target
        .endpoint
        .rsplit_once(':')
        .map_or(target.endpoint.as_str(), |(host, _)| host)
        .trim_matches(['[', ']']);
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&target.ca, "CA certificate")?))
        .identity(Identity::from_pem(
            read(&target.cert, "client certificate")?,
            read(&target.key, "client key")?,
        ))
        .domain_name(target.server_name.as_deref().unwrap_or(host));
    let channel = Channel::from_shared(format!("https://{}", target.endpoint))
        .map_err(|e| Failure::Usage(format!("--endpoint {}: {e}", target.endpoint)))?
        .tls_config(tls)
        .context("TLS settings")?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|err| {
            let mut cause = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(inner) = source {
                cause = format!("{cause}: {inner}");
                source = inner.source();
            }
            tonic::Status::unavailable(format!("cannot connect to {}: {cause}", target.endpoint))
        })?;
    Ok(Connection { channel, timeout })
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let printer = Printer::new(cli.global.output)?;
    let config_path = context::config_path(cli.global.config_file.as_deref())?;
    let flags = Overrides {
        endpoint: cli.global.endpoint,
        ca: cli.global.ca,
        cert: cli.global.cert,
        key: cli.global.key,
        server_name: cli.global.server_name,
        dev_certs: cli.global.dev_certs_dir,
    };
    match cli.command {
        calls::Command::Context(command) => {
            calls::context(command, &config_path, &flags, &printer).map_err(Failure::Other)
        }
        calls::Command::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "tenantctl",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        command => {
            let config = Config::load(&config_path)?;
            let selected = config.selected(cli.global.context.as_deref())?;
            let target = context::resolve(selected.map(|(_, c)| c), &flags);
            let connection = connect(
                &target,
                Duration::from_secs(cli.global.timeout_seconds.max(1)),
            )
            .await?;
            calls::call(command, &connection, &printer).await
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tenantd_server::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Status(status)) => {
            eprintln!("{}", output::describe(&status));
            ExitCode::from(exit_code(status.code()))
        }
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        // `tenantctl ... | head`: the reader has what it wanted.
        Err(Failure::Other(err)) if output::reader_gone(&err) => ExitCode::SUCCESS,
        Err(Failure::Other(err)) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn each_kind_of_failure_has_its_exit_code() {
        assert_eq!(exit_code(Code::InvalidArgument), 3);
        assert_eq!(exit_code(Code::NotFound), 4);
        assert_eq!(exit_code(Code::PermissionDenied), 5);
        assert_eq!(exit_code(Code::Unavailable), 6);
        assert_eq!(exit_code(Code::FailedPrecondition), 7);
        assert_eq!(exit_code(Code::ResourceExhausted), 8);
        assert_eq!(exit_code(Code::Internal), 1);
    }
}

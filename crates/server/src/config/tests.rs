//! The configuration as operators meet it: defaults, the layers and their precedence,
//! what is refused and how it is named, and the README's table held to the real CLI.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::CommandFactory as _;
use clap::error::{ContextKind, ContextValue};
use tenantd_domain::provisioning::RetryPolicy;
use tenantd_domain::tenant_schema::PlacementRule;

use super::*;

/// The configuration of `tenantd FLAGS` in an environment of exactly `env`.
fn load(flags: &[&str], env: &[(&str, &str)]) -> Result<Config, LoadError> {
    let mut argv = vec!["tenantd"];
    argv.extend_from_slice(flags);
    Config::load(argv, &Environment::from_pairs(env.iter().copied()))
}

fn valid(flags: &[&str]) -> Config {
    load(flags, &[]).expect("a valid configuration")
}

/// The setting a refused configuration names: the setting of a [`ConfigError`], or the
/// flag of a command-line error.
fn refused(flags: &[&str], env: &[(&str, &str)]) -> String {
    match load(flags, env) {
        Ok(config) => panic!("{flags:?} accepted: {config:?}"),
        Err(LoadError::Config(err)) => err.setting,
        Err(LoadError::Cli(err)) => match err.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(arg)) => arg
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .trim_start_matches('-')
                .to_owned(),
            _ => panic!("{flags:?}: {err}"),
        },
    }
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "{text}").unwrap();
    file
}

const DB: [&str; 6] = [
    "--database-url",
    "postgres://db/x",
    "--encryption-keys",
    "k1:AAAA",
    "--blind-index-key",
    "BBBB",
];

#[test]
fn defaults_match_the_design() {
    let config = valid(&[]);
    let server = &config.server;
    assert_eq!(server.listen.to_string(), "127.0.0.1:50051");
    assert_eq!(server.metrics_listen.to_string(), "127.0.0.1:9464");
    assert_eq!(server.trust_domain, "tenantd.local");
    assert_eq!(
        server.tls,
        TlsSource::Dev {
            dir: PathBuf::from(".tenantd/dev-certs")
        }
    );
    assert_eq!(server.shutdown_grace, Duration::from_secs(10));
    assert_eq!(server.log_format, LogFormat::Text);
    assert_eq!(config.store, Store::Memory);
    assert_eq!(
        config.tenants.deletion_retention,
        chrono::Duration::days(30)
    );
    assert_eq!(config.tenants.schema_prefix, "t_");
    assert_eq!(config.provisioning.run_timeout, Duration::from_mins(30));
    assert_eq!(config.provisioning.workers, 4);
    assert_eq!(config.provisioning.lease, Duration::from_secs(30));
    assert_eq!(config.provisioning.retry.max_attempts, 5);
    assert_eq!(config.dns.base_domain, "tenants.tenantd.local");
    assert_eq!(config.dns.ingress, IpAddr::from([127, 0, 0, 1]));
    assert_eq!(
        (
            config.rate_limits.admin_per_second,
            config.rate_limits.service_per_second
        ),
        (1000, 5000)
    );
    assert_eq!((config.redis, config.kafka), (None, None));
}

#[test]
fn provisioning_settings_come_from_flags_and_are_checked() {
    let config = valid(&[
        "--provisioning-workers",
        "8",
        "--provisioning-lease-ms",
        "2000",
        "--provisioning-max-attempts",
        "3",
        "--provisioning-backoff-base-ms",
        "50",
        "--provisioning-backoff-max-ms",
        "400",
        "--provisioning-run-timeout-seconds",
        "60",
        "--dns-base-domain",
        "tenants.example.com",
        "--tenant-schema-prefix",
        "tenant_",
    ]);
    let p = config.provisioning;
    assert_eq!(
        (p.workers, p.lease, p.run_timeout),
        (8, Duration::from_secs(2), Duration::from_mins(1))
    );
    assert_eq!(
        p.retry,
        RetryPolicy {
            base: chrono::Duration::milliseconds(50),
            max_delay: chrono::Duration::milliseconds(400),
            max_attempts: 3,
        }
    );
    assert_eq!(config.dns.base_domain, "tenants.example.com");
    assert_eq!(config.tenants.schema_prefix, "tenant_");

    for (flags, setting) in [
        (&["--provisioning-workers", "0"][..], "provisioning-workers"),
        (&["--provisioning-workers", "257"], "provisioning-workers"),
        (
            &["--provisioning-max-attempts", "0"],
            "provisioning-max-attempts",
        ),
        (&["--provisioning-lease-ms", "0"], "provisioning-lease-ms"),
        (&["--provisioning-lease-ms", "999"], "provisioning-lease-ms"),
        (
            &[
                "--provisioning-backoff-base-ms",
                "500",
                "--provisioning-backoff-max-ms",
                "100",
            ],
            "provisioning-backoff-max-ms",
        ),
        (
            &["--provisioning-run-timeout-seconds", "0"],
            "provisioning-run-timeout-seconds",
        ),
        (&["--dns-base-domain", "Bad Domain"], "dns-base-domain"),
        (
            &["--tenant-schema-prefix", "x\"; DROP"],
            "tenant-schema-prefix",
        ),
        (&["--tenant-schema-prefix", "_x"], "tenant-schema-prefix"),
    ] {
        assert_eq!(refused(flags, &[]), setting, "{flags:?}");
    }
}

#[test]
fn each_layer_overrides_the_one_below_defaults_file_plain_variable_tenantd_variable_flag() {
    let file = file(
        "listen = \"127.0.0.1:7000\"\nmetrics_listen = \"127.0.0.1:7001\"\n\
         log_format = \"json\"\ncache_ttl_seconds = 5\n\
         redis_url = \"redis://from-file:6379\"\ndatabase_url = \"postgres://from-file/db\"\n\
         encryption_keys = \"k1:AAAA\"\nblind_index_key = \"BBBB\"\n\
         kafka_brokers = \"file:9092\"",
    );
    let path = file.path().to_str().unwrap();
    let env = [
        ("REDIS_URL", "redis://plain:6379"),
        ("DATABASE_URL", "postgres://plain/db"),
        ("TENANTD_DATABASE_URL", "postgres://prefixed/db"),
        ("TENANTD_METRICS_LISTEN", "127.0.0.1:7101"),
    ];
    let config = load(&["--config", path, "--listen", "127.0.0.1:8000"], &env).unwrap();
    // flag > file
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8000");
    // TENANTD_ variable > file
    assert_eq!(config.server.metrics_listen.to_string(), "127.0.0.1:7101");
    // file > default
    assert_eq!(config.server.log_format, LogFormat::Json);
    let redis = config.redis.unwrap();
    assert_eq!(redis.cache_ttl, Duration::from_secs(5));
    // plain variable > file
    assert_eq!(redis.url.expose(), "redis://plain:6379");
    // TENANTD_ variable > plain variable
    let Store::Postgres { url, .. } = config.store else {
        panic!("a database is configured");
    };
    assert_eq!(url.expose(), "postgres://prefixed/db");
    assert_eq!(config.kafka.unwrap().brokers, "file:9092");

    // The file can be named by its variable too.
    let by_variable = load(&[], &[("TENANTD_CONFIG", path)]).unwrap();
    assert_eq!(by_variable.server.listen.to_string(), "127.0.0.1:7000");
}

#[test]
fn unknown_file_keys_and_variables_are_refused_with_a_suggestion() {
    let typo = file("lisen = \"127.0.0.1:7000\"");
    let err = load(&["--config", typo.path().to_str().unwrap()], &[]).unwrap_err();
    let LoadError::Config(err) = err else {
        panic!("{err}");
    };
    assert_eq!(err.setting, "config");
    assert!(err.problem.contains("unknown key `lisen`"), "{err}");
    assert!(err.problem.contains("did you mean listen?"), "{err}");

    let section = file("[server]\nlisten = \"127.0.0.1:7000\"");
    assert_eq!(
        refused(&["--config", section.path().to_str().unwrap()], &[]),
        "config"
    );

    let err = load(&[], &[("TENANTD_DNS_BASE_DOMIAN", "example.com")]).unwrap_err();
    let LoadError::Config(err) = err else {
        panic!("{err}");
    };
    assert_eq!(err.setting, "TENANTD_DNS_BASE_DOMIAN");
    assert!(
        err.problem
            .contains("did you mean TENANTD_DNS_BASE_DOMAIN?"),
        "{err}"
    );
    // Variables of other programs are none of tenantd's business.
    assert!(load(&[], &[("DNS_PROVDER", "x"), ("PATH", "/usr/bin")]).is_ok());
}

#[test]
fn a_bad_value_from_a_file_or_a_variable_names_the_setting_and_where_it_came_from() {
    let bad = file("listen = \"nowhere\"");
    let path = bad.path().to_str().unwrap();
    let Err(LoadError::Config(err)) = load(&["--config", path], &[]) else {
        panic!("a bad file value was accepted");
    };
    assert_eq!(err.setting, "listen");
    assert!(err.problem.contains("key `listen`"), "{err}");
    assert!(!err.to_string().contains('\n'), "one line: {err}");
    // A flag given on the command line wins over the bad file value.
    assert!(load(&["--config", path, "--listen", "127.0.0.1:1"], &[]).is_ok());

    let Err(LoadError::Config(err)) = load(&[], &[("TENANTD_REDIS_TIMEOUT_MS", "60000")]) else {
        panic!("a bad variable was accepted");
    };
    assert_eq!(err.setting, "redis-timeout-ms");
    assert!(
        err.problem.contains("variable TENANTD_REDIS_TIMEOUT_MS"),
        "{err}"
    );
}

#[test]
fn partial_tls_bad_trust_domains_and_retention_out_of_range_are_refused() {
    assert_eq!(refused(&["--tls-cert", "a.pem"], &[]), "tls-cert");
    assert_eq!(
        refused(&["--trust-domain", "Not Valid"], &[]),
        "trust-domain"
    );
    for days in ["0", "3651"] {
        assert_eq!(
            refused(&["--deletion-retention-days", days], &[]),
            "deletion-retention-days"
        );
    }
    assert_eq!(refused(&["--log", "info,[bad"], &[]), "log");
}

#[test]
fn database_url_selects_postgres_and_is_redacted() {
    let config = valid(&[
        "--encryption-keys",
        "k1:AAAA",
        "--blind-index-key",
        "BBBB",
        "--database-url",
        "postgres://app:s3cret@db:5432/tenantd",
        "--database-acquire-timeout-ms",
        "750",
    ]);
    let Store::Postgres {
        url,
        pool,
        background,
        ..
    } = &config.store
    else {
        panic!("expected PostgreSQL");
    };
    assert_eq!(url.expose(), "postgres://app:s3cret@db:5432/tenantd");
    assert_eq!(pool.acquire_timeout, Duration::from_millis(750));
    assert_eq!(
        (pool.max_connections, pool.statement_timeout),
        (10, Duration::from_secs(5))
    );
    // Background work has a pool of its own, with the same timeouts.
    assert_eq!(
        (background.max_connections, background.acquire_timeout),
        (4, Duration::from_millis(750))
    );
    assert!(!format!("{config:?}").contains("s3cret"));

    assert_eq!(
        refused(&["--database-url", "mysql://db"], &[]),
        "database-url"
    );
    assert_eq!(
        refused(&["--database-url", "postgres://db/x"], &[]),
        "encryption-keys",
        "a database needs encryption keys"
    );
    assert_eq!(
        valid(&["--database-url", ""]).store,
        Store::Memory,
        "empty is unset"
    );
}

#[test]
fn malformed_flags_are_named_in_one_line_and_unknown_flags_are_usage_errors() {
    let Err(LoadError::Config(err)) = load(&["--listen", "nowhere"], &[]) else {
        panic!("a malformed flag was accepted");
    };
    assert_eq!(err.setting, "listen");
    assert!(err.problem.contains("from the command line"), "{err}");
    assert!(!err.to_string().contains('\n'), "one line: {err}");
    assert!(matches!(
        load(&["--no-such-flag"], &[]),
        Err(LoadError::Cli(_))
    ));
    let list = file("listen = [\"127.0.0.1:1\", \"127.0.0.1:2\"]");
    let Err(LoadError::Config(err)) = load(&["--config", list.path().to_str().unwrap()], &[])
    else {
        panic!("a list for a one-value setting was accepted");
    };
    assert!(err.problem.contains("takes one value"), "{err}");
}

#[test]
fn without_urls_there_is_no_redis_and_no_kafka() {
    let config = valid(&DB);
    assert_eq!(config.redis, None);
    assert_eq!(config.kafka, None);
}

#[test]
fn plain_variables_configure_redis_and_kafka_with_defaults() {
    let env = [
        ("REDIS_URL", "redis://:s3cret@cache:6379/2"),
        ("KAFKA_BROKERS", "k1:9092, k2:9092"),
    ];
    let config = load(&DB, &env).unwrap();
    let redis = config.redis.clone().unwrap();
    assert_eq!(redis.url.expose(), "redis://:s3cret@cache:6379/2");
    assert_eq!(redis.timeout, Duration::from_millis(250));
    assert_eq!(redis.cache_ttl, Duration::from_secs(30));
    assert_eq!(redis.key_prefix, "tenantd:");
    assert!(!format!("{config:?}").contains("s3cret"));
    let kafka = config.kafka.unwrap();
    assert_eq!(kafka.brokers, "k1:9092,k2:9092");
    assert_eq!(kafka.topic, "tenant.events.v1");
    assert_eq!((kafka.partitions, kafka.replication_factor), (6, -1));
    assert_eq!(kafka.batch_size, 500);
    assert_eq!(kafka.message_timeout, Duration::from_secs(10));
    assert_eq!(kafka.max_delivery_attempts, 10);
}

#[test]
fn bad_integration_settings_are_named() {
    let named = |flags: &[&str]| {
        let mut all = DB.to_vec();
        all.extend_from_slice(flags);
        refused(&all, &[])
    };
    assert_eq!(named(&["--redis-url", "http://cache"]), "redis-url");
    assert_eq!(
        named(&["--redis-url", "redis://c", "--redis-timeout-ms", "60000"]),
        "redis-timeout-ms"
    );
    assert_eq!(
        named(&["--redis-url", "redis://c", "--redis-key-prefix", "a b"]),
        "redis-key-prefix"
    );
    assert_eq!(named(&["--kafka-brokers", "nohost"]), "kafka-brokers");
    assert_eq!(
        named(&["--kafka-brokers", "k:9092", "--kafka-topic", "a b"]),
        "kafka-topic"
    );
    assert_eq!(
        named(&[
            "--kafka-brokers",
            "k:9092",
            "--kafka-topic-replication-factor",
            "0"
        ]),
        "kafka-topic-replication-factor"
    );
    assert_eq!(
        named(&[
            "--kafka-brokers",
            "k:9092",
            "--outbox-max-delivery-attempts",
            "0"
        ]),
        "outbox-max-delivery-attempts"
    );
}

/// A directory holding `files`.
fn migrations(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, sql) in files {
        std::fs::write(dir.path().join(name), sql).unwrap();
    }
    dir
}

#[test]
fn tenant_migrations_come_from_a_directory_checked_file_by_file() {
    let built_in = valid(&[]);
    assert!(built_in.tenant_schemas.built_in());
    assert_eq!(built_in.tenant_schemas.migrations.newest(), 2);
    let good = migrations(&[
        ("0001_a.sql", "CREATE TABLE a ();"),
        ("0002_b.sql", "SELECT 1;"),
    ]);
    let path = good.path().display().to_string();
    let config = valid(&["--tenant-migrations-dir", &path]);
    assert!(!config.tenant_schemas.built_in());
    assert_eq!(config.tenant_schemas.migrations.newest(), 2);

    for (files, named) in [
        (
            &[("0001_a.sql", "x"), ("0003_c.sql", "y")][..],
            "0003_c.sql",
        ),
        (&[("0001_a.sql", "x"), ("notes.txt", "y")][..], "notes.txt"),
        (&[("1_a.sql", "x")][..], "1_a.sql"),
        (
            &[("0001_a.sql", "x"), ("0001_b.sql", "y")][..],
            "0001_b.sql",
        ),
    ] {
        let dir = migrations(files);
        let path = dir.path().display().to_string();
        let err = match load(&["--tenant-migrations-dir", &path], &[]) {
            Err(LoadError::Config(err)) => err,
            other => panic!("{files:?}: {other:?}"),
        };
        assert_eq!(err.setting, "tenant-migrations-dir");
        let line = err.to_string();
        assert!(line.contains(named), "{files:?}: {line}");
        assert!(!line.contains('\n'), "one line: {line}");
    }
    assert_eq!(
        refused(&["--tenant-migrations-dir", "/nonexistent/tenantd"], &[]),
        "tenant-migrations-dir"
    );
}

#[test]
fn tenant_databases_and_placements_are_checked_and_need_the_database() {
    let mut flags = DB.to_vec();
    flags.extend([
        "--tenant-database",
        "silo=postgres://silo.internal/tenants",
        "--tenant-database",
        "eu=postgres://eu.internal/tenants",
        "--plan-placement",
        "enterprise=dedicated:silo",
        "--plan-placement",
        "pro=eu",
        "--tenant-placement",
        "dedicated",
    ]);
    let config = valid(&flags);
    let schemas = &config.tenant_schemas;
    assert_eq!(
        schemas
            .databases
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["eu", "silo"]
    );
    assert_eq!(
        schemas.plan_placements[&tenantd_domain::PlanId::new("enterprise")],
        PlacementRule::Dedicated("silo".into())
    );
    assert_eq!(
        schemas.plan_placements[&tenantd_domain::PlanId::new("pro")],
        PlacementRule::Shared("eu".into())
    );
    assert_eq!(
        schemas.default_placement,
        PlacementRule::Dedicated("default".into())
    );
    assert!(
        !format!("{config:?}").contains("silo.internal"),
        "URLs are redacted"
    );
    // From a variable: separated by spaces.
    let env = [(
        "TENANTD_TENANT_DATABASES",
        "a=postgres://a/x b=postgres://b/y",
    )];
    let from_env = load(&DB, &env).unwrap();
    assert_eq!(from_env.tenant_schemas.databases.len(), 2);

    let with_db = |extra: &[&'static str]| {
        let mut flags = DB.to_vec();
        flags.extend_from_slice(extra);
        refused(&flags, &[])
    };
    assert_eq!(with_db(&["--tenant-database", "silo"]), "tenant-database");
    assert_eq!(
        with_db(&["--tenant-database", "Silo=postgres://x/y"]),
        "tenant-database"
    );
    assert_eq!(
        with_db(&["--tenant-database", "silo=mysql://x/y"]),
        "tenant-database"
    );
    assert_eq!(
        with_db(&["--plan-placement", "pro=nowhere"]),
        "plan-placement"
    );
    assert_eq!(
        with_db(&["--plan-placement", "pro=shared:x"]),
        "plan-placement"
    );
    assert_eq!(
        with_db(&["--tenant-placement", "dedicated:nowhere"]),
        "tenant-placement"
    );
    assert_eq!(
        refused(&["--tenant-database", "silo=postgres://x/y"], &[]),
        "tenant-database",
        "the in-memory store has no databases"
    );
    assert_eq!(
        refused(&["--rollout-error-budget-ratio", "1.5"], &[]),
        "rollout-error-budget-ratio"
    );
}

#[test]
fn limits_come_from_flags_and_variables_and_must_fit_together() {
    let limits = valid(&[
        "--max-request-bytes",
        "65536",
        "--idle-connection-timeout-seconds",
        "0",
        "--http2-keepalive-interval-seconds",
        "0",
    ])
    .limits;
    assert_eq!(limits.max_request_bytes, 65_536);
    assert_eq!(limits.idle_connection_timeout, None, "0 turns it off");
    assert_eq!(limits.http2_keepalive_interval, None, "0 turns pings off");
    let limits = load(&[], &[("TENANTD_MAX_CONCURRENT_CALLS", "7")])
        .expect("valid")
        .limits;
    assert_eq!(limits.max_concurrent_calls, 7);
    assert_eq!(limits.idle_connection_timeout, Some(Duration::from_mins(5)));

    assert_eq!(
        refused(&["--max-concurrent-calls", "0"], &[]),
        "max-concurrent-calls"
    );
    assert_eq!(
        refused(&["--max-request-bytes", "100"], &[]),
        "max-request-bytes"
    );
    assert_eq!(
        refused(
            &["--max-handshakes", "8", "--max-handshakes-per-peer", "9"],
            &[]
        ),
        "max-handshakes-per-peer"
    );
    assert_eq!(
        refused(
            &[
                "--max-connections",
                "8",
                "--max-handshakes",
                "9",
                "--max-handshakes-per-peer",
                "4"
            ],
            &[]
        ),
        "max-handshakes"
    );
}

#[test]
fn help_groups_the_settings_by_area() {
    let help = Cli::command().render_long_help().to_string();
    for heading in [
        "Server:",
        "Limits:",
        "Database:",
        "Tenants:",
        "Tenant schemas:",
        "Rollouts:",
        "Provisioning:",
        "DNS:",
        "Redis (cache and shared rate limits):",
        "Rate limits:",
        "Kafka (the event relay):",
    ] {
        assert!(help.contains(heading), "no {heading} in --help:\n{help}");
    }
    assert!(
        help.contains("[env: TENANTD_PROVISIONING_WORKERS="),
        "{help}"
    );
    assert!(help.contains("[default: 127.0.0.1:50051]"), "{help}");
}

/// One row of the README's configuration table.
#[derive(Debug, PartialEq, Eq)]
struct Row {
    variables: Vec<String>,
    default: String,
}

/// The README's configuration table: flag -> (variables, default).
fn readme_table() -> BTreeMap<String, Row> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(&path).expect("the README");
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .expect("a Configuration section")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    let code = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    };
    section
        .lines()
        .filter(|line| line.starts_with("| `--"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let flags = code(cells[1]);
            assert_eq!(flags.len(), 1, "one flag per row: {line}");
            let default = match code(cells[3]).as_slice() {
                [] => cells[3].to_owned(),
                [one] => one.clone(),
                more => panic!("one default per row: {more:?} in {line}"),
            };
            (
                flags[0].clone(),
                Row {
                    variables: code(cells[2]),
                    default,
                },
            )
        })
        .collect()
}

#[test]
fn the_readme_configuration_table_matches_the_cli() {
    let table = readme_table();
    let cli = Cli::command();
    let mut documented = Vec::new();
    for arg in cli.get_arguments() {
        let Some(long) = arg.get_long() else {
            continue;
        };
        if matches!(long, "help" | "version") {
            continue;
        }
        let flag = format!("--{long}");
        let Some(row) = table.get(&flag) else {
            panic!("the README's configuration table has no row for {flag}");
        };
        let mut variables: Vec<String> = arg
            .get_env()
            .map(|e| e.to_string_lossy().into_owned())
            .into_iter()
            .collect();
        variables.extend(
            load::PLAIN_VARIABLES
                .iter()
                .filter(|(id, _)| *id == arg.get_id().as_str())
                .map(|(_, name)| (*name).to_owned()),
        );
        assert_eq!(row.variables, variables, "variables of {flag}");
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        let default = match defaults.as_slice() {
            [] => "unset".to_owned(),
            [one] => one.clone(),
            more => more.join(","),
        };
        assert_eq!(row.default, default, "default of {flag}");
        documented.push(flag);
    }
    let stale: Vec<_> = table.keys().filter(|f| !documented.contains(f)).collect();
    assert!(
        stale.is_empty(),
        "the README documents unknown flags: {stale:?}"
    );
}

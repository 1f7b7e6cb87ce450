//! tenantctl against a real `tenantd` process (the embedded store, its development
//! certificates where `tenantd` writes them by default): a session through every command
//! group in table, JSON and YAML; the exit code and the error lines of each kind of
//! failure; contexts in a config file; shell completions. tenantctl runs from a cleared
//! environment in a directory of its own.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use tenantd_e2e::process::{TenantdProcess, tenantctl_binary};
use tenantd_e2e::spawn::cleared;
use tokio::io::AsyncWriteExt as _;

/// A tenantd process whose development certificates are in `<dir>/.tenantd/dev-certs`,
/// where tenantctl looks by default when run in `dir`.
struct Setup {
    dir: tempfile::TempDir,
    process: TenantdProcess,
}

impl Setup {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let process = TenantdProcess::start_in_memory(&dir.path().join(".tenantd/dev-certs"))
            .await
            .unwrap();
        Self { dir, process }
    }

    fn endpoint(&self) -> String {
        self.process.grpc_addr.to_string()
    }

    fn certs(&self) -> PathBuf {
        self.dir.path().join(".tenantd/dev-certs")
    }

    /// tenantctl with `args` in the setup's directory, against its tenantd.
    async fn ctl(&self, args: &[&str]) -> Output {
        let endpoint = self.endpoint();
        let mut all = vec!["--endpoint", endpoint.as_str()];
        all.extend_from_slice(args);
        run(self.dir.path(), &all, &[], None).await
    }

    /// tenantctl's JSON answer to `args` (`-o json` added); fails unless it exits 0.
    async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend_from_slice(&["-o", "json"]);
        let output = self.ctl(&all).await;
        assert_success(&output, args);
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&output.stdout))
        })
    }
}

/// Runs tenantctl in `dir` from a cleared environment plus `env`, with `stdin` if given.
async fn run(dir: &Path, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut command = cleared(tenantctl_binary().unwrap());
    command
        .current_dir(dir)
        .env("HOME", dir)
        .envs(env.iter().copied())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    child.wait_with_output().await.unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_success(output: &Output, args: &[&str]) {
    assert!(
        output.status.success(),
        "{args:?} exited {:?}: {}",
        output.status.code(),
        text(&output.stderr)
    );
}

/// The exit code and standard error of a failing call.
fn failure(output: &Output) -> (i32, String) {
    (output.status.code().unwrap_or(-1), text(&output.stderr))
}

/// Creates a tenant with tenantctl and follows its provisioning to the end; its id.
async fn created_active(setup: &Setup, slug: &str) -> String {
    let email = format!("ops@{slug}.example");
    let created = setup
        .json(&[
            "tenants",
            "create",
            "--slug",
            slug,
            "--display-name",
            "Acme",
            "--plan",
            "pro",
            "--contact-email",
            &email,
            "--label",
            "env=prod",
            "--config",
            r#"{"seats": 25}"#,
        ])
        .await;
    assert_eq!(created["tenant"]["slug"], slug);
    assert_eq!(created["tenant"]["config"]["seats"], 25.0);
    let id = created["tenant"]["tenantId"].as_str().unwrap().to_owned();
    let watched = setup
        .ctl(&["provisioning", "watch", &id, "-o", "json"])
        .await;
    assert_success(&watched, &["provisioning", "watch"]);
    let last: Value = serde_json::from_str(text(&watched.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(
        last["run"]["state"], "RUN_STATE_SUCCEEDED",
        "one object per line"
    );
    id
}

#[tokio::test]
async fn tenants_and_provisioning_in_table_json_and_yaml() {
    let setup = Setup::start().await;
    let id = created_active(&setup, "ctl-acme").await;
    let steps = text(&setup.ctl(&["provisioning", "get", &id]).await.stdout);
    for step in [
        "RUN",
        "DATABASE",
        "DNS",
        "CREDENTIALS",
        "BILLING",
        "NOTIFICATION",
    ] {
        assert!(steps.contains(step), "{step} missing:\n{steps}");
    }
    let got = text(&setup.ctl(&["tenants", "get", &id]).await.stdout);
    assert!(got.starts_with("FIELD "), "{got}");
    assert!(got.contains("\nstatus         ACTIVE\n"), "{got}");
    assert!(got.contains("\nlabels         env=prod\n"), "{got}");
    let listed = setup
        .json(&["tenants", "list", "--label", "env=prod"])
        .await;
    assert_eq!(listed["tenants"][0]["tenantId"], id.as_str());
    let table = setup
        .ctl(&["tenants", "list", "--status", "active", "--all"])
        .await;
    let table = text(&table.stdout);
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains("ctl-acme  ACTIVE  pro"), "{table}");

    let rename = [
        "tenants",
        "update",
        &id,
        "--display-name",
        "Acme Two",
        "-o",
        "yaml",
    ];
    let updated = text(&setup.ctl(&rename).await.stdout);
    assert!(updated.contains("displayName: Acme Two"), "{updated}");
    let suspended = setup
        .json(&["tenants", "suspend", &id, "--reason", "unpaid"])
        .await;
    assert_eq!(suspended["tenant"]["status"], "TENANT_STATUS_SUSPENDED");
    let resumed = setup.json(&["tenants", "resume", &id]).await;
    assert_eq!(resumed["tenant"]["status"], "TENANT_STATUS_ACTIVE");
    let deleted = setup.json(&["tenants", "delete", &id]).await;
    assert_eq!(deleted["tenant"]["status"], "TENANT_STATUS_DELETED");
    let back = setup.json(&["tenants", "undelete", &id]).await;
    assert_eq!(back["tenant"]["status"], "TENANT_STATUS_ACTIVE");
}

#[tokio::test]
async fn api_keys_plans_events_and_audit() {
    let setup = Setup::start().await;
    let id = created_active(&setup, "ctl-keys").await;
    let create = [
        "api-keys", "create", "--tenant", &id, "--name", "ci", "--scope", "read",
    ];
    let key = setup.json(&create).await;
    let secret = key["secret"].as_str().unwrap();
    let endpoint = setup.endpoint();
    let verify = [
        "--endpoint",
        &endpoint,
        "api-keys",
        "verify",
        "-",
        "-o",
        "json",
    ];
    let verified = run(setup.dir.path(), &verify, &[], Some(secret)).await;
    let verified: Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(verified["valid"], true);
    assert_eq!(verified["tenantId"], id.as_str());
    let keys = text(
        &setup
            .ctl(&["api-keys", "list", "--tenant", &id])
            .await
            .stdout,
    );
    assert!(keys.contains("ci") && keys.contains("ACTIVE"), "{keys}");
    let key_id = key["apiKey"]["keyId"].as_str().unwrap();
    let revoked = setup
        .json(&["api-keys", "revoke", "--tenant", &id, key_id])
        .await;
    assert!(revoked["apiKey"]["revokeTime"].is_string(), "{revoked}");

    let plans = text(&setup.ctl(&["plans", "list"]).await.stdout);
    assert!(plans.lines().any(|l| l.starts_with("pro ")), "{plans}");
    let events = setup.json(&["events", "list", "--tenant", &id]).await;
    assert!(events["events"].as_array().unwrap().len() >= 4, "{events}");
    let dead = setup.json(&["events", "dead-letters"]).await;
    assert_eq!(dead["deadLetters"], serde_json::json!([]));
    let audit = text(&setup.ctl(&["audit", "list", "--tenant", &id]).await.stdout);
    assert!(
        audit.contains("/tenant.v1.ApiKeyService/RevokeApiKey"),
        "{audit}"
    );
}

#[tokio::test]
async fn each_kind_of_failure_has_its_exit_code_and_says_why() {
    let setup = Setup::start().await;
    let unknown = uuid::Uuid::now_v7().to_string();
    let (code, stderr) = failure(&setup.ctl(&["tenants", "get", &unknown]).await);
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.starts_with("error: NOT_FOUND (TENANT_NOT_FOUND): "),
        "{stderr}"
    );

    let bad = [
        "tenants",
        "create",
        "--slug",
        "Not A Slug",
        "--display-name",
        "x",
        "--plan",
        "pro",
        "--contact-email",
        "not-an-email",
    ];
    let (code, stderr) = failure(&setup.ctl(&bad).await);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.starts_with("error: INVALID_ARGUMENT (FIELD_INVALID): "),
        "{stderr}"
    );
    let violations: Vec<&str> = stderr.lines().skip(1).collect();
    assert!(
        violations.iter().any(|l| l.starts_with("  tenant.slug: "))
            && violations
                .iter()
                .any(|l| l.starts_with("  tenant.contact_email: ")),
        "each violation on its own line: {stderr}"
    );

    let (cert, key) = tenantd_server::devcerts::issue(
        &setup.certs(),
        "spiffe://tenantd.local/service/billing",
        "billing",
    )
    .unwrap();
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let as_service = [
        "--cert", &cert, "--key", &key, "tenants", "delete", &unknown,
    ];
    let (code, stderr) = failure(&setup.ctl(&as_service).await);
    assert_eq!(code, 5, "{stderr}");
    assert!(
        stderr.starts_with("error: PERMISSION_DENIED (OPERATION_NOT_PERMITTED)"),
        "{stderr}"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = closed.local_addr().unwrap().to_string();
    drop(closed);
    let (code, stderr) = failure(
        &run(
            setup.dir.path(),
            &["--endpoint", &nowhere, "plans", "list"],
            &[],
            None,
        )
        .await,
    );
    assert_eq!(code, 6, "{stderr}");
    assert!(
        stderr.starts_with(&format!("error: UNAVAILABLE: cannot connect to {nowhere}")),
        "{stderr}"
    );

    let (code, stderr) = failure(&setup.ctl(&["tenants", "update", &unknown]).await);
    assert_eq!(code, 2, "nothing to update is a usage error: {stderr}");
    let (code, _) = failure(&setup.ctl(&["tenants", "frobnicate"]).await);
    assert_eq!(code, 2, "clap's usage errors");

    let elsewhere = tempfile::tempdir().unwrap();
    let endpoint = setup.endpoint();
    let (code, stderr) = failure(
        &run(
            elsewhere.path(),
            &["--endpoint", &endpoint, "plans", "list"],
            &[],
            None,
        )
        .await,
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("cannot read the CA certificate .tenantd/dev-certs/ca.pem"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_context_in_the_config_file_replaces_every_connection_flag() {
    let setup = Setup::start().await;
    let elsewhere = tempfile::tempdir().unwrap();
    let config = elsewhere.path().join("tenantctl.toml");
    let config = config.display().to_string();
    let env = [("TENANTCTL_CONFIG", config.as_str())];
    let certs = setup.certs();
    let file = |name: &str| certs.join(name).display().to_string();
    let (ca, cert, key) = (file("ca.pem"), file("admin.pem"), file("admin.key"));
    let endpoint = setup.endpoint();
    let add = [
        "context", "add", "local", &endpoint, "--ca", &ca, "--cert", &cert, "--key", &key,
    ];
    assert_success(&run(elsewhere.path(), &add, &env, None).await, &add);
    let listed = run(elsewhere.path(), &["context", "list"], &env, None).await;
    let listed = text(&listed.stdout);
    assert!(
        listed
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with(&format!("*        local  {endpoint}  /"))),
        "{listed}"
    );

    // No flags at all, in a directory without development certificates: the context.
    let plans = run(
        elsewhere.path(),
        &["plans", "list", "-o", "json"],
        &env,
        None,
    )
    .await;
    assert_success(&plans, &["plans", "list"]);
    let plans: Value = serde_json::from_slice(&plans.stdout).unwrap();
    assert!(plans["plans"].as_array().is_some_and(|p| !p.is_empty()));

    let other = ["--context", "staging", "plans", "list"];
    let (code, stderr) = failure(&run(elsewhere.path(), &other, &env, None).await);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("no context \"staging\" (known: local)"),
        "{stderr}"
    );

    let bash = run(elsewhere.path(), &["completion", "bash"], &env, None).await;
    assert_success(&bash, &["completion", "bash"]);
    assert!(
        text(&bash.stdout).contains("_tenantctl()"),
        "a bash completion function"
    );
    let version = run(elsewhere.path(), &["--version"], &env, None).await;
    assert!(
        text(&version.stdout)
            .starts_with(&format!("tenantctl {} (commit ", env!("CARGO_PKG_VERSION")))
    );
}

/// Polls `args` (JSON) until `done` holds of the answer (15 s at most).
async fn until(setup: &Setup, args: &[&str], done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let answer = setup.json(args).await;
        if done(&answer) {
            return answer;
        }
        assert!(std::time::Instant::now() < deadline, "{args:?}: {answer}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn legal_holds_exports_purges_and_rollouts() {
    let setup = Setup::start().await;
    let id = created_active(&setup, "ctl-life").await;
    let held = setup
        .json(&["legal-hold", "set", &id, "--reason", "case 7"])
        .await;
    assert_eq!(held["tenant"]["legalHold"]["reason"], "case 7");
    let released = setup
        .json(&["legal-hold", "release", &id, "--reason", "closed"])
        .await;
    assert!(released["tenant"]["legalHold"].is_null(), "{released}");

    let export = setup.json(&["exports", "create", &id]).await;
    let export_id = export["export"]["exportId"].as_str().unwrap().to_owned();
    let done = until(&setup, &["exports", "get", &id, &export_id], |e| {
        e["export"]["state"] == "EXPORT_STATE_SUCCEEDED"
    })
    .await;
    let archive = setup.dir.path().join("ctl-life.tar.gz");
    let file = archive.display().to_string();
    let downloaded = setup
        .ctl(&["exports", "download", &id, &export_id, "--file", &file])
        .await;
    assert_success(&downloaded, &["exports", "download"]);
    let bytes = std::fs::read(&archive).unwrap();
    assert_eq!(
        bytes.len().to_string(),
        done["export"]["size"].as_str().unwrap()
    );
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "a gzip archive");
    assert!(
        text(&downloaded.stderr).contains(done["export"]["sha256"].as_str().unwrap()),
        "the checked digest is reported"
    );

    setup.json(&["tenants", "delete", &id]).await;
    let purge = setup.json(&["purge", "start", &id, "--force"]).await;
    assert_eq!(purge["purge"]["forced"], true);
    until(&setup, &["purge", "get", &id], |p| {
        p["purge"]["done"] == true
    })
    .await;
    let gone = setup.json(&["tenants", "get", &id]).await;
    assert_eq!(gone["tenant"]["status"], "TENANT_STATUS_PURGED");

    let other = created_active(&setup, "ctl-schema").await;
    let schemas = setup.json(&["tenant-schemas", "list"]).await;
    let newest = schemas["newestVersion"].as_i64().unwrap();
    assert!(
        schemas["schemas"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["tenantId"] == other.as_str() && s["version"].as_i64() == Some(newest)),
        "{schemas}"
    );
    let target = newest.to_string();
    let rollout = setup
        .json(&[
            "rollouts",
            "start",
            "--target-version",
            &target,
            "--canary-first",
            "1",
        ])
        .await;
    let rollout_id = rollout["rollout"]["rolloutId"].as_str().unwrap().to_owned();
    let watched = setup
        .ctl(&["rollouts", "watch", &rollout_id, "-o", "json"])
        .await;
    assert_success(&watched, &["rollouts", "watch"]);
    let last: Value = serde_json::from_str(text(&watched.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(
        last["rollout"]["state"], "ROLLOUT_STATE_SUCCEEDED",
        "nothing was behind"
    );
    let listed = text(&setup.ctl(&["rollouts", "list"]).await.stdout);
    assert!(
        listed.contains(&rollout_id) && listed.contains("SUCCEEDED"),
        "{listed}"
    );
}

//! Scratch schemas for tests: each test gets its own freshly migrated schema in the test
//! database, dropped when the test ends, so tests run in parallel without sharing state.
//!
//! The server is `TEST_DATABASE_URL`, else `DATABASE_URL`, else the local
//! `postgres://postgres@127.0.0.1:5432/postgres`. An unreachable server fails the test with
//! a message saying how to start one; it is never skipped.

use sqlx::{Connection as _, PgConnection, PgPool};
use uuid::Uuid;

use super::{PgSettings, connect, migrate};

/// The statement tenantd's PostgreSQL store runs for GetTenant (`$1` the tenant id), for
/// benchmarks that compare it with pgbench of the same statement.
pub fn get_tenant_statement() -> &'static str {
    super::tables::tenants::SELECT_TENANT_BY_ID.as_str()
}

/// The pool of a test's store: small, quick to give up.
const TEST_POOL: PgSettings = PgSettings {
    max_connections: 10,
    acquire_timeout: std::time::Duration::from_secs(3),
    statement_timeout: std::time::Duration::from_secs(5),
};

/// The server tests use when nothing else is configured.
pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The URL of the test server.
pub fn test_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_owned())
}

/// A schema of its own in the test database; dropped (with everything in it) on drop.
#[derive(Debug)]
pub struct ScratchSchema {
    name: String,
    base_url: String,
}

impl ScratchSchema {
    /// Creates an empty schema.
    ///
    /// # Errors
    /// A message naming the server and how to start one when it cannot be reached.
    pub async fn create() -> Result<Self, String> {
        let base_url = test_database_url();
        let name = format!("tenantd_test_{}", Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&base_url).await.map_err(|e| {
            format!(
                "PostgreSQL is not reachable for the tests ({e}). Start the local server \
                 (`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, \
                 or `scripts/test-services.sh`) or point TEST_DATABASE_URL at one"
            )
        })?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{name}\"")))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("cannot create test schema {name}: {e}"))?;
        let _closed = conn.close().await;
        Ok(Self { name, base_url })
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The prefix of the tenant schemas a server on this schema creates (tenant schemas
    /// live beside the control-plane schema, so they are named apart per test and dropped
    /// with it).
    pub fn tenant_schema_prefix(&self) -> String {
        let id = self.name.trim_start_matches("tenantd_test_");
        format!("tt_{}_", &id[..id.len().min(12)])
    }

    /// A URL whose connections use this schema, through the `options` parameter that both
    /// sqlx and libpq (psql) understand.
    pub fn url(&self) -> String {
        let separator = if self.base_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{separator}options=-csearch_path%3D{}",
            self.base_url, self.name
        )
    }

    /// A pool on this schema with the migrations applied.
    ///
    /// # Errors
    /// When connecting or migrating fails.
    pub async fn migrated_pool(&self) -> Result<PgPool, String> {
        let pool = connect(&self.url(), &TEST_POOL)
            .await
            .map_err(|e| e.to_string())?;
        migrate(&pool).await.map_err(|e| e.to_string())?;
        Ok(pool)
    }
}

impl Drop for ScratchSchema {
    fn drop(&mut self) {
        let (name, url) = (self.name.clone(), self.base_url.clone());
        let tenant_prefix = self.tenant_schema_prefix();
        // Drop runs inside the test's runtime: clean up on a thread with its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&url)
                    .await
                    .map_err(|e| e.to_string())?;
                // Never hang a test on a lock a leaked session holds.
                sqlx::query("SET lock_timeout = '10s'")
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
                )))
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
                let tenants: Vec<(String,)> = sqlx::query_as(
                    "SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, $1)",
                )
                .bind(&tenant_prefix)
                .fetch_all(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
                // In batches: one transaction dropping hundreds of schemas would need more
                // locks than the server's lock table holds.
                for batch in tenants.chunks(20) {
                    let names: Vec<String> = batch.iter().map(|(n,)| format!("\"{n}\"")).collect();
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS {} CASCADE",
                        names.join(", ")
                    )))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                }
                // Dedicated tenants' own databases carry the same prefix.
                let databases: Vec<(String,)> = sqlx::query_as(
                    "SELECT datname::text FROM pg_database WHERE starts_with(datname, $1)",
                )
                .bind(&tenant_prefix)
                .fetch_all(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
                for (database,) in databases {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            })
        });
        if let Ok(Err(err)) = cleanup.join() {
            eprintln!("warning: test schema {} not dropped: {err}", self.name);
        }
    }
}

//! Redis for tests: `TEST_REDIS_URL`, else `REDIS_URL`, else the local
//! `redis://127.0.0.1:6379`. Tests share it through key prefixes of their own; an
//! unreachable server fails the test with a message saying how to start one.

use std::time::Duration;

use uuid::Uuid;

/// The server tests use when nothing else is configured.
pub const DEFAULT_TEST_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The URL of the test Redis, checked to answer PING.
///
/// # Panics
/// When it does not answer, with how to start one.
pub async fn test_redis_url() -> String {
    let url = std::env::var("TEST_REDIS_URL")
        .or_else(|_| std::env::var("REDIS_URL"))
        .unwrap_or_else(|_| DEFAULT_TEST_REDIS_URL.to_owned());
    let answered = async {
        let client = deadpool_redis::redis::Client::open(url.as_str()).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        deadpool_redis::redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .ok()
    };
    match tokio::time::timeout(Duration::from_secs(3), answered).await {
        Ok(Some(pong)) if pong == "PONG" => url,
        _ => panic!(
            "Redis is not reachable for the tests at the test URL. Start the local one \
             (`scripts/test-services.sh`, or `redis-server --daemonize yes --bind 127.0.0.1 \
             --port 6379 --save '' --appendonly no`) or point TEST_REDIS_URL at one"
        ),
    }
}

/// A key prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("tenantd-test:{}:", Uuid::new_v4().simple())
}

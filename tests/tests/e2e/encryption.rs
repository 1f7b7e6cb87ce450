//! Contact emails at rest on PostgreSQL: no plaintext anywhere in the database, an envelope
//! copied to another tenant's row fails loudly instead of decrypting, and key rotation with
//! `tenantd keys rewrap` moves every row to the new key.

use prost_types::FieldMask;
use tenantd_adapters::crypto::KeyRing;
use tenantd_adapters::postgres::testing::ScratchSchema;
use tenantd_domain::ports::{EmailCipher as _, SecretSealer as _, WrappedDataKey};
use tenantd_domain::{ContactEmail, TenantId};
use tenantd_e2e::pb::api_key_service_client::ApiKeyServiceClient;
use tenantd_e2e::pb::{
    ClaimInitialApiKeyRequest, CreateTenantRequest, GetTenantRequest, ListTenantsRequest,
    UpdateTenantRequest,
};
use tenantd_e2e::process::binary;
use tenantd_e2e::spawn::cleared;
use tenantd_e2e::{Backend, TestKeys, TestServer, assert_reason, new_tenant};
use tonic::Code;

async fn dump(url: &str) -> String {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut dump = String::new();
    for (table,) in tables {
        let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT t::text FROM \"{table}\" t"
        )))
        .fetch_all(&pool)
        .await
        .unwrap();
        for (row,) in rows {
            dump.push_str(&row);
            dump.push('\n');
        }
    }
    dump.to_lowercase()
}

/// The ways `email` could appear in a text dump: as text, as bytea hex, as a JSON byte array.
fn encodings(email: &str) -> [String; 3] {
    let lower = email.to_lowercase();
    let hex = lower.bytes().fold(String::new(), |mut out, b| {
        use std::fmt::Write as _;
        let _ = write!(out, "{b:02x}");
        out
    });
    let decimals = lower
        .bytes()
        .take(8)
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(",");
    [lower, hex, decimals]
}

#[tokio::test]
async fn no_contact_email_is_stored_in_plaintext_anywhere() {
    let server = TestServer::start(Backend::Postgres).await.unwrap();
    let mut client = server.tenants().await.unwrap();
    let mut emails = Vec::new();
    for slug in ["alpha", "bravo", "charlie"] {
        let tenant = new_tenant(slug);
        emails.push(tenant.contact_email.clone());
        client
            .create_tenant(CreateTenantRequest {
                tenant: Some(tenant),
                request_id: format!("req-{slug}"),
            })
            .await
            .unwrap();
    }
    let alpha = client
        .list_tenants(ListTenantsRequest {
            contact_email: "OPS@alpha.example".into(),
            ..ListTenantsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tenants;
    assert_eq!(alpha.len(), 1, "the blind index finds the tenant by email");
    let mut change = alpha[0].clone();
    change.contact_email = "Billing.Team@alpha-corp.example".into();
    emails.push(change.contact_email.clone());
    client
        .update_tenant(UpdateTenantRequest {
            tenant: Some(change),
            update_mask: Some(FieldMask {
                paths: vec!["contact_email".into()],
            }),
        })
        .await
        .unwrap();

    let dump = dump(&server.schema().unwrap().url()).await;
    assert!(
        dump.contains("alpha"),
        "the dump has the tenants (slugs are not secret)"
    );
    for email in &emails {
        for form in encodings(email) {
            assert!(
                !dump.contains(&form),
                "{email} found in the database as {form}"
            );
        }
    }
}

#[tokio::test]
async fn an_envelope_copied_to_another_tenant_is_an_internal_error_not_garbage() {
    let server = TestServer::start(Backend::Postgres).await.unwrap();
    let mut client = server.tenants().await.unwrap();
    let victim = server.create_active(new_tenant("victim")).await.unwrap();
    let thief = server.create_active(new_tenant("thief")).await.unwrap();
    let pool = sqlx::PgPool::connect(&server.schema().unwrap().url())
        .await
        .unwrap();
    sqlx::query(
        "UPDATE tenants SET contact_email_sealed = \
         (SELECT contact_email_sealed FROM tenants WHERE tenant_id = $1::uuid) WHERE tenant_id = $2::uuid",
    )
    .bind(&victim.tenant_id)
    .bind(&thief.tenant_id)
    .execute(&pool)
    .await
    .unwrap();
    let status = client
        .get_tenant(GetTenantRequest {
            tenant_id: thief.tenant_id.clone(),
        })
        .await
        .unwrap_err();
    assert_reason(&status, Code::Internal, "INTERNAL");
    assert_eq!(
        status.message(),
        "internal error",
        "no detail leaks to the caller"
    );
    assert!(!status.message().contains("victim.example"));
    let intact = client
        .get_tenant(GetTenantRequest {
            tenant_id: victim.tenant_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        intact.into_inner().tenant.unwrap().contact_email,
        victim.contact_email
    );
}

#[tokio::test]
async fn rewrap_moves_every_row_to_the_new_key_so_the_old_one_can_go() {
    let old = TestKeys::with_ids(&["k1"]);
    let schema = ScratchSchema::create().await.unwrap();
    let schema_url = schema.url();
    let tenant_prefix = schema.tenant_schema_prefix();
    let first = TestServer::start_on_schema(schema, &old).await.unwrap();
    let mut created = Vec::new();
    for i in 0..5 {
        // Provisioned: each also has an admin user in its schema and a sealed first key.
        created.push(
            first
                .create_active(new_tenant(&format!("rot-{i}")))
                .await
                .unwrap(),
        );
    }
    let schema = first.stop().await.unwrap().unwrap();
    // The last tenant as a release before data keys left it.
    let pool = sqlx::PgPool::connect(&schema_url).await.unwrap();
    let legacy = created.last().unwrap();
    let legacy_schema = format!("{tenant_prefix}{}", legacy.tenant_id.replace('-', ""));
    seal_as_before_data_keys(&pool, &old, legacy, &legacy_schema).await;

    let new_key = TestKeys::with_ids(&["k2"]);
    let rotated = TestKeys {
        encryption: format!("{},{}", new_key.encryption, old.encryption),
        blind_index: old.blind_index.clone(),
    };
    let output = cleared(binary().unwrap())
        .args(["keys", "rewrap", "--batch-size", "2"])
        .envs(rotated.env())
        .env("TENANTD_DATABASE_URL", &schema_url)
        .env("TENANTD_TENANT_SCHEMA_PREFIX", &tenant_prefix)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(
            "rewrapped 4 data keys with the primary key; sealed 1 contact emails, 1 tenant user \
             emails and 1 unclaimed first API keys with their tenant's data key"
        ),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );

    assert_every_email_on_a_data_key_wrapped_by(&pool, "k2", 5).await;

    let only_new = TestKeys {
        encryption: new_key.encryption,
        blind_index: old.blind_index,
    };
    let second = TestServer::start_on_schema(schema, &only_new)
        .await
        .unwrap();
    let mut client = second.tenants().await.unwrap();
    let mut keys = ApiKeyServiceClient::new(second.admin_channel().await.unwrap());
    for tenant in &created {
        let schema_name = format!("{tenant_prefix}{}", tenant.tenant_id.replace('-', ""));
        let (key_id,): (String,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT DISTINCT email_key_id FROM \"{schema_name}\".users"
        )))
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            key_id, "tenant-data-key",
            "the admin's email in {schema_name}"
        );
        // The first key's secret (its data key wrapped under k1, or the legacy tenant's
        // sealed by k1 itself) opens with k2 alone.
        let claimed = keys
            .claim_initial_api_key(ClaimInitialApiKeyRequest {
                tenant_id: tenant.tenant_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(claimed.secret.starts_with("tk_"));
    }
    for tenant in created {
        let read = client
            .get_tenant(GetTenantRequest {
                tenant_id: tenant.tenant_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .tenant
            .unwrap();
        assert_eq!(read.contact_email, tenant.contact_email);
    }
}

/// Leaves `tenant` as a release before data keys did: no data key, its contact email, its
/// admin's email (in `schema`) and its unclaimed first key sealed by the ring of `keys`
/// itself.
async fn seal_as_before_data_keys(
    pool: &sqlx::PgPool,
    keys: &TestKeys,
    tenant: &tenantd_e2e::pb::Tenant,
    schema: &str,
) {
    let ring = KeyRing::parse(&keys.encryption, &keys.blind_index).unwrap();
    let id = TenantId::from_uuid(tenant.tenant_id.parse().unwrap()).unwrap();
    let sealed = ring.seal(id, &ContactEmail::parse(&tenant.contact_email).unwrap());
    let (key, key_id, secret): (Vec<u8>, String, Vec<u8>) = sqlx::query_as(
        "SELECT k.data_key_sealed, k.data_key_id, i.secret_sealed \
         FROM tenant_data_keys k JOIN initial_api_keys i USING (tenant_id) \
         WHERE tenant_id = $1::uuid",
    )
    .bind(&tenant.tenant_id)
    .fetch_one(pool)
    .await
    .unwrap();
    let key = WrappedDataKey {
        envelope: key,
        key_id,
    };
    let secret = ring
        .open_secret_with_key(id, Some(&key), "initial_api_key", &secret)
        .unwrap();
    sqlx::query("UPDATE initial_api_keys SET secret_sealed = $2 WHERE tenant_id = $1::uuid")
        .bind(&tenant.tenant_id)
        .bind(ring.seal_secret(id, "initial_api_key", &secret))
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM tenant_data_keys WHERE tenant_id = $1::uuid")
        .bind(&tenant.tenant_id)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE tenants SET contact_email_sealed = $2, contact_email_key_id = $3 \
         WHERE tenant_id = $1::uuid",
    )
    .bind(&tenant.tenant_id)
    .bind(&sealed.envelope)
    .bind(&sealed.key_id)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE \"{schema}\".users SET email_sealed = $1, email_key_id = $2"
    )))
    .bind(&sealed.envelope)
    .bind(&sealed.key_id)
    .execute(pool)
    .await
    .unwrap();
}

/// Every contact email is sealed with its tenant's data key, and the `count` data keys are
/// all wrapped by `ring_key`.
async fn assert_every_email_on_a_data_key_wrapped_by(
    pool: &sqlx::PgPool,
    ring_key: &str,
    count: i64,
) {
    let keys: Vec<(String,)> = sqlx::query_as("SELECT DISTINCT contact_email_key_id FROM tenants")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(
        keys,
        [("tenant-data-key".to_owned(),)],
        "every email on its data key"
    );
    let wrapping: Vec<(String, i64)> =
        sqlx::query_as("SELECT data_key_id, count(*) FROM tenant_data_keys GROUP BY data_key_id")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(
        wrapping,
        [(ring_key.to_owned(), count)],
        "every data key wrapped by {ring_key}"
    );
}

//! `tenantctl api-keys ...`.

use std::io::Read as _;

use clap::Subcommand;
use tenantd_server::proto::api_key_service_client::ApiKeyServiceClient;
use tenantd_server::proto::{
    ApiKey, ClaimInitialApiKeyRequest, CreateApiKeyRequest, ListApiKeysRequest,
    RevokeApiKeyRequest, VerifyApiKeyRequest,
};

use super::{Page, more};
use crate::output::{Printer, Table, time};
use crate::{Connection, Failure};

/// `tenantctl api-keys ...`.
#[derive(Debug, Subcommand)]
pub enum ApiKeys {
    /// Creates an API key; its secret is shown this once.
    Create {
        /// The tenant's id.
        #[arg(long)]
        tenant: String,
        /// A name for people.
        #[arg(long, default_value = "")]
        name: String,
        /// A scope (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// When it stops verifying, RFC 3339 (default: never).
        #[arg(long)]
        expires: Option<String>,
    },
    /// Lists a tenant's API keys.
    List {
        /// The tenant's id.
        #[arg(long)]
        tenant: String,
        /// Also revoked and expired keys.
        #[arg(long)]
        show_inactive: bool,
        #[command(flatten)]
        page: Page,
    },
    /// Revokes an API key.
    Revoke {
        /// The tenant's id.
        #[arg(long)]
        tenant: String,
        /// The key's id.
        key_id: String,
    },
    /// Verifies a presented key (read from stdin with `-`, so it stays out of the shell's
    /// history).
    Verify {
        /// The key, or `-`.
        api_key: String,
    },
    /// Takes the tenant's first admin key, made by provisioning (once).
    Claim {
        /// The tenant's id.
        #[arg(long)]
        tenant: String,
    },
}

fn key_state(key: &ApiKey) -> &'static str {
    let now = chrono::Utc::now().timestamp();
    if key.revoke_time.is_some() {
        "REVOKED"
    } else if key.expire_time.is_some_and(|t| t.seconds <= now) {
        "EXPIRED"
    } else {
        "ACTIVE"
    }
}

fn keys_table(keys: &[ApiKey]) -> Table {
    let mut table = Table::new(&[
        "KEY ID",
        "NAME",
        "STATE",
        "SCOPES",
        "CREATED",
        "EXPIRES",
        "LAST USED",
    ]);
    for key in keys {
        table.row(vec![
            key.key_id.clone(),
            key.display_name.clone(),
            key_state(key).to_owned(),
            key.scopes.join(","),
            time(key.create_time.as_ref()),
            time(key.expire_time.as_ref()),
            time(key.last_used_time.as_ref()),
        ]);
    }
    table
}

/// A new key and its secret, as FIELD / VALUE rows.
fn with_secret(key: Option<&ApiKey>, secret: &str) -> Table {
    let key = key.cloned().unwrap_or_default();
    Table::fields(vec![
        ("key id", key.key_id.clone()),
        ("tenant", key.tenant_id.clone()),
        ("name", key.display_name.clone()),
        ("scopes", key.scopes.join(",")),
        ("expires", time(key.expire_time.as_ref())),
        ("secret (shown once)", secret.to_owned()),
    ])
}

fn timestamp(text: &str) -> Result<prost_types::Timestamp, Failure> {
    let time = chrono::DateTime::parse_from_rfc3339(text)
        .map_err(|e| Failure::Usage(format!("--expires {text:?} is not RFC 3339: {e}")))?;
    Ok(prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

/// Runs an api-keys command.
pub async fn run(
    command: ApiKeys,
    connection: &Connection,
    printer: &Printer,
) -> Result<(), Failure> {
    let mut client = ApiKeyServiceClient::new(connection.channel());
    match command {
        ApiKeys::Create {
            tenant,
            name,
            scopes,
            expires,
        } => {
            let request = CreateApiKeyRequest {
                tenant_id: tenant,
                display_name: name,
                scopes,
                expire_time: expires.as_deref().map(timestamp).transpose()?,
            };
            let created = client.create_api_key(connection.request(request)).await?;
            printer.print(created.get_ref(), |r| {
                with_secret(r.api_key.as_ref(), &r.secret)
            })?;
        }
        ApiKeys::List {
            tenant,
            show_inactive,
            page,
        } => {
            let request = ListApiKeysRequest {
                tenant_id: tenant,
                page_size: page.page_size,
                page_token: page.page_token,
                show_inactive,
            };
            let page = client.list_api_keys(connection.request(request)).await?;
            printer.print(page.get_ref(), |r| keys_table(&r.api_keys))?;
            more(&page.get_ref().next_page_token);
        }
        ApiKeys::Revoke { tenant, key_id } => {
            let request = RevokeApiKeyRequest {
                tenant_id: tenant,
                key_id,
            };
            let revoked = client.revoke_api_key(connection.request(request)).await?;
            printer.print(revoked.get_ref(), |r| keys_table(r.api_key.as_slice()))?;
        }
        ApiKeys::Verify { api_key } => {
            let api_key = if api_key == "-" {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .map_err(|e| Failure::Usage(format!("cannot read the key from stdin: {e}")))?;
                text.trim().to_owned()
            } else {
                api_key
            };
            let verified = client
                .verify_api_key(connection.request(VerifyApiKeyRequest { api_key }))
                .await?;
            printer.print(verified.get_ref(), |r| {
                Table::fields(vec![
                    ("valid", r.valid.to_string()),
                    ("tenant", r.tenant_id.clone()),
                    ("tenant active", r.tenant_active.to_string()),
                    ("key id", r.key_id.clone()),
                    ("scopes", r.scopes.join(",")),
                ])
            })?;
        }
        ApiKeys::Claim { tenant } => {
            let request = ClaimInitialApiKeyRequest { tenant_id: tenant };
            let claimed = client
                .claim_initial_api_key(connection.request(request))
                .await?;
            printer.print(claimed.get_ref(), |r| {
                with_secret(r.api_key.as_ref(), &r.secret)
            })?;
        }
    }
    Ok(())
}

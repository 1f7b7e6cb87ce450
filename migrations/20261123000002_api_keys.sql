-- Tenant API keys: metadata and the SHA-256 of the secret, never the secret itself.
CREATE TABLE api_keys (
    key_id       uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (tenant_id),
    display_name text NOT NULL,
    scopes       text[] NOT NULL DEFAULT '{}',
    secret_hash  bytea NOT NULL CHECK (length(secret_hash) = 32),
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, key_id);

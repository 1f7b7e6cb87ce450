-- Per-tenant data keys (crypto-shredding): one random data key per tenant, kept only
-- wrapped by the key ring (a version-1 envelope bound to the tenant; data_key_id names the
-- ring key that wrapped it, so a rotation rewraps only the rows of older ring keys). A purge
-- destroys the key and keeps the row as its certificate: the envelope and its key id are
-- cleared and destroyed_at is set, and a destroyed key is never made again.
CREATE TABLE tenant_data_keys (
    tenant_id             uuid PRIMARY KEY REFERENCES tenants (tenant_id),
    data_key_sealed       bytea,
    data_key_id           text,
    data_key_created_at   timestamptz NOT NULL,
    data_key_destroyed_at timestamptz,
    CHECK ((data_key_sealed IS NULL) = (data_key_id IS NULL)),
    CHECK ((data_key_sealed IS NULL) = (data_key_destroyed_at IS NOT NULL))
);

CREATE INDEX tenant_data_keys_wrapping_key ON tenant_data_keys (data_key_id)
    WHERE data_key_sealed IS NOT NULL;

-- The control-plane schema: plans, tenants, idempotency records and the lifecycle event
-- log (the transactional outbox). Names are unqualified: the schema is the connection's
-- search_path (public by default).

CREATE TABLE plans (
    plan_id             text PRIMARY KEY,
    display_name        text NOT NULL,
    max_api_keys        integer NOT NULL CHECK (max_api_keys >= 0),
    requests_per_second integer NOT NULL CHECK (requests_per_second >= 0),
    max_users           integer NOT NULL CHECK (max_users >= 0)
);

INSERT INTO plans (plan_id, display_name, max_api_keys, requests_per_second, max_users) VALUES
    ('free',       'Free',       2,   5,    5),
    ('basic',      'Basic',      5,   20,   25),
    ('pro',        'Pro',        20,  100,  250),
    ('enterprise', 'Enterprise', 100, 1000, 10000);

CREATE TABLE tenants (
    tenant_id            uuid PRIMARY KEY,
    slug                 text NOT NULL,
    display_name         text NOT NULL,
    plan_id              text NOT NULL REFERENCES plans (plan_id),
    status               text NOT NULL CHECK (status IN
                             ('PROVISIONING', 'ACTIVE', 'SUSPENDED', 'FAILED', 'CANCELLED', 'DELETED')),
    status_reason        text NOT NULL DEFAULT '',
    status_before_delete text CHECK (status_before_delete IN
                             ('PROVISIONING', 'ACTIVE', 'SUSPENDED', 'FAILED', 'CANCELLED')),
    contact_email        text NOT NULL,
    labels               jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),
    config               jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,
    deleted_at           timestamptz,
    purge_at             timestamptz,
    -- Set when a deleted tenant is purged; the row stays as a tombstone and frees the slug.
    purged_at            timestamptz,
    -- Optimistic concurrency: the etag is derived from it.
    version              bigint NOT NULL CHECK (version >= 1)
);

-- A slug belongs to one tenant until that tenant is purged (soft-deleted ones keep it).
CREATE UNIQUE INDEX tenants_slug_unique ON tenants (slug) WHERE purged_at IS NULL;
-- ListTenants filters; keyset pagination walks tenant_id (UUIDv7, creation order).
CREATE INDEX tenants_status_id ON tenants (status, tenant_id);
CREATE INDEX tenants_plan_id ON tenants (plan_id, tenant_id);
CREATE INDEX tenants_slug_pattern ON tenants (slug text_pattern_ops);
CREATE INDEX tenants_labels ON tenants USING gin (labels jsonb_path_ops);
CREATE INDEX tenants_contact_email ON tenants (lower(contact_email));

-- CreateTenant idempotency: request_id -> fingerprint of the request and the response.
CREATE TABLE idempotency_records (
    request_id  text PRIMARY KEY,
    fingerprint text NOT NULL,
    tenant_id   uuid NOT NULL,
    response    jsonb NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX idempotency_records_expiry ON idempotency_records (expires_at);

-- The lifecycle event log and outbox: written in the same transaction as the change it
-- describes; the Kafka relay publishes rows in event_id order and sets published_at.
CREATE TABLE tenant_events (
    event_id     uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL,
    event_type   text NOT NULL,
    payload      jsonb NOT NULL,
    occurred_at  timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX tenant_events_tenant ON tenant_events (tenant_id, event_id);
CREATE INDEX tenant_events_unpublished ON tenant_events (event_id) WHERE published_at IS NULL;

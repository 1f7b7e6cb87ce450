-- Tenant databases the application owns: where each tenant's data lives, the version of
-- every tenant schema, the migration set replicas have seen, and durable rollouts.

-- Where the tenant's data lives, decided at creation: a tenant database (by its
-- configured name), the tenant's own database on that server when dedicated, and the
-- schema. NULL for tenants created before placements were recorded (the default
-- placement; start-up fills them in).
ALTER TABLE tenants
    ADD COLUMN tenant_database    text,
    ADD COLUMN dedicated_database text,
    ADD COLUMN tenant_schema      text;

-- The version of each tenant's schema, from the moment it is made until it is dropped.
CREATE TABLE tenant_schemas (
    tenant_id     uuid PRIMARY KEY REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    version       integer NOT NULL CHECK (version >= 0),
    migrated_at   timestamptz NOT NULL,
    -- The last migration's failure, until one succeeds.
    last_error    jsonb
);
CREATE INDEX tenant_schemas_by_version ON tenant_schemas (version, tenant_id);

-- Every tenant migration a replica has run with: a replica whose set disagrees with it
-- (an applied file edited or removed) refuses to start.
CREATE TABLE tenant_migrations (
    version    integer PRIMARY KEY CHECK (version > 0),
    name       text NOT NULL,
    checksum   bytea NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenant_schema_rollouts (
    rollout_id        uuid PRIMARY KEY,
    state             text NOT NULL
        CHECK (state IN ('RUNNING', 'PAUSED', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    target_version    integer NOT NULL CHECK (target_version > 0),
    spec              jsonb NOT NULL,
    reason            jsonb,
    accepted_failures bigint NOT NULL DEFAULT 0,
    created_by        text NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    finished_at       timestamptz,
    version           bigint NOT NULL
);
-- One rollout holds the fleet at a time.
CREATE UNIQUE INDEX tenant_schema_rollouts_one_active
    ON tenant_schema_rollouts ((true)) WHERE state IN ('RUNNING', 'PAUSED');

CREATE TABLE tenant_schema_rollout_tenants (
    rollout_id       uuid NOT NULL REFERENCES tenant_schema_rollouts ON DELETE CASCADE,
    tenant_id        uuid NOT NULL,
    wave             smallint NOT NULL CHECK (wave IN (0, 1)),
    position         integer NOT NULL,
    state            text NOT NULL
        CHECK (state IN ('PENDING', 'RUNNING', 'SUCCEEDED', 'SKIPPED', 'FAILED', 'CANCELLED')),
    attempts         integer NOT NULL DEFAULT 0,
    from_version     integer,
    to_version       integer,
    error            jsonb,
    lease_token      uuid,
    lease_owner      text,
    lease_expires_at timestamptz,
    started_at       timestamptz,
    finished_at      timestamptz,
    PRIMARY KEY (rollout_id, tenant_id),
    UNIQUE (rollout_id, wave, position)
);
CREATE INDEX tenant_schema_rollout_tenants_pending
    ON tenant_schema_rollout_tenants (rollout_id, wave, position) WHERE state = 'PENDING';
CREATE INDEX tenant_schema_rollout_tenants_in_flight
    ON tenant_schema_rollout_tenants (lease_expires_at) WHERE state = 'RUNNING';

-- Events about a rollout rather than a tenant: exactly one subject each. (NOT VALID, then
-- validated: existing rows are checked without blocking writers.)
ALTER TABLE tenant_events
    ALTER COLUMN tenant_id DROP NOT NULL,
    ADD COLUMN rollout_id uuid,
    ADD CONSTRAINT tenant_events_one_subject
        CHECK (num_nonnulls(tenant_id, rollout_id) = 1) NOT VALID;
ALTER TABLE tenant_events VALIDATE CONSTRAINT tenant_events_one_subject;
CREATE INDEX tenant_events_unpublished_by_rollout
    ON tenant_events (rollout_id, event_id) WHERE published_at IS NULL AND rollout_id IS NOT NULL;

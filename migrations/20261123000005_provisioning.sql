-- Provisioning (DESIGN.md §4): one run per attempt to bring a tenant to life, its ordered
-- steps, and the records the local providers keep (DNS, billing, the first admin key).

CREATE TABLE provisioning_runs (
    run_id                uuid PRIMARY KEY,
    tenant_id             uuid NOT NULL REFERENCES tenants (tenant_id),
    state                 text NOT NULL CHECK (state IN ('RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    created_at            timestamptz NOT NULL,
    finished_at           timestamptz,
    deadline              timestamptz NOT NULL,
    error_reason          text,
    error_message         text,
    failed_step           text,
    -- Steps of an ended run still to undo, latest first.
    pending_compensation  text[] NOT NULL DEFAULT '{}',
    compensation_attempts integer NOT NULL DEFAULT 0,
    compensation_retry_at timestamptz,
    -- The summary the tenant resource shows, kept with every write of the run.
    current_step          text,
    completed_steps       integer NOT NULL DEFAULT 0,
    total_steps           integer NOT NULL DEFAULT 0,
    -- The job queue: when a worker should look at the run next (NULL: never), and who holds
    -- it until when. lease_token fences writes: a worker whose lease was taken over cannot
    -- write any more.
    due_at                timestamptz,
    lease_owner           text,
    lease_token           uuid,
    lease_expires_at      timestamptz,
    version               bigint NOT NULL CHECK (version >= 1)
);
-- GetProvisioning and the tenant's summary read a tenant's latest run.
CREATE INDEX provisioning_runs_tenant ON provisioning_runs (tenant_id, run_id DESC);
-- Workers claim the run due longest ago.
CREATE INDEX provisioning_runs_due ON provisioning_runs (due_at) WHERE due_at IS NOT NULL;
-- The deadline sweeper.
CREATE INDEX provisioning_runs_deadline ON provisioning_runs (deadline) WHERE state = 'RUNNING';

CREATE TABLE provisioning_steps (
    run_id          uuid NOT NULL REFERENCES provisioning_runs (run_id) ON DELETE CASCADE,
    position        smallint NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('DATABASE', 'DNS', 'CREDENTIALS', 'BILLING', 'NOTIFICATION')),
    state           text NOT NULL CHECK (state IN
                        ('PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED', 'COMPENSATED')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    error_reason    text,
    error_message   text,
    started_at      timestamptz,
    finished_at     timestamptz,
    next_attempt_at timestamptz,
    PRIMARY KEY (run_id, position),
    UNIQUE (run_id, kind)
);

-- The local DNS provider: the control plane as the source of truth of tenant records.
CREATE TABLE dns_records (
    name       text NOT NULL,
    type       text NOT NULL CHECK (type IN ('A', 'AAAA', 'CNAME')),
    value      text NOT NULL,
    ttl        integer NOT NULL CHECK (ttl > 0),
    tenant_id  uuid NOT NULL REFERENCES tenants (tenant_id),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, type)
);
CREATE INDEX dns_records_tenant ON dns_records (tenant_id);

-- The local billing provider: one customer and subscription per tenant.
CREATE TABLE billing_subscriptions (
    tenant_id       uuid PRIMARY KEY REFERENCES tenants (tenant_id),
    customer_id     text NOT NULL UNIQUE,
    subscription_id text NOT NULL UNIQUE,
    plan_id         text NOT NULL REFERENCES plans (plan_id),
    status          text NOT NULL CHECK (status IN ('ACTIVE', 'CANCELLED')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    cancelled_at    timestamptz
);

-- The first admin key of each tenant. Its secret is kept only sealed (AES-GCM, bound to
-- the tenant), until claimed once: claiming sets it to NULL in the same statement.
CREATE TABLE initial_api_keys (
    tenant_id     uuid PRIMARY KEY REFERENCES tenants (tenant_id),
    key_id        uuid NOT NULL REFERENCES api_keys (key_id),
    secret_sealed bytea,
    created_at    timestamptz NOT NULL,
    claimed_at    timestamptz,
    CHECK ((secret_sealed IS NULL) = (claimed_at IS NOT NULL))
);

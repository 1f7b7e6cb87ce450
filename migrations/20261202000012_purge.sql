-- Purges (the end of the offboarding lifecycle): a deleted tenant goes PURGING while its
-- purge run takes it apart, then stays a PURGED tombstone (id, slug, plan, timestamps; no
-- address, labels or configuration) so ids and events stay resolvable.

ALTER TABLE tenants DROP CONSTRAINT tenants_status_check;
ALTER TABLE tenants
    ADD CONSTRAINT tenants_status_check CHECK (status IN
        ('PROVISIONING', 'ACTIVE', 'SUSPENDED', 'FAILED', 'CANCELLED', 'DELETED', 'PURGING',
         'PURGED')) NOT VALID;
ALTER TABLE tenants VALIDATE CONSTRAINT tenants_status_check;

-- A tombstone keeps no address: the sealed email, its key id and its blind index go, and
-- only a tombstone may be without them.
ALTER TABLE tenants
    ALTER COLUMN contact_email_sealed DROP NOT NULL,
    ALTER COLUMN contact_email_key_id DROP NOT NULL,
    ALTER COLUMN contact_email_index DROP NOT NULL;
ALTER TABLE tenants
    ADD CONSTRAINT tenants_contact_email_whole CHECK (
        (contact_email_sealed IS NULL) = (contact_email_key_id IS NULL)
        AND (contact_email_sealed IS NULL) = (contact_email_index IS NULL)
        AND (contact_email_sealed IS NOT NULL OR status = 'PURGED')) NOT VALID;
ALTER TABLE tenants VALIDATE CONSTRAINT tenants_contact_email_whole;

-- A tombstone keeps its slug from new tenants until the sweeper frees it
-- (--purged-slug-reuse-days after the purge): uniqueness now ends with that release, not
-- with the purge. The previous release's index (unique until the purge, a subset of this
-- one) stays until the next release, so its replicas keep answering SLUG_TAKEN during a
-- rolling upgrade.
ALTER TABLE tenants ADD COLUMN slug_released_at timestamptz;
CREATE UNIQUE INDEX tenants_slug_reserved ON tenants (slug) WHERE slug_released_at IS NULL;
-- The sweeper's two questions: whose retention ran out, and whose slug to free.
CREATE INDEX tenants_purgeable ON tenants (purge_at) WHERE status = 'DELETED';
CREATE INDEX tenants_slug_held ON tenants (purged_at)
    WHERE purged_at IS NOT NULL AND slug_released_at IS NULL;

-- The purge step that deletes a tenant's idempotency records finds them by tenant.
CREATE INDEX idempotency_records_tenant ON idempotency_records (tenant_id);

-- One purge per tenant (a purge never fails for good), its steps as a JSON array in
-- execution order ({kind, state, attempts, last_error, started_at, finished_at,
-- next_attempt_at}), and the job-queue columns of provisioning runs: when a worker should
-- look at it next (NULL: done), and who holds it until when (lease_token fences writes).
CREATE TABLE tenant_purges (
    tenant_id        uuid PRIMARY KEY REFERENCES tenants (tenant_id),
    forced           boolean NOT NULL,
    requested_by     text NOT NULL,
    steps            jsonb NOT NULL CHECK (jsonb_typeof(steps) = 'array'),
    created_at       timestamptz NOT NULL,
    finished_at      timestamptz,
    due_at           timestamptz,
    lease_owner      text,
    lease_token      uuid,
    lease_expires_at timestamptz,
    version          bigint NOT NULL CHECK (version >= 1)
);
CREATE INDEX tenant_purges_due ON tenant_purges (due_at) WHERE due_at IS NOT NULL;

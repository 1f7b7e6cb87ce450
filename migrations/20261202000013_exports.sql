-- Exports: one row per ExportTenant request, with the job-queue columns of the other
-- durable runs (due_at: when a worker should look at it next, NULL once it ended; the lease
-- fences writes) and, once it succeeded, the archive it wrote in the export directory.
CREATE TABLE tenant_exports (
    export_id          uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL REFERENCES tenants (tenant_id),
    requested_by       text NOT NULL,
    state              text NOT NULL CHECK (state IN ('RUNNING', 'SUCCEEDED', 'FAILED')),
    attempts           integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    attempt_started_at timestamptz,
    next_attempt_at    timestamptz,
    error_reason       text,
    error_message      text,
    archive_name       text,
    archive_size       bigint,
    archive_sha256     text,
    archive_files      integer,
    -- How far the attempt in flight got: files and bytes spooled so far.
    progress_files     integer NOT NULL DEFAULT 0,
    progress_bytes     bigint NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL,
    finished_at        timestamptz,
    expires_at         timestamptz NOT NULL,
    due_at             timestamptz,
    lease_owner        text,
    lease_token        uuid,
    lease_expires_at   timestamptz,
    version            bigint NOT NULL CHECK (version >= 1),
    -- An archive exactly when the export succeeded.
    CHECK ((archive_name IS NOT NULL) = (state = 'SUCCEEDED'))
);
CREATE INDEX tenant_exports_due ON tenant_exports (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX tenant_exports_expiry ON tenant_exports (expires_at);
CREATE INDEX tenant_exports_tenant ON tenant_exports (tenant_id);

-- One row per RPC, allowed or denied: who, what, about which tenant, with which outcome.
-- Never secrets or email addresses.
CREATE TABLE audit_records (
    audit_id   uuid PRIMARY KEY,
    principal  text NOT NULL,
    method     text NOT NULL,
    tenant_id  uuid,
    code       text NOT NULL,
    at         timestamptz NOT NULL,
    request_id text NOT NULL
);
CREATE INDEX audit_records_tenant ON audit_records (tenant_id, audit_id DESC);
CREATE INDEX audit_records_principal ON audit_records (principal, audit_id DESC);
CREATE INDEX audit_records_at ON audit_records (at);

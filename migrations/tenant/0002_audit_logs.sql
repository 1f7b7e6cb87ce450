-- What happened inside the tenant, for the tenant's own audit trail.
CREATE TABLE audit_logs (
    audit_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     uuid REFERENCES users (user_id),
    action      text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}',
    occurred_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_logs_time ON audit_logs (occurred_at);

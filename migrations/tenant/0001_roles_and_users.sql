-- The tenant's own schema (the DATABASE provisioning step creates it as t_<tenant id> and
-- applies these files in order, with search_path set to it). Names are unqualified.

CREATE TABLE roles (
    role_id     text PRIMARY KEY,
    description text NOT NULL
);

INSERT INTO roles (role_id, description) VALUES
    ('admin',  'Manages the tenant, its users and its settings'),
    ('user',   'Uses the product'),
    ('viewer', 'Reads, never changes');

-- Users of the tenant. Emails are kept as the control plane keeps contact emails: sealed
-- with AES-256-GCM (bound to the tenant) plus an HMAC blind index for exact lookups.
CREATE TABLE users (
    user_id      uuid PRIMARY KEY,
    email_sealed bytea NOT NULL,
    email_key_id text NOT NULL,
    email_index  bytea NOT NULL UNIQUE,
    role_id      text NOT NULL REFERENCES roles (role_id),
    created_at   timestamptz NOT NULL DEFAULT now()
);

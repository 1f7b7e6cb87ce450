-- Contact emails at rest: AES-256-GCM envelopes bound to their tenant, the id of the key
-- that sealed them (so `tenantd keys rewrap` finds rows on old keys), and an HMAC blind
-- index for exact-match lookups. The plaintext column goes away. (No release ever stored
-- plaintext in production; on a non-empty table this migration fails rather than guess.)
DROP INDEX tenants_contact_email;
ALTER TABLE tenants DROP COLUMN contact_email;
ALTER TABLE tenants
    ADD COLUMN contact_email_sealed bytea NOT NULL,
    ADD COLUMN contact_email_key_id text NOT NULL,
    ADD COLUMN contact_email_index bytea NOT NULL CHECK (length(contact_email_index) = 32);
CREATE INDEX tenants_contact_email_index ON tenants (contact_email_index);
CREATE INDEX tenants_contact_email_key ON tenants (contact_email_key_id);

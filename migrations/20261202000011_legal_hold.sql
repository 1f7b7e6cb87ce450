-- A tenant's legal hold: while set, the tenant is never purged (both NULL: not held). The
-- columns are nullable (no table rewrite); the constraint is added unchecked and then
-- validated, as the events migration does.
ALTER TABLE tenants
    ADD COLUMN legal_hold_reason text,
    ADD COLUMN legal_hold_since timestamptz;
ALTER TABLE tenants
    ADD CONSTRAINT tenants_legal_hold_whole
        CHECK ((legal_hold_reason IS NULL) = (legal_hold_since IS NULL)) NOT VALID;
ALTER TABLE tenants VALIDATE CONSTRAINT tenants_legal_hold_whole;

-- A tenant's legal hold: while set, the tenant is never purged (both NULL: not held).
ALTER TABLE tenants
    ADD COLUMN legal_hold_reason text,
    ADD COLUMN legal_hold_since timestamptz,
    ADD CONSTRAINT tenants_legal_hold_whole
        CHECK ((legal_hold_reason IS NULL) = (legal_hold_since IS NULL));

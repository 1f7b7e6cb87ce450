-- Dead letters: an outbox event the broker refuses for itself (too large, an invalid
-- record) or that does not decode is retried a bounded number of times, then moved out of
-- the outbox so that its tenant's later events go on. The event stays in tenant_events (the
-- event log keeps it, and it stays unpublished, so retention never trims it); its row here
-- keeps the relay from claiming it until an operator retries it (the row is deleted).
-- Failed attempts of events still in the outbox are counted on the event itself. (Columns
-- with constant defaults: no table rewrite.)
ALTER TABLE tenant_events
    ADD COLUMN delivery_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN last_delivery_error text;

CREATE TABLE outbox_dead_letters (
    event_id            uuid PRIMARY KEY REFERENCES tenant_events (event_id) ON DELETE CASCADE,
    -- The event's subject, copied for listing one tenant's dead letters.
    tenant_id           uuid,
    rollout_id          uuid,
    delivery_attempts   integer NOT NULL,
    last_delivery_error text NOT NULL,
    dead_lettered_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_dead_letters_tenant ON outbox_dead_letters (tenant_id, event_id)
    WHERE tenant_id IS NOT NULL;

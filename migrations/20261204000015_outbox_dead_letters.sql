-- Dead letters: an outbox event the broker refuses for itself (larger than the producer's
-- limit) or that does not decode is retried a bounded number of times, then taken out of
-- the outbox so that its tenant's later events go on. The event stays in tenant_events (the
-- event log keeps it, and it stays unpublished, so retention never trims it), marked
-- dead_lettered_at: the mark is on the row the relay claims, so a relay whose claim raced
-- with the one that dead-lettered it re-checks it on the row and skips it. Its entry in
-- outbox_dead_letters (for listing) and the mark go when an operator retries it. Failed
-- attempts of events still in the outbox are counted on the event itself. (Columns with
-- constant defaults or none: no table rewrite.)
ALTER TABLE tenant_events
    ADD COLUMN delivery_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN last_delivery_error text,
    ADD COLUMN dead_lettered_at timestamptz;

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

-- The event relay: for each claimed event it asks whether an earlier event of the same
-- tenant is still unpublished (each tenant's events are published in order). This index
-- holds only the unpublished events, so the question costs a few index entries however
-- long the tenant's history is.
CREATE INDEX tenant_events_unpublished_by_tenant
    ON tenant_events (tenant_id, event_id) WHERE published_at IS NULL;

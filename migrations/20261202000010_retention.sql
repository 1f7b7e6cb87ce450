-- Retention trims published events by when they occurred, oldest first, and measures the
-- oldest of them: both read this index (unpublished events, which are never trimmed, are
-- not in it).
CREATE INDEX tenant_events_published_occurred ON tenant_events (occurred_at)
    WHERE published_at IS NOT NULL;

-- Retention trims published events by when they occurred, oldest first, and measures the
-- oldest event: both read this index instead of the whole table.
CREATE INDEX tenant_events_occurred ON tenant_events (occurred_at);

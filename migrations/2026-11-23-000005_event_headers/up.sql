-- The Kafka headers an accepted event kept (a JSON array of {key, value}, bounded by
-- headers.max_bytes; NULL when the record had none) and the value of the configured
-- correlation header (headers.correlation_header).
ALTER TABLE events ADD COLUMN headers jsonb, ADD COLUMN correlation_id text;
-- Audit lookups by correlation id. Partial, so events without one cost no index entry.
CREATE INDEX events_correlation_id ON events (correlation_id) WHERE correlation_id IS NOT NULL;
-- A view's `SELECT *` is expanded when the view is made: make it again so that it shows
-- the new columns (they come last, so the existing ones keep their places).
CREATE OR REPLACE VIEW valid_events AS SELECT * FROM events WHERE is_valid;

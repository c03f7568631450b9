DROP VIEW valid_events;
DROP INDEX events_correlation_id;
ALTER TABLE events DROP COLUMN headers, DROP COLUMN correlation_id;
CREATE VIEW valid_events AS SELECT * FROM events WHERE is_valid;

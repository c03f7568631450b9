DROP TABLE entity_tombstones;
DROP VIEW valid_events;
ALTER TABLE events DROP COLUMN normalized;
CREATE VIEW valid_events AS SELECT * FROM events WHERE is_valid;

DROP INDEX events_late;
ALTER TABLE events DROP COLUMN late;
ALTER TABLE events DROP COLUMN lateness_ms;

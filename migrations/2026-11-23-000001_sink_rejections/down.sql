ALTER TABLE processed_events DROP COLUMN sink_rejected;

-- How late each event arrived (its record's Kafka timestamp, or eventline's receive
-- time, minus its own time) and whether that passed `pipeline.late_after_s`.
ALTER TABLE events ADD COLUMN lateness_ms bigint NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN late boolean NOT NULL DEFAULT false;
CREATE INDEX events_late ON events (event_type) WHERE late;

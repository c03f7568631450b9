-- Why a sink refused the first sighting of an event for good (NULL: it did not).
-- The dedup decision reads it, so replaying that record dead-letters it again
-- (class `sink_rejected`) instead of handing it to the lake as accepted.
ALTER TABLE processed_events ADD COLUMN sink_rejected text;

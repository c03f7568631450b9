-- Invalidations (`is_valid: false`) and deletions (tombstones keyed by event_id).
-- They are recorded on the id's processed_events row, so the dedup decision sees an
-- id's first sighting, invalidation and deletion together, serialised by that row's
-- lock. A retraction can arrive before its event (from another partition): the row
-- then exists without a first sighting until the event arrives.
ALTER TABLE processed_events ALTER COLUMN topic DROP NOT NULL;
ALTER TABLE processed_events ALTER COLUMN "partition" DROP NOT NULL;
ALTER TABLE processed_events ALTER COLUMN "offset" DROP NOT NULL;
ALTER TABLE processed_events ALTER COLUMN payload_hash DROP NOT NULL;
ALTER TABLE processed_events ALTER COLUMN first_seen_at DROP NOT NULL;
ALTER TABLE processed_events
    ADD COLUMN invalidated_topic     text,
    ADD COLUMN invalidated_partition integer,
    ADD COLUMN invalidated_offset    bigint,
    ADD COLUMN invalidated_hash      text,
    ADD COLUMN invalidated_at        timestamptz,
    ADD COLUMN deleted_topic         text,
    ADD COLUMN deleted_partition     integer,
    ADD COLUMN deleted_offset        bigint,
    ADD COLUMN deleted_at            timestamptz;
-- The Postgres writer looks up every id it stores in these: they stay small.
CREATE INDEX processed_events_invalidated ON processed_events (event_id) WHERE invalidated_topic IS NOT NULL;
CREATE INDEX processed_events_deleted ON processed_events (event_id) WHERE deleted_topic IS NOT NULL;

-- A stored event an invalidation took back: when, and by which record.
ALTER TABLE events
    ADD COLUMN is_valid              boolean NOT NULL DEFAULT true,
    ADD COLUMN invalidated_at        timestamptz,
    ADD COLUMN invalidated_topic     text,
    ADD COLUMN invalidated_partition integer,
    ADD COLUMN invalidated_offset    bigint;
CREATE INDEX events_invalid ON events (event_type) WHERE NOT is_valid;

-- The events that count: stored, not invalidated (deleted events are gone).
CREATE VIEW valid_events AS SELECT * FROM events WHERE is_valid;

-- A deletion erases the event's other versions too.
CREATE INDEX conflicts_event_id ON conflicts (event_id);

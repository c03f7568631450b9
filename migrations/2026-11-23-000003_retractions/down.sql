DROP INDEX conflicts_event_id;
DROP VIEW valid_events;
DROP INDEX events_invalid;
ALTER TABLE events
    DROP COLUMN is_valid,
    DROP COLUMN invalidated_at,
    DROP COLUMN invalidated_topic,
    DROP COLUMN invalidated_partition,
    DROP COLUMN invalidated_offset;
DROP INDEX processed_events_invalidated;
DROP INDEX processed_events_deleted;
ALTER TABLE processed_events
    DROP COLUMN invalidated_topic,
    DROP COLUMN invalidated_partition,
    DROP COLUMN invalidated_offset,
    DROP COLUMN invalidated_hash,
    DROP COLUMN invalidated_at,
    DROP COLUMN deleted_topic,
    DROP COLUMN deleted_partition,
    DROP COLUMN deleted_offset,
    DROP COLUMN deleted_at;
DELETE FROM processed_events WHERE topic IS NULL;
ALTER TABLE processed_events ALTER COLUMN topic SET NOT NULL;
ALTER TABLE processed_events ALTER COLUMN "partition" SET NOT NULL;
ALTER TABLE processed_events ALTER COLUMN "offset" SET NOT NULL;
ALTER TABLE processed_events ALTER COLUMN payload_hash SET NOT NULL;
ALTER TABLE processed_events ALTER COLUMN first_seen_at SET NOT NULL;

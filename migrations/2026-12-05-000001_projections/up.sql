-- The payload after its event type's transforms (NULL when none applies: `payload` is
-- then the normalised form too). Current-state tables fold these fields.
ALTER TABLE events ADD COLUMN normalized jsonb;
CREATE OR REPLACE VIEW valid_events AS SELECT * FROM events WHERE is_valid;

-- Tombstones keyed by an entity key (not an event id): the entity's state forgets the
-- events that happened up to `deleted_at` (the tombstone's Kafka timestamp, else when
-- eventline read it). Keyed by the record, so a replayed tombstone is stored once.
CREATE TABLE entity_tombstones (
    topic       text        NOT NULL,
    "partition" integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    entity_key  text        NOT NULL,
    deleted_at  timestamptz NOT NULL,
    PRIMARY KEY (topic, "partition", "offset")
);
CREATE INDEX entity_tombstones_key ON entity_tombstones (entity_key, deleted_at);
-- The current-state tables ({entity}_states) are made at start from the contracts'
-- `x-entity` declarations, not here: which exist depends on the contracts deployed.

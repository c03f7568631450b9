-- The entity a tombstone keyed by an entity key deletes, when it names one (its header
-- `eventline.entity`); NULL: every entity whose state has that key, as before.
ALTER TABLE entity_tombstones ADD COLUMN entity text;

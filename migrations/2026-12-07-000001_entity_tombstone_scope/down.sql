ALTER TABLE entity_tombstones DROP COLUMN entity;

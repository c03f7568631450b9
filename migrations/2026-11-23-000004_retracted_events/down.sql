CREATE INDEX processed_events_invalidated ON processed_events (event_id) WHERE invalidated_topic IS NOT NULL;
CREATE INDEX processed_events_deleted ON processed_events (event_id) WHERE deleted_topic IS NOT NULL;
DROP TABLE retracted_events;

-- The ids that have an invalidation or a deletion recorded on their processed_events
-- row. The Postgres writer joins every id it stores with this table: it stays as small
-- as the number of retractions, so the join is cheap whatever the planner knows about
-- processed_events (a lookup of thousands of ids with `= ANY(...)` in the partial
-- indexes below cost ~30 ms of planning per write, and a sequential scan of
-- processed_events while the table had no statistics yet).
CREATE TABLE retracted_events (
    event_id    uuid PRIMARY KEY,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO retracted_events (event_id)
SELECT event_id FROM processed_events
WHERE invalidated_topic IS NOT NULL OR deleted_topic IS NOT NULL;
DROP INDEX processed_events_invalidated;
DROP INDEX processed_events_deleted;

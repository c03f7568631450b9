DROP TABLE sink_progress;
DROP TABLE outcome_counts;
DROP TABLE conflicts;
DROP TABLE dead_letters;
DROP TABLE events;
DROP TABLE processed_events;

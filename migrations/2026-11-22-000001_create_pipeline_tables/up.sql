-- Where each event_id was first seen: the authority of the dedup decision.
CREATE TABLE processed_events (
    event_id      uuid PRIMARY KEY,
    topic         text        NOT NULL,
    "partition"   integer     NOT NULL,
    "offset"      bigint      NOT NULL,
    payload_hash  text        NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now()
);

-- Every accepted event, exactly once.
CREATE TABLE events (
    event_id        uuid PRIMARY KEY,
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL,
    source          text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    payload         jsonb       NOT NULL,
    payload_hash    text        NOT NULL,
    topic           text        NOT NULL,
    "partition"     integer     NOT NULL,
    "offset"        bigint      NOT NULL,
    kafka_timestamp timestamptz,
    received_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_event_type_occurred_at ON events (event_type, occurred_at);
CREATE INDEX events_occurred_at ON events (occurred_at);

-- Every rejected record, bytes untouched, with the reason and where it came from.
CREATE TABLE dead_letters (
    topic          text        NOT NULL,
    "partition"    integer     NOT NULL,
    "offset"       bigint      NOT NULL,
    record_key     bytea,
    record_value   bytea,
    headers        jsonb       NOT NULL DEFAULT '[]',
    error_class    text        NOT NULL,
    error_message  text        NOT NULL,
    event_type     text,
    schema_version integer,
    rejected_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, "partition", "offset")
);
CREATE INDEX dead_letters_error_class ON dead_letters (error_class, rejected_at);

-- Same event_id, different content: kept for inspection, never stored as an event.
CREATE TABLE conflicts (
    topic           text        NOT NULL,
    "partition"     integer     NOT NULL,
    "offset"        bigint      NOT NULL,
    event_id        uuid        NOT NULL,
    payload         jsonb       NOT NULL,
    payload_hash    text        NOT NULL,
    first_topic     text        NOT NULL,
    first_partition integer     NOT NULL,
    first_offset    bigint      NOT NULL,
    detected_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, "partition", "offset")
);

-- Outcomes per partition, updated in the same transaction as the progress, so
-- accepted + duplicate + conflict + dead_letter = records consumed, exactly.
CREATE TABLE outcome_counts (
    topic       text    NOT NULL,
    "partition" integer NOT NULL,
    outcome     text    NOT NULL,
    count       bigint  NOT NULL,
    PRIMARY KEY (topic, "partition", outcome)
);

-- Each sink's durable progress: the next offset it has not stored yet.
CREATE TABLE sink_progress (
    sink        text        NOT NULL,
    topic       text        NOT NULL,
    "partition" integer     NOT NULL,
    next_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sink, topic, "partition")
);

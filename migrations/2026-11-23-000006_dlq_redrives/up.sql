-- `eventline dlq replay`: each dead letter re-driven, at most once. The row is written
-- in the same transaction that claims the letter, and committed only after the broker
-- confirmed the record it sent (sent_partition, sent_offset: where the copy went).
CREATE TABLE dlq_redrives (
    topic          text        NOT NULL,
    "partition"    integer     NOT NULL,
    "offset"       bigint      NOT NULL,
    redriven_at    timestamptz NOT NULL DEFAULT now(),
    sent_partition integer,
    sent_offset    bigint,
    PRIMARY KEY (topic, "partition", "offset")
);

-- Events the pipeline could not process, with the reason (schemas/rejected_event.v1.avsc), so
-- nothing is dropped silently. Also rows the sink itself could not decode (stage 'sink').
-- A plain MergeTree: a rejection has no id guaranteed unique (edge rejections of one batch may
-- share one), so a redelivered rejection can appear twice; counts here are "at least".
CREATE TABLE IF NOT EXISTS rejected_events
(
    event_id    String,
    product     LowCardinality(String),
    source      LowCardinality(String),
    dialect     LowCardinality(String),
    stage       LowCardinality(String),
    field       Nullable(String),
    reason      String,
    received_at DateTime64(3, 'UTC'),
    payload     String CODEC(ZSTD(1)),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (product, received_at)
;

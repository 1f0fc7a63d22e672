-- Forgotten people (eventpipe/suppression.py): the record of each suppression, beside the
-- compacted suppressions topic the worker reads. Ids are SHA-256 digests of (product, id), never
-- the ids themselves: this table outlives the rows it stands for. One row per change; the newest
-- (changed_at) wins, so a lift is a row with lifted_at set. Replay and redrive read the
-- suppressions in force from here (sinks/store.py), as they read the rest of their state.
CREATE TABLE IF NOT EXISTS suppressions
(
    product        LowCardinality(String),
    person         String,
    ids            Array(String),
    suppressed_at  DateTime64(3, 'UTC'),
    lifted_at      Nullable(DateTime64(3, 'UTC')),
    deleted        Map(String, UInt64),
    changed_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(changed_at)
ORDER BY (product, person)
;

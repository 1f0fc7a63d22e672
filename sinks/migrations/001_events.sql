-- One row per event, as schemas/clean_event.v1.avsc describes it (the columns mirror its fields;
-- tests/unit/test_sinks_clickhouse.py checks they agree).
--
-- Dedupe: ReplacingMergeTree collapses rows whose whole ORDER BY key is equal, and only inside one
-- partition. Copies of one event (a redelivered Kafka message, a replayed raw range, a retried
-- keyed request whose dedupe-table state was lost) share event_id, product and canonical_name.
-- occurred_at is shared too, except for a retried request that sent no timestamp: the dialects
-- then default occurred_at to the receive time, which differs per attempt. Two choices:
--   * key on (product, canonical_name, event_id) only: robust to that, but a time filter then
--     prunes only by month partition and reads every granule of the name in that month;
--   * key on the day too (chosen): dashboards filter product, name, time range, and read only the
--     granules of the days asked for. The cost: copies of a timestamp-less retry whose two
--     attempts fall on either side of a UTC midnight (or of a month, for the partition) stay two
--     rows. That needs a client retry across midnight AND lost Faust dedupe state; accepted.
-- event_id is last, so within (product, name, day) every id is unique after merges / FINAL.
--
-- Version: inserted_at (filled by the server). The newest insert of an event wins, so replaying a
-- range of events.raw through newer rules (renames, later identity links -> person_id) replaces
-- the older row instead of keeping whichever part merged last.
CREATE TABLE IF NOT EXISTS events
(
    event_id       String,
    product        LowCardinality(String),
    source         LowCardinality(String),
    dialect        LowCardinality(String),
    event_type     LowCardinality(String),
    action         LowCardinality(String),
    canonical_name LowCardinality(String),
    name_format    LowCardinality(String),
    occurred_at    DateTime64(3, 'UTC'),
    received_at    DateTime64(3, 'UTC'),
    external_id    Nullable(String),
    subject_type   LowCardinality(Nullable(String)),
    subject_id     Nullable(String),
    user_id        Nullable(String),
    anonymous_id   Nullable(String),
    person_id      String,
    version        LowCardinality(Nullable(String)),
    properties     String CODEC(ZSTD(1)),
    traits         String CODEC(ZSTD(1)),
    inserted_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (product, canonical_name, toDate(occurred_at), event_id)
;

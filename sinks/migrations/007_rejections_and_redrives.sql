-- Rejections a redrive can send again, dedupe notices apart from them, and redrive outcomes.
--
-- rejected_events gains what schemas/rejected_event.v2.avsc adds: the external id (a redriven
-- event keeps its dedupe key) and where the raw record was read. Columns go before inserted_at,
-- so the table still mirrors the schema's field order (tests/unit/test_sinks_clickhouse.py).
ALTER TABLE rejected_events ADD COLUMN IF NOT EXISTS external_id Nullable(String) AFTER payload
;
ALTER TABLE rejected_events ADD COLUMN IF NOT EXISTS source_topic LowCardinality(String) DEFAULT '' AFTER external_id
;
ALTER TABLE rejected_events ADD COLUMN IF NOT EXISTS source_partition Int64 DEFAULT -1 AFTER source_topic
;
ALTER TABLE rejected_events ADD COLUMN IF NOT EXISTS source_offset Int64 DEFAULT -1 AFTER source_partition
;

-- A dropped client retry is not an error: rejected_events means "needs attention", and these
-- (schemas/dedupe_notice.v1.avsc) live here. event_id is the accepted event's (a retry derives
-- the same id from its key). Copies of one notice (a redelivered or replayed record) collapse.
CREATE TABLE IF NOT EXISTS dedupe_notices
(
    event_id          String,
    product           LowCardinality(String),
    source            LowCardinality(String),
    dialect           LowCardinality(String),
    external_id       String,
    received_at       DateTime64(3, 'UTC'),
    first_received_at DateTime64(3, 'UTC'),
    source_topic      LowCardinality(String),
    source_partition  Int64,
    source_offset     Int64,
    inserted_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(received_at)
ORDER BY (product, event_id, received_at)
;

-- Before this migration the agents stored dedupe notices as rejections of stage 'dedupe'. Moved
-- (a rerun of an interrupted migration copies them again; the copies collapse above).
INSERT INTO dedupe_notices (event_id, product, source, dialect, external_id, received_at,
                            first_received_at, source_topic, source_partition, source_offset)
SELECT event_id, product, source, dialect, '', received_at, received_at, '', -1, -1
FROM rejected_events WHERE stage = 'dedupe'
;
DELETE FROM rejected_events WHERE stage = 'dedupe'
;

-- One row per redrive of a rejection (schemas/redrive_outcome.v1.avsc). The rejection is never
-- deleted: rejected_events_status marks it with its latest outcome.
CREATE TABLE IF NOT EXISTS redrives
(
    event_id    String,
    product     LowCardinality(String),
    stage       LowCardinality(String),
    reason      String,
    outcome     LowCardinality(String),
    detail      String,
    redriven_at DateTime64(3, 'UTC'),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (product, event_id, stage, redriven_at)
;

CREATE VIEW IF NOT EXISTS rejected_events_status AS
SELECT
    r.*,
    d.last_outcome AS redrive_outcome,
    d.last_detail AS redrive_detail,
    d.last_at AS redriven_at
FROM rejected_events AS r
LEFT JOIN
(
    SELECT product, event_id, stage, reason,
           argMax(outcome, redriven_at) AS last_outcome,
           argMax(detail, redriven_at) AS last_detail,
           max(redriven_at) AS last_at
    FROM redrives
    GROUP BY product, event_id, stage, reason
) AS d
ON d.product = r.product AND d.event_id = r.event_id AND d.stage = r.stage AND d.reason = r.reason
;

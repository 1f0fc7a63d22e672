-- The rollups dashboards read (the edge's /dashboard, deploy/grafana/): materialized views, so a
-- dashboard never scans raw `events` or `rejected_events` for a count.
--
-- Counts of events and of links are uniqCombined(14) states of their ids, as in the catalog
-- (migration 006): copies of one event (a redelivered Kafka message, a replayed range of
-- events.raw) count once; exact up to about 1,000 per state and within about 1% beyond.
-- Times are whole minutes, hours or days of occurred_at (what the product did when), except
-- rejections (received_at: a rejected event may have no valid time of its own). dateTrunc keeps
-- DateTime64's range (toStartOfHour would clamp a pre-1970 event to 1970).
-- Nothing here may throw on an accepted row, or the sink's insert into `events` would fail too.

-- Events per product, name and minute: the live charts (last hour, last day). Kept 35 days
-- (events_hourly keeps everything); a late event older than that is dropped here at a merge.
CREATE TABLE IF NOT EXISTS events_minutely
(
    product        LowCardinality(String),
    canonical_name LowCardinality(String),
    minute         DateTime64(0, 'UTC'),
    events         AggregateFunction(uniqCombined(14), String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (product, minute, canonical_name)
TTL toDateTime(minute) + INTERVAL 35 DAY
;

CREATE MATERIALIZED VIEW IF NOT EXISTS events_minutely_mv TO events_minutely AS
SELECT
    product,
    canonical_name,
    dateTrunc('minute', occurred_at) AS minute,
    uniqCombinedState(14)(event_id) AS events
FROM events
GROUP BY product, canonical_name, minute
;

-- Events per product, name and hour. Fed from events_minutely (a view on a view's table), not
-- from `events`: its insert is the minutes' already-aggregated block, so the sink's insert into
-- `events` pays for one aggregation of the raw rows, not two.
CREATE TABLE IF NOT EXISTS events_hourly
(
    product        LowCardinality(String),
    canonical_name LowCardinality(String),
    hour           DateTime64(0, 'UTC'),
    events         AggregateFunction(uniqCombined(14), String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (product, hour, canonical_name)
;

CREATE MATERIALIZED VIEW IF NOT EXISTS events_hourly_mv TO events_hourly AS
SELECT
    product,
    canonical_name,
    dateTrunc('hour', minute) AS hour,
    uniqCombinedMergeState(14)(events) AS events
FROM events_minutely
GROUP BY product, canonical_name, hour
;

-- Rejections per product, stage, field and hour of received_at; duplicates dropped by the agents
-- (their own table, dedupe_notices, since migration 007) come in as the stage 'dedupe'. rejected_events keeps every copy of a redelivered rejection, so these
-- are "at least" counts like its own. With the five most frequent reasons and five examples
-- (event id, reason) per group; reasons are cut to 200 characters.
CREATE TABLE IF NOT EXISTS rejections_hourly
(
    product  LowCardinality(String),
    stage    LowCardinality(String),
    field    String,
    hour     DateTime64(0, 'UTC'),
    rejected SimpleAggregateFunction(sum, UInt64),
    reasons  AggregateFunction(topK(5), String),
    examples AggregateFunction(groupArray(5), Tuple(String, String))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (product, hour, stage, field)
;

CREATE MATERIALIZED VIEW IF NOT EXISTS rejections_hourly_mv TO rejections_hourly AS
SELECT
    product,
    stage,
    ifNull(field, '') AS field,
    dateTrunc('hour', received_at) AS hour,
    toUInt64(count()) AS rejected,
    topKState(5)(substring(reason, 1, 200)) AS reasons,
    groupArrayState(5)((event_id, substring(reason, 1, 200))) AS examples
FROM rejected_events
GROUP BY product, stage, field, hour
;

CREATE MATERIALIZED VIEW IF NOT EXISTS dedupe_notices_hourly_mv TO rejections_hourly AS
SELECT
    product,
    'dedupe' AS stage,
    '' AS field,
    dateTrunc('hour', received_at) AS hour,
    toUInt64(count()) AS rejected,
    topKState(5)(concat('duplicate of the event first received at ', toString(first_received_at)))
        AS reasons,
    groupArrayState(5)((event_id, concat('duplicate of the event first received at ',
        toString(first_received_at)))) AS examples
FROM dedupe_notices
GROUP BY product, stage, field, hour
;

-- Identity links per product, status ('linked', 'conflict') and day of linked_at; copies of one
-- link count once.
CREATE TABLE IF NOT EXISTS identity_links_daily
(
    product LowCardinality(String),
    status  LowCardinality(String),
    day     Date32,
    links   AggregateFunction(uniqCombined(14), String, String)
)
ENGINE = AggregatingMergeTree
ORDER BY (product, day, status)
;

CREATE MATERIALIZED VIEW IF NOT EXISTS identity_links_daily_mv TO identity_links_daily AS
SELECT
    product,
    status,
    toDate32(linked_at) AS day,
    uniqCombinedState(14)(anonymous_id, user_id) AS links
FROM identity_links
GROUP BY product, status, day
;

-- Who was active on which day: one row per (product, day, person_id), far fewer than events.
-- person_id is resolved when the worker processed the event; an anonymous id linked later is
-- resolved at query time by active_persons_daily, so a visitor who logged in counts once.
CREATE TABLE IF NOT EXISTS persons_daily
(
    product   LowCardinality(String),
    day       Date32,
    person_id String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (product, day, person_id)
;

CREATE MATERIALIZED VIEW IF NOT EXISTS persons_daily_mv TO persons_daily AS
SELECT product, toDate32(occurred_at) AS day, person_id
FROM events
WHERE person_id != ''
GROUP BY product, day, person_id
;

-- Active persons per product and day, each person resolved through identity links (the first
-- link of an anonymous id wins, as in identity_resolved).
CREATE VIEW IF NOT EXISTS active_persons_daily AS
SELECT
    p.product AS product,
    p.day AS day,
    uniqExact(if(l.linked_user_id != '', l.linked_user_id, p.person_id)) AS persons
FROM persons_daily AS p FINAL
LEFT JOIN identity_resolved AS l
    ON l.product = p.product AND l.anonymous_id = p.person_id
GROUP BY p.product, p.day
;

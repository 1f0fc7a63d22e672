-- The event catalog (document 002): what people wrote about their events (catalog_resources) and
-- what traffic shows (the two observed tables, filled by materialized views on `events`, so the
-- sink and the worker do no per-event work for it). eventpipe/catalog/sql.py reads them together:
-- curated fields win, a discovered and a hand-made entry with one name share one id.
--
-- Hand-made entries and edits, one row per change: the newest revision of an id wins (FINAL). A
-- DELETE writes a row with deleted = 1, so a deleted discovered resource stays hidden until
-- traffic shows it again (received after the deletion).
CREATE TABLE IF NOT EXISTS catalog_resources
(
    product        LowCardinality(String),
    id             String,
    entity_type    LowCardinality(String),
    title          String,
    parent_id      String,
    integration_id String,
    description    String,
    definition     String CODEC(ZSTD(1)),
    pii            Bool,
    verified       Bool,
    published      Bool,
    teams          Array(String),
    owners         Array(String),
    collections    Array(String),
    tags           Array(String),
    subscribers    Array(String),
    created_at     DateTime64(3, 'UTC'),
    updated_at     DateTime64(3, 'UTC'),
    deleted        Bool,
    revision       UInt64
)
ENGINE = ReplacingMergeTree(revision)
ORDER BY (product, id)
;

-- Observed events per hour of occurred_at and version ('' when unversioned). Counts are
-- uniqCombined(14) states of event_id, so copies of one event (redelivery, replay) count once; it
-- is exact up to about 1,000 events per state and within about 1% beyond, in at most ~13 KB.
-- dateTrunc keeps DateTime64's range (toStartOfHour would clamp a pre-1970 event to 1970).
-- Nothing here may throw on an accepted row, or the sink's insert into `events` would fail too.
CREATE TABLE IF NOT EXISTS catalog_event_hourly
(
    product           LowCardinality(String),
    event_type        LowCardinality(String),
    canonical_name    LowCardinality(String),
    version           LowCardinality(String),
    hour              DateTime64(0, 'UTC'),
    sources           SimpleAggregateFunction(groupUniqArrayArray, Array(String)),
    events            AggregateFunction(uniqCombined(14), String),
    first_seen_at     SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_seen_at      SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    first_received_at SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_received_at  SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (product, event_type, canonical_name, version, hour)
;

CREATE MATERIALIZED VIEW IF NOT EXISTS catalog_event_hourly_mv TO catalog_event_hourly AS
SELECT
    product,
    event_type,
    canonical_name,
    ifNull(version, '') AS version,
    dateTrunc('hour', occurred_at) AS hour,
    groupUniqArray(toString(source)) AS sources,
    uniqCombinedState(14)(event_id) AS events,
    min(occurred_at) AS first_seen_at,
    max(occurred_at) AS last_seen_at,
    min(received_at) AS first_received_at,
    max(received_at) AS last_received_at
FROM events
GROUP BY product, event_type, canonical_name, version, hour
;

-- Observed top-level property keys per hour, event and version, with their JSON types
-- (JSONType: Int64, UInt64, Double, String, Bool, Null, Array, Object).
CREATE TABLE IF NOT EXISTS catalog_property_hourly
(
    product           LowCardinality(String),
    canonical_name    LowCardinality(String),
    version           LowCardinality(String),
    property          String,
    hour              DateTime64(0, 'UTC'),
    json_types        SimpleAggregateFunction(groupUniqArrayArray, Array(String)),
    events            AggregateFunction(uniqCombined(14), String),
    first_seen_at     SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_seen_at      SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    first_received_at SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_received_at  SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (product, canonical_name, version, property, hour)
;

CREATE MATERIALIZED VIEW IF NOT EXISTS catalog_property_hourly_mv TO catalog_property_hourly AS
SELECT
    product,
    canonical_name,
    ifNull(version, '') AS version,
    kv.1 AS property,
    dateTrunc('hour', occurred_at) AS hour,
    groupUniqArray(toString(JSONType(kv.2))) AS json_types,
    uniqCombinedState(14)(event_id) AS events,
    min(occurred_at) AS first_seen_at,
    max(occurred_at) AS last_seen_at,
    min(received_at) AS first_received_at,
    max(received_at) AS last_received_at
FROM events
ARRAY JOIN JSONExtractKeysAndValuesRaw(properties) AS kv
GROUP BY product, canonical_name, version, property, hour
;

-- The anomaly rule (document 001: "events which do not contain information typically included
-- within a specific version"), over the last {days} days of occurred_at. Per (event, version), a
-- property is typical when at least {share} of that version's events carry it, and rare when at
-- most 1 - {share} do. An event missing a typical property ('missing') or carrying a rare one
-- ('unexpected') is an anomaly. Unversioned events form their own version ''.
-- Use: SELECT * FROM catalog_anomalies(share = 0.95, days = 30) WHERE product = '…'
CREATE VIEW IF NOT EXISTS catalog_anomalies AS
WITH
    presence AS (
        SELECT p.product AS product, p.canonical_name AS canonical_name, p.version AS version,
               p.property AS property, p.n / t.total AS share
        FROM
        (
            SELECT product, canonical_name, version, property, uniqCombinedMerge(14)(events) AS n
            FROM catalog_property_hourly
            WHERE hour >= toStartOfDay(now()) - toIntervalDay({days:UInt32} - 1)
            GROUP BY product, canonical_name, version, property
        ) AS p
        INNER JOIN
        (
            SELECT product, canonical_name, version, uniqCombinedMerge(14)(events) AS total
            FROM catalog_event_hourly
            WHERE hour >= toStartOfDay(now()) - toIntervalDay({days:UInt32} - 1)
            GROUP BY product, canonical_name, version
        ) AS t
        ON p.product = t.product AND p.canonical_name = t.canonical_name
           AND p.version = t.version
    ),
    rules AS (
        SELECT product, canonical_name, version,
               groupArrayIf(property, share >= {share:Float64}) AS typical,
               groupArrayIf(property, share <= 1 - {share:Float64}) AS rare
        FROM presence
        GROUP BY product, canonical_name, version
    )
SELECT
    e.product AS product,
    e.canonical_name AS canonical_name,
    e.version AS version,
    toDate32(e.occurred_at) AS day,
    a.1 AS kind,
    a.2 AS property,
    count() AS events,
    groupArray(10)(e.event_id) AS example_event_ids
FROM
(
    SELECT product, canonical_name, ifNull(version, '') AS version, occurred_at, event_id,
           JSONExtractKeys(properties) AS keys
    FROM events FINAL
    WHERE occurred_at >= toStartOfDay(now()) - toIntervalDay({days:UInt32} - 1)
) AS e
INNER JOIN rules AS r
    ON e.product = r.product AND e.canonical_name = r.canonical_name AND e.version = r.version
ARRAY JOIN arrayConcat(
    arrayMap(k -> ('missing', k), arrayFilter(k -> NOT has(e.keys, k), r.typical)),
    arrayMap(k -> ('unexpected', k), arrayFilter(k -> has(r.rare, k), e.keys))
) AS a
GROUP BY product, canonical_name, version, day, kind, property
;

-- Each version of each event once (versions ordered as strings: YYYY-MM-DD.XY sorts by date),
-- with its property diff against the previous one: keys seen in this version and never in the
-- previous (added), the reverse (removed), and keys in both whose JSON types differ (changed).
CREATE VIEW IF NOT EXISTS catalog_versions AS
WITH
    vs AS (
        SELECT product, canonical_name, version, min(first_seen_at) AS first_seen_at,
               max(last_seen_at) AS last_seen_at, uniqCombinedMerge(14)(events) AS events
        FROM catalog_event_hourly
        WHERE version != ''
        GROUP BY product, canonical_name, version
    ),
    ps AS (
        SELECT product, canonical_name, version,
               arraySort(groupArray((property, types))) AS props
        FROM
        (
            SELECT product, canonical_name, version, property,
                   arraySort(groupUniqArrayArray(json_types)) AS types
            FROM catalog_property_hourly
            WHERE version != ''
            GROUP BY product, canonical_name, version, property
        )
        GROUP BY product, canonical_name, version
    ),
    ordered AS (
        SELECT vs.product AS product, vs.canonical_name AS canonical_name, vs.version AS version,
               vs.first_seen_at AS first_seen_at, vs.last_seen_at AS last_seen_at,
               vs.events AS events, ps.props AS props,
               row_number() OVER w AS n,
               lagInFrame(vs.version) OVER w AS prev_version,
               lagInFrame(ps.props) OVER w AS prev_props
        FROM vs
        LEFT JOIN ps
            ON vs.product = ps.product AND vs.canonical_name = ps.canonical_name
               AND vs.version = ps.version
        WINDOW w AS (PARTITION BY vs.product, vs.canonical_name ORDER BY vs.version
                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
    )
SELECT
    product,
    canonical_name,
    version,
    if(n = 1, NULL, prev_version) AS previous_version,
    first_seen_at,
    last_seen_at,
    events,
    arrayMap(p -> p.1, props) AS properties,
    arrayFilter(k -> NOT has(arrayMap(p -> p.1, prev_props), k), arrayMap(p -> p.1, props))
        AS added,
    if(n = 1, [], arrayFilter(k -> NOT has(arrayMap(p -> p.1, props), k),
                              arrayMap(p -> p.1, prev_props))) AS removed,
    arrayMap(p -> p.1, arrayFilter(p -> has(arrayMap(q -> q.1, prev_props), p.1)
                                        AND NOT has(prev_props, p), props)) AS changed
FROM ordered
;

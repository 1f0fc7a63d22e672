-- User attribute history: each attribute an event carries (the named dialect's `user` object,
-- `properties.traits` in v1/v2) is valid from the event's time. Filled by a materialized view on
-- `events`, so the sink writes nothing twice; copies of one event collapse on event_id.
CREATE TABLE IF NOT EXISTS user_traits
(
    product     LowCardinality(String),
    user_id     String,
    trait       String,
    value       String,
    valid_from  DateTime64(3, 'UTC'),
    event_id    String,
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
ORDER BY (product, user_id, trait, valid_from, event_id)
;

CREATE MATERIALIZED VIEW IF NOT EXISTS user_traits_mv TO user_traits AS
SELECT
    product,
    person_id AS user_id,
    kv.1 AS trait,
    kv.2 AS value,
    occurred_at AS valid_from,
    event_id
FROM events
ARRAY JOIN JSONExtractKeysAndValuesRaw(traits) AS kv
WHERE traits != '{}' AND person_id != ''
;

-- The current value of each attribute is the one valid from the latest event time, not the one
-- received last: a late (backfilled) event never overwrites a newer value.
CREATE VIEW IF NOT EXISTS user_traits_current AS
SELECT
    product,
    user_id,
    trait,
    argMax(value, valid_from) AS current_value,
    max(valid_from) AS valid_since
FROM user_traits FINAL
GROUP BY product, user_id, trait
;

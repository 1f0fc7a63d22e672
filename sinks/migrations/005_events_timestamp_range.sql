-- The sink inserts clean records as Avro bytes (FORMAT Avro), which ClickHouse stores even when a
-- timestamp lies outside DateTime64's range (the value wraps into a nonsense date). With this
-- constraint such an insert fails instead, and the sink falls back to decoding that batch row by
-- row, where sinks/clickhouse.py refuses the bad record into rejected_events. The bounds are
-- _TS_MIN and _TS_MAX there (tests/unit/test_sinks_clickhouse.py checks they agree).
ALTER TABLE events ADD CONSTRAINT IF NOT EXISTS timestamps_in_range CHECK
    occurred_at BETWEEN toDateTime64('1900-01-01 00:00:00', 3, 'UTC')
                    AND toDateTime64('2299-12-31 23:59:59', 3, 'UTC')
    AND received_at BETWEEN toDateTime64('1900-01-01 00:00:00', 3, 'UTC')
                        AND toDateTime64('2299-12-31 23:59:59', 3, 'UTC')
;

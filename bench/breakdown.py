"""``python -m bench.breakdown [--events N] [--runs R]``: the property breakdown, three ways.

The query: events of one workspace and one name over the last 30 days, counted by the value of
one property. Today ``properties`` is a JSON string, so every row of the slice is parsed
(``JSONExtractString``). Measured against the same rows with, as a column beside it:

* ``JSON``: ClickHouse's JSON type (``properties_json JSON MATERIALIZED properties::JSON``), each
  path a subcolumn of its own, so the query reads the one path it names;
* a materialized column for one frequent property (``prop_plan``, what a migration per frequent
  catalog property would add): the cheapest read, but only for properties chosen in advance;
* ``Map``: ``Map(LowCardinality(String), String)`` of the top-level keys' raw values, which the
  query reads whole (every key and value of the slice) but without parsing JSON.

Each variant is its own table, filled from the same source by ``INSERT … SELECT`` (the time that
takes is the column's cost at insert), merged (``OPTIMIZE … FINAL``), then the query runs ``runs``
times; the median is reported with the bytes and rows ClickHouse says it read (``system.query_log``
is off in chDB, so bytes come from the table's column sizes). The data: N events, half of them
workspace ``w0``'s and the rest of 9 others, 40% of each ``page_viewed``, over the last 60 days,
with properties of 13 keys (~330 bytes) whose ``plan`` takes one of 6 values; the breakdown asks
``w0``'s ``page_viewed`` over 30 days: a tenth of the table.
"""

from __future__ import annotations

import re
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from sinks.clickhouse import connect, migrate

SOURCE = """
INSERT INTO events (event_id, product, source, dialect, event_type, action, canonical_name,
                    name_format, occurred_at, received_at, person_id, properties, traits)
SELECT
    concat('evt_', toString(number)) AS event_id,
    if(number % 2 = 0, 'w0', concat('w', toString(1 + number % 9))) AS product,
    'api', 'v2',
    arrayElement(['page', 'checkout', 'user', 'order', 'search'], 1 + intDiv(number % 100, 20)),
    'x',
    multiIf(number % 100 < 40, 'page_viewed',
            concat('event_', toString(number % 37))) AS canonical_name,
    'unified',
    {now} - toIntervalSecond(number % (60 * 86400)) AS occurred_at,
    {now},
    concat('u', toString(number % 200000)),
    concat('{"plan":"', arrayElement(['free', 'pro', 'team', 'enterprise', 'trial', 'edu'],
                                     1 + (cityHash64(number) % 6)), '"',
           ',"path":"/docs/page/', toString(number % 5000), '"',
           ',"referrer":"https://example.com/', toString(number % 300), '"',
           ',"browser":"', arrayElement(['firefox', 'chrome', 'safari'], 1 + number % 3), '"',
           ',"os":"linux","locale":"en-US","screen_width":', toString(800 + number % 1200),
           ',"duration_ms":', toString(number % 10000),
           ',"ab_group":"', toString(number % 4), '"',
           ',"utm_source":"newsletter","utm_campaign":"c', toString(number % 50), '"',
           ',"session_id":"s', toString(number % 1000000), '"}') AS properties,
    '{}'
FROM numbers({events})
"""

VARIANTS: dict[str, tuple[str, str]] = {
    "string (JSONExtractString)": ("", "JSONExtractString(properties, 'plan')"),
    "JSON type column": (
        "properties_json JSON MATERIALIZED CAST(properties, 'JSON')",
        "toString(properties_json.plan)",
    ),
    "materialized column (plan)": (
        "prop_plan LowCardinality(String) MATERIALIZED JSONExtractString(properties, 'plan')",
        "prop_plan",
    ),
    "Map column": (
        "properties_map Map(LowCardinality(String), String) MATERIALIZED "
        "CAST(JSONExtractKeysAndValuesRaw(properties), 'Map(LowCardinality(String), String)')",
        "trim(BOTH '\"' FROM properties_map['plan'])",
    ),
}

QUERY = """
SELECT {value} AS value, count() AS events
FROM {table}
WHERE product = 'w0' AND canonical_name = 'page_viewed'
  AND occurred_at >= {now} - INTERVAL 30 DAY
GROUP BY value
ORDER BY events DESC
"""


NOW = "toDateTime64('{}', 3, 'UTC')".format(
    datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%d %H:%M:%S")
)
"""One instant for the data and the query's window (``now()`` moves while the variants run)."""


def source(events: int) -> str:
    return SOURCE.replace("{events}", str(int(events))).replace("{now}", NOW)


def measure(events: int, runs: int, directory: Path) -> dict[str, Any]:
    client = connect(f"chdb://{directory / 'ch'}")
    migrate(client)
    # The source: the migrated events table, without its materialized views' own tables
    # mattering (they are written once, here, and never read by the query).
    started = time.perf_counter()
    client.command(source(events))
    base_insert = time.perf_counter() - started
    ddl = client.query("SHOW CREATE TABLE events").result_rows[0][0]
    results: dict[str, Any] = {"events": events, "runs": runs, "variants": {}}
    for i, (name, (column, value)) in enumerate(VARIANTS.items()):
        table = f"events_v{i}"
        create = re.sub(r"^CREATE TABLE \S+", f"CREATE TABLE {table}", ddl, count=1)
        if column:
            create = create.replace("\n)\nENGINE", f",\n    {column}\n)\nENGINE", 1)
        client.command(create)
        started = time.perf_counter()
        client.command(f"INSERT INTO {table} SELECT * FROM events")
        insert_s = time.perf_counter() - started
        client.command(f"OPTIMIZE TABLE {table} FINAL")
        sql = QUERY.format(value=value, table=table, now=NOW)
        answer = client.query(sql).result_rows
        timings = []
        for _ in range(runs):
            started = time.perf_counter()
            client.query(sql)
            timings.append(time.perf_counter() - started)
        sizes = client.query(
            "SELECT name, sum(data_compressed_bytes) FROM system.columns "
            f"WHERE table = '{table}' AND database = currentDatabase() GROUP BY name"
        ).result_rows
        results["variants"][name] = {
            "query_median_s": round(statistics.median(timings), 4),
            "query_runs_s": [round(t, 4) for t in timings],
            "insert_select_s": round(insert_s, 2),
            "column_bytes": {c: int(b) for c, b in sizes if c.startswith("prop")},
            "answer": [list(r) for r in answer],
        }
        client.command(f"DROP TABLE {table}")
    results["source_insert_s"] = round(base_insert, 2)
    return results


def main(
    events: Annotated[int, typer.Option(help="events in the table")] = 5_000_000,
    runs: Annotated[int, typer.Option(help="timed runs of each query")] = 7,
    out: Annotated[Path | None, typer.Option(help="also write the JSON here")] = None,
) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-breakdown-") as d:
        results = measure(events, runs, Path(d))
    base = results["variants"]["string (JSONExtractString)"]["query_median_s"]
    answers = {orjson.dumps(v["answer"]) for v in results["variants"].values()}
    typer.echo(f"property breakdown over {events:,} events (median of {runs} runs):")
    for name, v in results["variants"].items():
        ratio = base / v["query_median_s"] if v["query_median_s"] else float("inf")
        typer.echo(
            f"  {name:28} {v['query_median_s'] * 1000:8.1f} ms  ({ratio:4.1f}x the string's speed)"
            f"   insert of all rows {v['insert_select_s']:6.1f} s   column bytes "
            f"{sum(v['column_bytes'].values()) / 1e6:7.1f} MB"
        )
    typer.echo(f"  same answer from every variant: {len(answers) == 1}")
    if out is not None:
        out.write_text(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    typer.run(main)

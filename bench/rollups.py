"""``python -m bench.rollups [--events N] [--rounds R]``: what migration 007's rollups cost an
insert into ``events``, in-process on chDB (steadier than the sink stage on a busy machine).

The same N rows are inserted into ``events`` in blocks of the sink's batch size
(``EVENTPIPE_SINK_BATCH_SIZE``, 10,000), once with every migration's materialized views, once
with 007's dropped (the catalog's and the user traits' stay, as before 007), alternating ``R``
rounds; the medians in rows/s and their ratio are printed.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from clickhouse_connect.driver.client import Client

from bench.breakdown import source
from eventpipe.settings import Settings
from sinks.clickhouse import connect, migrate

ROLLUP_VIEWS = ("events_minutely_mv", "persons_daily_mv")
"""007's views on ``events`` (events_hourly_mv reads events_minutely: it goes with it)."""


def insert_rate(client: Client, events: int, block: int) -> float:
    client.command("TRUNCATE TABLE events")
    started = time.perf_counter()
    for start in range(0, events, block):
        client.command(
            "INSERT INTO events SELECT * EXCEPT rn FROM src "
            f"WHERE rn >= {start} AND rn < {start + block}"
        )
    return events / (time.perf_counter() - started)


def main(
    events: Annotated[int, typer.Option(help="rows inserted per measurement")] = 500_000,
    rounds: Annotated[int, typer.Option(help="measurements of each")] = 3,
) -> None:
    block = Settings().sink_batch_size
    with tempfile.TemporaryDirectory(prefix="bench-rollups-") as d:
        client = connect(f"chdb://{Path(d) / 'ch'}")
        migrate(client)
        client.command(source(events))
        client.command(
            "CREATE TABLE src ENGINE = MergeTree ORDER BY rn AS "
            "SELECT *, rowNumberInAllBlocks() AS rn FROM events"
        )
        ddl = {v: client.query(f"SHOW CREATE TABLE {v}").result_rows[0][0] for v in ROLLUP_VIEWS}
        with_views, without = [], []
        for _ in range(rounds):
            with_views.append(insert_rate(client, events, block))
            for v in ROLLUP_VIEWS:
                client.command(f"DROP VIEW {v}")
            without.append(insert_rate(client, events, block))
            for v in ROLLUP_VIEWS:
                client.command(ddl[v])
    a, b = statistics.median(with_views), statistics.median(without)
    typer.echo(
        f"insert into events, {events:,} rows in blocks of {block:,} (median of {rounds}):\n"
        f"  with 007's rollups    {a / 1000:7.1f}k rows/s\n"
        f"  without them          {b / 1000:7.1f}k rows/s\n"
        f"  ratio                 {a / b:7.2f}"
    )


if __name__ == "__main__":
    typer.run(main)

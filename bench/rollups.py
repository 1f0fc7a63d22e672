"""``python -m bench.rollups [--events N] [--rounds R] [--block B] [--views SET]``: what the
materialized views on ``events`` cost an insert into it, in-process on chDB (steadier than the
sink stage on a busy machine).

The same N rows are inserted into ``events`` in blocks of ``B`` rows (default: the sink's batch
size, ``EVENTPIPE_SINK_BATCH_SIZE``, 10,000), once with every migration's materialized views,
once with one set of them dropped, alternating ``R`` rounds; the medians in rows/s, the process's
CPU per row (chDB runs in this process: its threads count) and their ratio are printed. The
sets: ``rollups`` (migration 007's, the default), ``catalog`` (006's), ``traits`` (004's) and
``all``. The block size matters as much as the views: each view runs once per inserted block
and writes a part of its own, so ``--block 1000`` (what the sink inserts at a few thousand
events/s, one batch per flush interval) shows the per-block share.
"""

from __future__ import annotations

import resource
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

VIEW_SETS = {
    # 007's views on ``events`` (events_hourly_mv reads events_minutely: it goes with it).
    "rollups": ("events_minutely_mv", "persons_daily_mv"),
    "catalog": ("catalog_event_hourly_mv", "catalog_property_hourly_mv"),
    "traits": ("user_traits_mv",),
}
VIEW_SETS["all"] = tuple(v for views in VIEW_SETS.values() for v in views)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def insert_rate(client: Client, events: int, block: int) -> tuple[float, float]:
    """Rows/s and CPU seconds per row of inserting ``events`` rows in blocks of ``block``
    (the merges the inserts leave behind are not waited for)."""
    client.command("TRUNCATE TABLE events")
    started, cpu = time.perf_counter(), _cpu_s()
    for start in range(0, events, block):
        client.command(
            "INSERT INTO events SELECT * EXCEPT rn FROM src "
            f"WHERE rn >= {start} AND rn < {start + block}"
        )
    return events / (time.perf_counter() - started), (_cpu_s() - cpu) / events


def main(
    events: Annotated[int, typer.Option(help="rows inserted per measurement")] = 500_000,
    rounds: Annotated[int, typer.Option(help="measurements of each")] = 3,
    block: Annotated[int | None, typer.Option(help="rows per insert (default: sink's)")] = None,
    views: Annotated[str, typer.Option(help=" | ".join(VIEW_SETS))] = "rollups",
) -> None:
    if views not in VIEW_SETS:
        raise typer.BadParameter(f"{views!r}: one of {', '.join(VIEW_SETS)}")
    block = block or Settings().sink_batch_size
    dropped = VIEW_SETS[views]
    # chDB may still be merging in the directory when it is removed: that is no failure.
    with tempfile.TemporaryDirectory(prefix="bench-rollups-", ignore_cleanup_errors=True) as d:
        client = connect(f"chdb://{Path(d) / 'ch'}")
        migrate(client)
        client.command(source(events))
        client.command(
            "CREATE TABLE src ENGINE = MergeTree ORDER BY rn AS "
            "SELECT *, rowNumberInAllBlocks() AS rn FROM events"
        )
        ddl = {v: client.query(f"SHOW CREATE TABLE {v}").result_rows[0][0] for v in dropped}
        with_views, without = [], []
        for _ in range(rounds):
            with_views.append(insert_rate(client, events, block))
            for v in dropped:
                client.command(f"DROP VIEW {v}")
            without.append(insert_rate(client, events, block))
            for v in dropped:
                client.command(ddl[v])
    a, b = (statistics.median(r for r, _ in runs) for runs in (with_views, without))
    ca, cb = (statistics.median(c for _, c in runs) * 1e6 for runs in (with_views, without))
    typer.echo(
        f"insert into events, {events:,} rows in blocks of {block:,} (median of {rounds}):\n"
        f"  with every view        {a / 1000:7.1f}k rows/s  {ca:6.1f} us CPU/row\n"
        f"  without {views:<14} {b / 1000:7.1f}k rows/s  {cb:6.1f} us CPU/row\n"
        f"  ratio                  {a / b:7.2f}"
    )


if __name__ == "__main__":
    typer.run(main)

"""Sink stage: ``sinks.sink.Sink`` into chDB vs a bare clickhouse-connect insert of the same rows,
at each of several scales (rows per measurement), so the ratio shows how the sink's cost grows
with the table: one row per scale, each with its own bare insert as the ceiling.

For each scale ``events.clean`` of a fresh broker is filled with N clean records
(``bench.data.clean_records``); each measurement then runs in a fresh process with a fresh chDB
directory (``bench.sink_child``).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.data import clean_records
from bench.kafka_io import fill
from bench.procs import broker, child_env, run_json
from bench.report import StageResult
from eventpipe.codec import CLEAN_EVENT
from eventpipe.settings import Settings
from eventpipe.topics import TopicNames

CHILD_TIMEOUT_S = 900.0


def run(
    workdir: Path, scales: Sequence[int], say: Callable[[str], None]
) -> tuple[list[StageResult], dict[str, Any]]:
    return [_run_scale(workdir, events, say) for events in scales], {}


def _run_scale(workdir: Path, events: int, say: Callable[[str], None]) -> StageResult:
    batch = Settings().sink_batch_size
    with broker("bench-sink.") as (settings, _):
        say(f"sink: filling events.clean with {events} clean records")
        now = int(time.time() * 1000)
        records = clean_records(events, now)
        keyed = ((r["event_id"].encode(), r) for r in records)
        fill(settings, TopicNames.from_settings(settings).clean, CLEAN_EVENT, keyed)
        say("sink: Sink into a fresh chDB")
        with tempfile.TemporaryDirectory(prefix="bench-sink-", dir=workdir) as d:
            sink = run_json(
                [
                    *("-m", "bench.sink_child", "sink", "--bootstrap", settings.bootstrap),
                    *("--prefix", settings.topic_prefix, "--events", str(events), "--dir", d),
                ],
                child_env(),
                workdir / "sink.log",
                timeout_s=CHILD_TIMEOUT_S,
            )
    say("sink ceiling: bare client.insert into a fresh chDB")
    with tempfile.TemporaryDirectory(prefix="bench-bare-", dir=workdir) as d:
        bare = run_json(
            [
                *("-m", "bench.sink_child", "bare", "--events", str(events), "--dir", d),
                *("--batch", str(batch)),
            ],
            child_env(),
            workdir / "sink.log",
            timeout_s=CHILD_TIMEOUT_S,
        )
    return StageResult(
        f"sink: {events:,} rows into ClickHouse (chDB)",
        sink["rows_per_s"],
        "rows/s",
        ceiling=bare["rows_per_s"],
        ceiling_name="bare client.insert",
        min_ratio=0.8,
        details={"sink": sink, "bare_insert": bare, "batch_size": batch, "rows": events},
    )

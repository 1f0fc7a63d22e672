"""One replay measurement in its own process (chDB allows one data path per process).

``python -m bench.replay_child --bootstrap B --prefix P --events N --received-at MS --dir D``:
on a fresh chDB directory, replay the pre-filled ``events.raw`` twice with ``replay.run.replay``:

1. written (``--execute``) into an empty ClickHouse: every row is new, so every record is looked
   up, planned, encoded and published to ``events.clean`` (no sink runs: the figure is the
   replay's own work, not the sink's);
2. the same rows inserted straight into ``events``, then a dry run: every record is looked up,
   its stored row read back and compared (all identical), which is the work of a replay over a
   range that is already stored.

Each figure is records read over the replay's whole run (its consumer's assignment included).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from typing import Any

from rich.console import Console

from bench import data
from bench.data import clean_record
from bench.procs import settings_for
from replay.run import Options, replay
from replay.select import Selection
from sinks.clickhouse import EVENTS, EventWriter, connect, migrate
from sinks.store import EventStore


def _timed(settings: Any, store: EventStore, dry_run: bool) -> dict[str, Any]:
    started = time.perf_counter()
    options = Options(Selection(), dry_run=dry_run, wait_s=0.0)
    result = replay(settings, store, options, console=Console(file=io.StringIO()))
    elapsed = time.perf_counter() - started
    s = result.summary
    return {
        "read": s.read,
        "new": s.new,
        "identical": s.identical,
        "written": s.written,
        "changed": s.changed,
        "changed_columns": dict(s.changed_columns),
        "duplicates": s.duplicates,
        "elapsed_s": elapsed,
        "records_per_s": s.read / elapsed,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--received-at", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--occurred-at", required=True, help="the parent's bench.data.OCCURRED_AT")
    a = p.parse_args()
    data.OCCURRED_AT = a.occurred_at  # the raw records' time: the stored rows must match them
    settings = settings_for(a.bootstrap, a.prefix)
    client = connect(f"chdb://{a.dir}")
    migrate(client)
    store = EventStore(connect(f"chdb://{a.dir}"))
    written = _timed(settings, store, dry_run=False)
    writer = EventWriter(client)
    rows = [EVENTS.row(clean_record(i, a.received_at)) for i in range(a.events)]
    for i in range(0, len(rows), 10_000):
        writer.insert_rows(EVENTS, rows[i : i + 10_000])
    dry = _timed(settings, store, dry_run=True)
    print(json.dumps({"execute_empty": written, "dry_run_stored": dry}))


if __name__ == "__main__":
    main()

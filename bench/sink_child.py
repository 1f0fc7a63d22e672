"""One sink measurement in its own process (chDB allows one data path per process).

``python -m bench.sink_child sink --bootstrap B --prefix P --events N --dir D``: migrate a fresh
chDB directory, run ``sinks.sink.Sink`` on the pre-filled ``events.clean`` until N rows are
inserted; the clock starts when its consumer first returns messages (the group join excluded)
and stops when the sink's row counter reaches N.

``python -m bench.sink_child bare --events N --dir D --batch B``: the same N rows, built by
``sinks.clickhouse.EVENTS.row`` from the same records, inserted with ``client.insert`` in
batches of B (the sink's batch size). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from typing import Any

from confluent_kafka import Consumer
from prometheus_client import CollectorRegistry

from bench.data import clean_records
from bench.procs import settings_for, wait_until
from eventpipe.codec import AvroCodec
from launch.processes import build_sink
from sinks.clickhouse import EVENTS, connect, migrate
from sinks.sink import SinkMetrics


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


class TimedConsumer(Consumer):
    """A confluent consumer that notes when ``consume`` first returned messages."""

    first: float | None = None

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        messages = super().consume(*args, **kwargs)
        if messages and self.first is None:
            self.first = time.perf_counter()
        return messages


def run_sink(a: argparse.Namespace) -> dict[str, Any]:
    settings = settings_for(a.bootstrap, a.prefix, clickhouse_url=f"chdb://{a.dir}")
    client = connect(settings.clickhouse_dsn)
    migrate(client)
    registry = CollectorRegistry()
    consumers: list[TimedConsumer] = []

    def factory(conf: dict[str, Any]) -> Consumer:
        consumers.append(TimedConsumer(conf))
        return consumers[-1]

    metrics = SinkMetrics(registry)
    sink = build_sink(settings, client, metrics=metrics, consumer_factory=factory)
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,), name="sink")

    def rows() -> float:
        return registry.get_sample_value("eventpipe_sink_rows_total", {"table": "events"}) or 0.0

    thread.start()
    try:
        wait_until(lambda: rows() >= a.events, 800, "sink rows", interval_s=0.005)
        end, cpu_end = time.perf_counter(), _cpu()
    finally:
        stop.set()
        thread.join(30)
    first = consumers[0].first
    assert first is not None
    inserts = registry.get_sample_value("eventpipe_sink_insert_seconds_count") or 0.0
    stored = client.query("SELECT count() FROM events").result_rows[0][0]
    return {
        "events": a.events,
        "rows_in_clickhouse": stored,
        "elapsed_s": end - first,
        "rows_per_s": a.events / (end - first),
        "inserts": inserts,
        "process_cpu_s_total": cpu_end,
    }


def run_bare(a: argparse.Namespace) -> dict[str, Any]:
    client = connect(f"chdb://{a.dir}")
    migrate(client)
    now = int(time.time() * 1000)
    codec = AvroCodec()
    # The same rows the sink writes: each record goes through Avro and back like a consumed one.
    records = [codec.decode(codec.encode("eventpipe.CleanEvent", r))[1]
               for r in clean_records(a.events, now)]  # fmt: skip
    rows = [EVENTS.row(r) for r in records]
    columns = list(EVENTS.columns)
    cpu0, t0 = _cpu(), time.perf_counter()
    for start in range(0, len(rows), a.batch):
        client.insert(EVENTS.name, rows[start : start + a.batch], column_names=columns)
    elapsed = time.perf_counter() - t0
    stored = client.query("SELECT count() FROM events").result_rows[0][0]
    return {
        "events": a.events,
        "rows_in_clickhouse": stored,
        "elapsed_s": elapsed,
        "rows_per_s": a.events / elapsed,
        "batch": a.batch,
        "cpu_share": (_cpu() - cpu0) / elapsed,
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.sink_child")
    p.add_argument("mode", choices=["sink", "bare"])
    p.add_argument("--bootstrap", default="")
    p.add_argument("--prefix", default="")
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--batch", type=int, default=10_000)
    a = p.parse_args()
    result = run_sink(a) if a.mode == "sink" else run_bare(a)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

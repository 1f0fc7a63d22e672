"""``eventpipe sink``: the ClickHouse sink as a process of its own, with its metrics served.

Migrations first (idempotent, so several sinks starting at once are safe), then ``/metrics`` and
``/healthz`` on ``EVENTPIPE_METRICS_HOST:EVENTPIPE_SINK_METRICS_PORT`` and the consumer lag of
the sink's group (``eventpipe.lag``), then the sink until SIGTERM or SIGINT.
"""

from __future__ import annotations

import signal
import threading

from eventpipe import garbage_collection
from eventpipe.kafka import ensure_topics
from eventpipe.lag import sink_lag_monitor
from eventpipe.metrics import serve_metrics
from eventpipe.settings import Settings
from launch.processes import build_sink
from sinks.clickhouse import connect, materialize_properties, migrate


def run_sink_process(settings: Settings) -> None:
    ensure_topics(settings)  # a refused login or a missing topic stops the sink here
    client = connect(settings.clickhouse_dsn, ca=settings.clickhouse_ca)
    migrate(client)
    materialize_properties(client, settings.materialized_properties)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = serve_metrics(settings.metrics_host, settings.sink_metrics_port)
    lag = sink_lag_monitor(settings).start()
    sink = build_sink(settings, client)
    garbage_collection.settle()
    try:
        sink.run(stop)
    finally:
        lag.close()
        server.close()

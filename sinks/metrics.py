"""The sink's Prometheus metrics (a registry per instance, so tests and benchmarks can read
their own sink's figures)."""

from __future__ import annotations

import time

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram


class SinkMetrics:
    """The sink's Prometheus metrics, registered once per registry (tests pass their own)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.rows = Counter(
            "eventpipe_sink_rows", "Rows inserted into ClickHouse", ["table"], registry=registry
        )
        self.insert_failures = Counter(
            "eventpipe_sink_insert_failures",
            "Failed ClickHouse inserts that are retried (ClickHouse down or overloaded)",
            registry=registry,
        )
        self.refused_inserts = Counter(
            "eventpipe_sink_refused_inserts",
            "ClickHouse inserts refused for their rows' content (the rows are then bisected)",
            ["table"],
            registry=registry,
        )
        self.rejections_lost = Counter(
            "eventpipe_sink_rejections_lost",
            "Rejections ClickHouse refused even without their payload: logged, not stored",
            registry=registry,
        )
        self.commit_failures = Counter(
            "eventpipe_sink_commit_failures",
            "Partition offset commits that failed",
            ["retryable"],
            registry=registry,
        )
        self.paused = Gauge(
            "eventpipe_sink_paused",
            "1 while the sink's partitions are paused, waiting for ClickHouse or a commit",
            registry=registry,
        )
        self.insert_seconds = Histogram(
            "eventpipe_sink_insert_seconds",
            "Duration of one successful ClickHouse batch insert",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.retries = Counter(
            "eventpipe_sink_retries_total",
            "ClickHouse inserts and offset commits tried again after a failure",
            ["operation"],
            registry=registry,
        )
        self.batch_records = Histogram(
            "eventpipe_sink_batch_records",
            "Messages per batch handed to the insert thread",
            buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 25000),
            registry=registry,
        )
        self.last_commit = Gauge(
            "eventpipe_sink_last_commit_timestamp_seconds",
            "When the sink last committed offsets after ClickHouse accepted a batch (Unix time)",
            registry=registry,
        )
        self._committed_at = time.time()  # from its start: a sink that never commits ages
        self.last_commit.set_function(lambda: self._committed_at)
        self.since_commit = Gauge(
            "eventpipe_sink_seconds_since_last_commit",
            "Seconds since the sink's last successful commit (or its start)",
            registry=registry,
        )
        self.since_commit.set_function(lambda: time.time() - self._committed_at)

    def committed(self) -> None:
        self._committed_at = time.time()


_default_metrics: SinkMetrics | None = None


def default_metrics() -> SinkMetrics:
    """The process-wide metrics on the default registry, created on first use."""
    global _default_metrics
    if _default_metrics is None:
        _default_metrics = SinkMetrics()
    return _default_metrics

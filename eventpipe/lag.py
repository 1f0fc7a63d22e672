"""Consumer lag per partition, as a Prometheus gauge the worker and the sink each export.

Lag is a partition's end offset minus the group's committed offset (nothing committed counts
from 0: both groups read from the earliest offset). The end is the hard part on the embedded
Tansu broker: the high watermark it reports is the first offset of the partition's last batch
+ 1, so a lag computed from it is short by up to a whole batch and reads 0 while records wait.
Under the embedded profile (``eventpipe.broker``: ``read_end_offsets``) the end is read, not
asked for, exactly as the drain reads it (``eventpipe.drain.Offsets.ends``: start at the
watermark - 1, read to the end-of-partition event); a partition whose end is not known within
the probe's time keeps its last figure until the next round. On Kafka the watermark is the end.

Measured in a daemon thread every ``EVENTPIPE_LAG_INTERVAL_S`` with its own admin client and
probe consumer (never the process's own consumer, which must not be moved), so a measurement
costs one offsets request and, on Tansu, one fetch of each partition's last batch.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import structlog
from confluent_kafka import KafkaException
from prometheus_client import Gauge

from eventpipe.drain import TP, Offsets
from eventpipe.kafka_security import librdkafka_security
from eventpipe.settings import Settings
from eventpipe.topics import TopicNames

log = structlog.get_logger(__name__)

WORKER_LAG = Gauge(
    "eventpipe_worker_consumer_lag_records",
    "Records of events.raw past the worker group's committed offset, per partition",
    ["topic", "partition"],
)
SINK_LAG = Gauge(
    "eventpipe_sink_consumer_lag_records",
    "Records of the sink's topics past the sink group's committed offset, per partition",
    ["topic", "partition"],
)


def partition_lags(ends: dict[TP, int], committed: dict[TP, int]) -> dict[TP, int]:
    """Each partition's lag (never negative: a commit may be newer than an end read before it)."""
    return {tp: max(0, end - committed.get(tp, 0)) for tp, end in ends.items()}


class LagMonitor:
    """Sets ``gauge{topic, partition}`` to the lag of ``group`` on ``topics`` every interval."""

    def __init__(self, settings: Settings, group: str, topics: Sequence[str], gauge: Gauge) -> None:
        self._settings = settings
        self._group = group
        self._topics = list(topics)
        self._gauge = gauge
        self._interval_s = settings.lag_interval_s
        self._read_ends = settings.workarounds.read_end_offsets
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lag-{group}", daemon=True)

    def start(self) -> LagMonitor:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def measure(self, offsets: Offsets) -> dict[TP, int]:
        """One measurement, set on the gauge; returns it (per partition)."""
        tps = offsets.partitions(self._topics)
        if self._read_ends:
            ends, _unknown = offsets.ends(tps)  # unknown: the watermark stands in, this round
        else:
            ends = offsets.watermarks(tps)
        lags = partition_lags(ends, offsets.committed(self._group, tps))
        for (topic, partition), n in lags.items():
            self._gauge.labels(topic, str(partition)).set(n)
        return lags

    def _run(self) -> None:
        offsets = Offsets(
            self._settings.bootstrap,
            librdkafka_security(self._settings),
            self._settings.workarounds.fetch_wait_ms,
        )
        try:
            while True:
                try:
                    self.measure(offsets)
                except KafkaException as exc:
                    log.warning("consumer lag unavailable", group=self._group, error=str(exc))
                if self._stop.wait(self._interval_s):
                    return
        finally:
            offsets.close()


def sink_lag_monitor(settings: Settings) -> LagMonitor:
    """The sink group's lag on the three topics it reads (started by whoever runs the sink)."""
    names = TopicNames.from_settings(settings)
    topics = [names.clean, names.rejected, names.identities]
    return LagMonitor(settings, settings.sink_group, topics, SINK_LAG)

"""Draining ``eventpipe dev`` before it stops the embedded broker, which keeps topics in memory:
whatever the worker and the sink have not processed when it stops is gone.

When is everything the edge acknowledged in ClickHouse? When two checks pass, in this order:

1. the worker's consumer group (the Faust app id, ``streams.app.app_id``) has committed, on every
   partition of ``events.raw``, that partition's end. Faust commits a raw offset only after the
   agent's outputs for the records below it were acknowledged by Kafka (``streams.outbox``), so
   then every output of every acknowledged event is in the output topics;
2. the sink's group has committed, on every partition of ``events.clean``, ``events.rejected`` and
   ``identities``, that partition's end. The sink commits only after ClickHouse accepted the rows
   (``sinks.sink``).

Both groups read from the earliest offset, so a partition with nothing committed counts from 0.

The ends must be the real ones. The high watermark Tansu reports (to ListOffsets, so to
``get_watermark_offsets`` too) is the first offset of the partition's last written batch + 1:
after one 10-record batch at 10-19 it says 11, and a check against it would pass with up to a
whole batch per partition unprocessed. So an end is read, not asked for (:meth:`Offsets.ends`): a
consumer starts at that watermark - 1, which is on Tansu the first offset of the last batch (on
Kafka, the last record), reads to librdkafka's end-of-partition event, and the end is the last
offset read + 1. Measured on Tansu 0.6.0: batches at 0-9 and 10-16 give the watermark 11, and the
read from 10 gives 10-16, then the end of partition at 17, which is what the delivery reports
said. A partition whose end-of-partition event does not come within the probe's time is not known
yet (read again on the next round), never taken as done.

An end is final only when nothing writes the topic any more: ``events.raw`` once the HTTP server
has stopped and the edge's producer was flushed (the edge is its only writer in dev), the output
topics once check 1 passed (the worker is their only writer, and it has nothing left to read).
Before that, the output ends are read on every round for the progress line only.

The lag is also the estimate of what a forced or timed-out stop loses: raw records the worker
has not committed, plus clean and rejected records the sink has not (identity links are counted
apart: they are not events). Raw records already processed but not yet committed count as at
risk although their rows may be in: an over-estimate, never an under-estimate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import structlog
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from eventpipe.broker import BrokerProfile, workarounds
from eventpipe.kafka_security import librdkafka_security
from eventpipe.settings import Settings
from eventpipe.topics import TopicNames

log = structlog.get_logger(__name__)

TP = tuple[str, int]
POLL_S = 0.25
"""Between two measurements: the committed offsets move every sink batch (~0.2-0.5 s) and at each
Faust commit (every 2.8 s)."""
PROGRESS_EVERY_S = 1.0
PROBE_TIMEOUT_S = 3.0
REQUEST_TIMEOUT_S = 5.0
EMBEDDED_FETCH_WAIT_MS = workarounds(BrokerProfile.EMBEDDED).fetch_wait_ms
PROBE_GROUP = "eventpipe-drain-probe"
"""librdkafka wants a group id even to assign(); the probe never joins it nor commits."""


class Offsets:
    """Real end offsets (read, see the module docstring) and consumer groups' committed offsets."""

    def __init__(
        self,
        bootstrap: str,
        security: dict[str, Any] | None = None,
        fetch_wait_ms: int | None = EMBEDDED_FETCH_WAIT_MS,
    ) -> None:
        """``security``: the security block as librdkafka properties (``client_config``).
        ``fetch_wait_ms``: the probe's longest fetch wait (None: librdkafka's own). Only dev's
        embedded broker is drained, so by default the embedded profile's; the lag gauges
        (``eventpipe.lag``) pass their broker's."""
        base = {**(security or {}), "bootstrap.servers": bootstrap}
        self._admin = AdminClient(base)
        wait = {} if fetch_wait_ms is None else {"fetch.wait.max.ms": fetch_wait_ms}
        self._probe = Consumer(
            {
                **base,
                "group.id": PROBE_GROUP,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                # The end of a partition is then its high watermark, not the last stable offset
                # (the same here: nothing writes transactionally).
                "isolation.level": "read_uncommitted",
                **wait,
            }
        )

    def partitions(self, topics: Iterable[str]) -> list[TP]:
        meta = self._probe.list_topics(timeout=REQUEST_TIMEOUT_S).topics
        return sorted((t, p) for t in topics if t in meta for p in meta[t].partitions)

    def watermarks(self, tps: Iterable[TP]) -> dict[TP, int]:
        """Each partition's high watermark: its end on Kafka, not on Tansu (see :meth:`ends`)."""
        out: dict[TP, int] = {}
        for t, p in tps:
            _, high = self._probe.get_watermark_offsets(
                TopicPartition(t, p), timeout=REQUEST_TIMEOUT_S, cached=False
            )
            out[(t, p)] = high
        return out

    def ends(
        self, tps: Iterable[TP], timeout_s: float = PROBE_TIMEOUT_S
    ) -> tuple[dict[TP, int], set[TP]]:
        """Each partition's end, and the partitions whose end is not known yet (for those the
        watermark stands in: at most one batch short)."""
        ends: dict[TP, int] = {}
        start: list[TopicPartition] = []
        for t, p in tps:
            low, high = self._probe.get_watermark_offsets(
                TopicPartition(t, p), timeout=REQUEST_TIMEOUT_S, cached=False
            )
            ends[(t, p)] = high
            if high > low:  # on Tansu too: its watermark is 0 only while nothing was written
                start.append(TopicPartition(t, p, max(low, high - 1)))
        pending = {(tp.topic, tp.partition) for tp in start}
        if not start:
            return ends, pending
        self._probe.assign(start)
        try:
            deadline = time.monotonic() + timeout_s
            while pending and time.monotonic() < deadline:
                for msg in self._probe.consume(10_000, 0.05):
                    err = msg.error()
                    if err is not None and err.code() != KafkaError._PARTITION_EOF:
                        if err.fatal():
                            raise KafkaException(err)
                        log.warning("end offset probe error", topic=msg.topic(), error=str(err))
                        continue
                    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                    assert topic is not None and partition is not None and offset is not None
                    if err is None:  # a record: the end is past it
                        ends[(topic, partition)] = max(ends[(topic, partition)], offset + 1)
                    else:  # the end of the partition, at its offset
                        ends[(topic, partition)] = max(ends[(topic, partition)], offset)
                        pending.discard((topic, partition))
        finally:
            self._probe.unassign()
        return ends, pending

    def committed(self, group: str, tps: Iterable[TP]) -> dict[TP, int]:
        """The group's committed offsets; nothing committed is 0 (both groups start earliest)."""
        request = ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for t, p in tps])
        futures = self._admin.list_consumer_group_offsets(
            [request], request_timeout=REQUEST_TIMEOUT_S
        )
        answer = futures[group].result()
        out: dict[TP, int] = {}
        for tp in answer.topic_partitions:
            if tp.error is not None:
                raise KafkaException(tp.error)
            out[(tp.topic, tp.partition)] = max(tp.offset, 0)
        return out

    def close(self) -> None:
        self._probe.close()


def lag(ends: dict[TP, int], committed: dict[TP, int]) -> int:
    """Records at or past the committed offset, summed over the partitions of ``ends``."""
    return sum(max(0, end - committed.get(tp, 0)) for tp, end in ends.items())


@dataclass(frozen=True)
class Lag:
    """What is not processed yet, per topic (records past the consuming group's commit)."""

    raw: int
    clean: int
    rejected: int
    identities: int

    @property
    def events(self) -> int:
        """Acknowledged events not in ClickHouse yet (see the module docstring)."""
        return self.raw + self.clean + self.rejected

    @property
    def sink(self) -> int:
        return self.clean + self.rejected + self.identities

    def fields(self) -> dict[str, int]:
        return {
            "events_left": self.events,
            "worker_lag": self.raw,
            "sink_lag": self.sink,
            "identity_links_left": self.identities,
        }


class Outcome(Enum):
    DRAINED = "drained"
    FORCED = "forced"
    TIMED_OUT = "timed out"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    lag: Lag | None
    """The last measurement (None: the broker never answered one)."""
    waited_s: float


class Drain:
    """The two checks of the module docstring, measured again on every :meth:`measure`."""

    def __init__(self, offsets: Offsets, topics: TopicNames, worker_group: str, sink_group: str):
        self._offsets = offsets
        self._topics = topics
        self._worker_group = worker_group
        self._sink_group = sink_group
        self._raw_ends: dict[TP, int] | None = None
        self._output_ends: dict[TP, int] | None = None

    def measure(self) -> tuple[Lag, bool]:
        """The lag now, and whether both checks passed."""
        o, names = self._offsets, self._topics
        raw_ends, raw_known = self._raw_ends, True
        if raw_ends is None:
            raw_ends, unknown = o.ends(o.partitions([names.raw]))
            raw_known = not unknown
            if raw_known:
                self._raw_ends = raw_ends  # final: the edge, its only writer, has stopped
        raw_lag = lag(raw_ends, o.committed(self._worker_group, raw_ends))
        worker_done = raw_known and raw_lag == 0
        output_ends = self._output_ends
        if output_ends is None:
            output_ends, unknown = o.ends(
                o.partitions([names.clean, names.rejected, names.identities])
            )
            if worker_done and not unknown:
                self._output_ends = output_ends  # final: the worker has nothing left to write
        committed = o.committed(self._sink_group, output_ends)

        def topic_lag(topic: str) -> int:
            return lag({tp: e for tp, e in output_ends.items() if tp[0] == topic}, committed)

        now = Lag(
            raw=raw_lag,
            clean=topic_lag(names.clean),
            rejected=topic_lag(names.rejected),
            identities=topic_lag(names.identities),
        )
        return now, worker_done and self._output_ends is not None and now.sink == 0


def drain(
    settings: Settings, forced: threading.Event, *, worker_group: str, timeout_s: float
) -> Result:
    """Wait until the worker and the sink have processed everything in the broker, at most
    ``timeout_s`` and until ``forced`` is set; log progress every second and the outcome.

    Call it after the edge stopped taking HTTP and flushed its producer, while the worker and
    the sink still run.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    offsets = Offsets(settings.bootstrap, librdkafka_security(settings))
    check = Drain(offsets, TopicNames.from_settings(settings), worker_group, settings.sink_group)
    log.info(
        "draining: waiting for the worker and the sink (Ctrl-C again to stop now)",
        timeout_s=timeout_s,
    )
    last: Lag | None = None
    next_progress = started + PROGRESS_EVERY_S
    try:
        while True:
            try:
                last, done = check.measure()
            except KafkaException as exc:
                log.warning("drain: offsets unavailable", error=str(exc))
                done = False
            now = time.monotonic()
            if done:
                return _end(Outcome.DRAINED, last, started)
            if forced.is_set():
                return _end(Outcome.FORCED, last, started)
            if now >= deadline:
                return _end(Outcome.TIMED_OUT, last, started)
            if now >= next_progress:
                fields = last.fields() if last is not None else {}
                log.info("draining", waited_s=round(now - started, 1), **fields)
                next_progress = now + PROGRESS_EVERY_S
            forced.wait(POLL_S)
    finally:
        offsets.close()


def _end(outcome: Outcome, lag: Lag | None, started: float) -> Result:
    result = Result(outcome, lag, round(time.monotonic() - started, 1))
    if outcome is Outcome.DRAINED:
        log.info("drained: every acknowledged event is in ClickHouse", waited_s=result.waited_s)
        return result
    log.warning(
        f"drain {outcome.value}: stopping; acknowledged events may be lost",
        events_at_risk=lag.events if lag is not None else "unknown",
        identity_links_at_risk=lag.identities if lag is not None else "unknown",
        waited_s=result.waited_s,
    )
    return result

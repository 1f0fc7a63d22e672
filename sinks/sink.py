"""The sink: ``events.clean``, ``identities`` and ``events.rejected`` from Kafka into ClickHouse.

Commit order, for every batch (this order is the pipeline's at-least-once promise):

1. consume up to ``sink_batch_size`` messages, or whatever arrived within ``sink_flush_interval_s``;
   each is decoded and turned into a row here, and one that cannot be (bad bytes, unknown record,
   a value ClickHouse would refuse) becomes a ``rejected_events`` row with the reason: it is
   stored, never dropped and never allowed to stop the loop. Clean events written with the
   newest schema skip the decoding (the fast path): their bytes go to ClickHouse as one Avro
   container (``FORMAT Avro``), and only if ClickHouse refuses it (a corrupt body, a timestamp
   out of range: migration 005) is that batch decoded row by row, as above;
2. insert the rows into ClickHouse (``sinks/batch_insert.py``): ``events``, ``identity_links``,
   then ``rejected_events``. A failure that may pass (ClickHouse down, overloaded) is retried
   with ``eventpipe.retry.backoff`` until it does; rows ClickHouse refuses for their content
   are found by bisecting, and each becomes a ``rejected_events`` row (stage ``sink``, with
   ClickHouse's reason) while the rest go in: one bad row never stops the sink;
3. only after ClickHouse holds every row of the batch (or its rejection), commit the next offset
   of each partition, synchronously, checked partition by partition (``sinks/commits.py``):
   a retriable failure is committed again after a backoff, any other is logged and dropped.

Step 2 runs in a second thread while the loop consumes the next batch (chDB and the HTTP client
release the GIL), so the sink's time per batch is the longer of the two, not their sum: in the
benchmark that took the sink from ~0.55 to ~0.9 of a bare insert. One batch is in flight at a
time: while its insert is retried, the loop fills at most one more batch, then waits; nothing
is committed until ClickHouse has the batch, and commits keep the batches' order.

While it waits (for the insert thread, past ``PAUSE_AFTER_S``, or to retry a commit) the loop
pauses its partitions and keeps polling (``sinks/pausing.py``), so a ClickHouse outage longer than
``sink_max_poll_interval_ms`` does not put the sink out of its group: staying in, it keeps its
partitions and its batch, and nothing is read or inserted twice. Partitions assigned while it
waits are paused too; all are resumed once the waiting batch has been handed on.

A crash between 2 and 3 re-reads the batch: ``events`` is a ReplacingMergeTree on the event id,
so the copies collapse (``FINAL``); ``rejected_events`` may show such a row twice.

Rebalances (cooperative-sticky): rows buffered for a partition being revoked or lost are dropped,
not flushed, and its offsets leave the batch in flight and any commit being retried. They were
not committed, so the new owner reads them again from the committed offset; flushing instead
would block the rebalance for as long as ClickHouse is down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_future
from dataclasses import dataclass
from typing import Any

import structlog
from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from tenacity import RetryError, Retrying, retry_if_result, stop_when_event_set

from eventpipe.codec import CLEAN_EVENT, AvroCodec
from eventpipe.kafka import consumer_config
from eventpipe.retry import backoff
from eventpipe.settings import Settings
from eventpipe.topics import TopicNames
from sinks.batch_insert import Batch, BatchInserter, PartitionBatch
from sinks.clickhouse import EventWriter
from sinks.commits import Offsets, commit_checked
from sinks.metrics import SinkMetrics, default_metrics
from sinks.pausing import PartitionFlow
from sinks.rows import coordinates, decode_row

log = structlog.get_logger(__name__)

MAX_CONSUME = 100_000  # confluent-kafka refuses more than 1,000,000 per consume()
PAUSE_AFTER_S = 1.0
"""How long a ready batch waits for the insert before it pauses (a quarter of
``max.poll.interval.ms`` if that is shorter)."""
POLL_WHILE_WAITING_S = 0.2
"""How often the loop polls its paused consumer while it waits for the insert thread: well
inside any ``max.poll.interval.ms``; the wait itself ends as soon as the insert does."""

__all__ = ["Sink", "SinkMetrics"]


@dataclass
class _InFlight:
    """A batch handed to the insert thread: its outcome, and the offsets to commit after it."""

    inserted: Future[bool]
    offsets: Offsets
    ranges: dict[str, str]


class Sink:
    """One consumer-group member; ``run(stop)`` blocks, so the owner runs it in a thread."""

    def __init__(
        self,
        settings: Settings,
        client: Client,
        codec: AvroCodec,
        *,
        metrics: SinkMetrics | None = None,
        consumer_factory: Callable[[dict[str, Any]], Consumer] = Consumer,
    ) -> None:
        self.settings = settings
        self.codec = codec
        self.metrics = metrics or default_metrics()
        self.inserter = BatchInserter(EventWriter(client), codec, self.metrics)
        self.flow = PartitionFlow(self.metrics)
        self.topics = TopicNames.from_settings(settings)
        self._consumer_factory = consumer_factory
        self._batch: Batch = {}
        self._size = 0
        self._deadline: float | None = None
        self._inflight: _InFlight | None = None
        self._committing: Offsets = {}
        self._pause_after_s = min(PAUSE_AFTER_S, settings.sink_max_poll_interval_ms / 4000)

    # --- the loop ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        conf = consumer_config(
            self.settings,
            self.settings.sink_group,
            **{"max.poll.interval.ms": self.settings.sink_max_poll_interval_ms},
        )
        consumer = self._consumer_factory(conf)
        topics = [self.topics.clean, self.topics.rejected, self.topics.identities]
        consumer.subscribe(
            topics,
            on_assign=self.flow.on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        log.info("sink started", topics=topics)
        inserter = ThreadPoolExecutor(1, thread_name_prefix="sink-insert")
        try:
            while not stop.is_set():
                self._fill(consumer, stop)
                self._advance(consumer, stop, inserter)
            # Stopping: what is buffered goes in too (an insert that fails now is given up).
            self._advance(consumer, stop, inserter, wait=True, force=True)
            self._advance(consumer, stop, inserter, wait=True)
        finally:
            # Whatever is still buffered was not committed: the next owner reads it again.
            self._clear()
            inserter.shutdown(wait=True)
            consumer.close()
            log.info("sink stopped")

    def _ready(self) -> bool:
        """The batch being filled is full, or its first message waited the flush interval."""
        if not self._batch:
            return False
        full = self._size >= self.settings.sink_batch_size
        return full or (self._deadline is not None and time.monotonic() >= self._deadline)

    def _fill(self, consumer: Consumer, stop: threading.Event) -> None:
        """Consume until the batch is ready, or the batch in flight is done (to commit it).

        A ready batch whose predecessor is still being inserted waits for it with the
        partitions paused, polling all the while (see the module docstring).
        """
        while not stop.is_set():
            inflight = self._inflight
            if inflight is not None and inflight.inserted.done():
                return
            if self._ready():
                if inflight is None:
                    return
                if not self.flow.paused:
                    # Most inserts end well within this; a pause would drop the consumer's
                    # prefetched messages, to be fetched again after the resume.
                    wait_for_future([inflight.inserted], timeout=self._pause_after_s)
                    if inflight.inserted.done():
                        continue
                    self.flow.pause(consumer, "waiting for clickhouse")
                wait_for_future([inflight.inserted], timeout=POLL_WHILE_WAITING_S)
                self._poll(consumer, 0)
                continue
            timeout = 0.1
            if self._deadline is not None:
                timeout = max(0.0, min(timeout, self._deadline - time.monotonic()))
            self._poll(consumer, timeout)
            if self._deadline is None and self._batch:
                self._deadline = time.monotonic() + self.settings.sink_flush_interval_s

    def _poll(self, consumer: Consumer, timeout: float) -> None:
        """One consume; every message it returns joins the batch being filled (while paused
        there should be none, but one delivered is one the consumer will not deliver again)."""
        wanted = max(1, min(self.settings.sink_batch_size - self._size, MAX_CONSUME))
        for msg in consumer.consume(wanted, timeout):
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                log.warning("consumer error", error=str(err))
                continue
            self._add(msg)

    def _advance(
        self,
        consumer: Consumer,
        stop: threading.Event,
        inserter: ThreadPoolExecutor,
        *,
        wait: bool = False,
        force: bool = False,
    ) -> None:
        """Commit the batch in flight once inserted (waiting for it if ``wait``), then hand the
        batch being filled to the insert thread if it is ready (or ``force``), and resume."""
        if self._inflight is not None:
            if not (wait or self._inflight.inserted.done()):
                return
            done, self._inflight = self._inflight, None
            if done.inserted.result():
                self._commit(consumer, stop, done.offsets, done.ranges)
        if self._batch and (force or self._ready()):
            batch = self._batch
            ranges = {f"{t}[{p}]": f"{b.first}-{b.next - 1}" for (t, p), b in batch.items()}
            offsets = {tp: b.next for tp, b in batch.items()}
            self.metrics.batch_records.observe(self._size)
            self._clear()
            inserted = inserter.submit(self.inserter.insert, batch, ranges, stop)
            self._inflight = _InFlight(inserted, offsets, ranges)
        self.flow.resume(consumer)

    def _add(self, msg: Message) -> None:
        topic, partition, offset = coordinates(msg)
        part = self._batch.get((topic, partition))
        if part is None:
            part = self._batch[(topic, partition)] = PartitionBatch(first=offset, next=offset + 1)
        part.next = offset + 1
        self._size += 1
        value = msg.value()
        if value is not None and self.codec.is_newest(CLEAN_EVENT, value):
            part.events.append((msg, value))
            return
        table, row = decode_row(self.codec, msg)
        part.rows.setdefault(table.name, []).append((msg, row))

    # --- commit --------------------------------------------------------------------------------

    def _commit(
        self, consumer: Consumer, stop: threading.Event, offsets: Offsets, ranges: dict[str, str]
    ) -> None:
        """Commit the next offsets; what failed retriably is committed again with backoff,
        the partitions paused and polled meanwhile. A partition revoked during the wait leaves
        ``_committing`` (its new owner commits for it); stopping gives up, uncommitted."""
        self._committing = dict(offsets)
        retrying = Retrying(
            wait=backoff(),
            retry=retry_if_result(bool),
            stop=stop_when_event_set(stop),
            sleep=lambda seconds: self._wait_polling(consumer, stop, seconds),
        )
        try:
            retrying(self._commit_pending, consumer)
        except RetryError:
            log.warning("sink stopping with offsets not committed", offsets=ranges)
        finally:
            self._committing = {}

    def _commit_pending(self, consumer: Consumer) -> Offsets:
        """One commit of ``_committing``; returns (and keeps) what is to be retried."""
        self._committing = commit_checked(consumer, self._committing, self.metrics).retry
        if self._committing:
            self.metrics.retries.labels("commit").inc()
        else:
            self.metrics.committed()
        return self._committing

    def _wait_polling(self, consumer: Consumer, stop: threading.Event, seconds: float) -> None:
        self.flow.pause(consumer, "retrying an offset commit")
        deadline = time.monotonic() + seconds
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            self._poll(consumer, min(left, 0.1))

    def _clear(self) -> None:
        self._batch = {}
        self._size = 0
        self._deadline = None

    # --- rebalance -------------------------------------------------------------------------------

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Drop the buffered rows of partitions leaving us (see the module docstring), and their
        offsets from the batch in flight and the commit being retried: the batch's rows go in,
        but the new owner commits for them."""
        log.info("partitions revoked", partitions=[f"{p.topic}[{p.partition}]" for p in partitions])
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._committing.pop(key, None)
            if self._inflight is not None:
                self._inflight.offsets.pop(key, None)
            part = self._batch.pop(key, None)
            if part is not None:
                self._size -= part.size()
                log.info(
                    "revoked partition's buffered rows dropped",
                    topic=tp.topic,
                    partition=tp.partition,
                    offsets=f"{part.first}-{part.next - 1}",
                )

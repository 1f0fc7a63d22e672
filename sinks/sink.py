"""The sink: ``events.clean`` and ``events.rejected`` from Kafka into ClickHouse.

Commit order, for every batch (this order is the pipeline's at-least-once promise):

1. consume up to ``sink_batch_size`` messages, or whatever arrived within ``sink_flush_interval_s``;
   each is decoded and turned into a row here, and one that cannot be (bad bytes, unknown record,
   a value ClickHouse would refuse) becomes a ``rejected_events`` row with the reason: it is
   stored, never dropped and never allowed to stop the loop. Clean events written with the
   newest schema skip the decoding (the fast path): their bytes go to ClickHouse as one Avro
   container (``FORMAT Avro``), and only if ClickHouse refuses it (a corrupt body, a timestamp
   out of range: migration 005) is that batch decoded row by row, as above;
2. insert the rows into ClickHouse: ``events`` first, then ``rejected_events``, each table once
   per batch even across retries; a failed insert is retried with capped exponential backoff;
3. only after ClickHouse accepted every row, commit the next offset of each partition,
   synchronously.

Step 2 runs in a second thread while the loop consumes the next batch (chDB and the HTTP client
release the GIL), so the sink's time per batch is the longer of the two, not their sum: in the
benchmark that took the sink from ~0.55 to ~0.9 of a bare insert. One batch is in flight at a
time: while its insert is retried, the loop fills at most one more batch, then waits; nothing
is committed until ClickHouse has the batch, and commits keep the batches' order.

A crash between 2 and 3 re-reads the batch: ``events`` is a ReplacingMergeTree on the event id,
so the copies collapse (``FINAL``); ``rejected_events`` may show such a row twice.

Rebalances (cooperative-sticky): rows buffered for a partition being revoked or lost are dropped,
not flushed. They were neither inserted nor committed, so the new owner reads them again from the
committed offset; flushing instead would block the rebalance for as long as ClickHouse is down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from eventpipe.codec import CLEAN_EVENT, AvroCodec, CodecError
from eventpipe.event import to_ms
from eventpipe.kafka import consumer_config
from eventpipe.settings import Settings
from eventpipe.topics import TopicNames
from sinks.clickhouse import (
    EVENTS,
    REJECTED,
    TABLES_BY_RECORD,
    EventWriter,
    Table,
    connect,
    migrate,
    timestamp_in_range,
)
from sinks.metrics import SinkMetrics, default_metrics

log = structlog.get_logger(__name__)

BACKOFF_START_S = 0.2
BACKOFF_MAX_S = 5.0
SINK_STAGE = "sink"
MAX_CONSUME = 100_000  # confluent-kafka refuses more than 1,000,000 per consume()


@dataclass
class _PartitionBatch:
    """What one partition contributed to the current batch: rows and the offset range."""

    first: int
    next: int
    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    events: list[tuple[Message, bytes]] = field(default_factory=list)
    """Clean events for the fast path, still encoded: (message, its value)."""


Batch = dict[tuple[str, int], _PartitionBatch]


@dataclass
class _InFlight:
    """A batch handed to the insert thread: its outcome, and the offsets to commit after it."""

    inserted: Future[bool]
    offsets: dict[tuple[str, int], int]
    ranges: dict[str, str]


def _coordinates(msg: Message) -> tuple[str, int, int]:
    """Topic, partition, offset: always set on a consumed message without an error."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


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
        self.writer = EventWriter(client)
        self.codec = codec
        self.metrics = metrics or default_metrics()
        self.topics = TopicNames.from_settings(settings)
        self._consumer_factory = consumer_factory
        self._batch: Batch = {}
        self._size = 0
        self._deadline: float | None = None
        self._inflight: _InFlight | None = None

    # --- the loop ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        consumer = self._consumer_factory(consumer_config(self.settings, self.settings.sink_group))
        consumer.subscribe(
            [self.topics.clean, self.topics.rejected, self.topics.identities],
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        log.info(
            "sink started",
            topics=[self.topics.clean, self.topics.rejected, self.topics.identities],
        )
        inserter = ThreadPoolExecutor(1, thread_name_prefix="sink-insert")
        try:
            while not stop.is_set():
                self._fill(consumer, stop)
                self._advance(consumer, stop, inserter, wait=self._ready())
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
        """Consume until the batch is ready, or the batch in flight is done (to commit it)."""
        while not stop.is_set() and not self._ready():
            if self._inflight is not None and self._inflight.inserted.done():
                return
            timeout = 0.1
            if self._deadline is not None:
                timeout = max(0.0, min(timeout, self._deadline - time.monotonic()))
            wanted = min(self.settings.sink_batch_size - self._size, MAX_CONSUME)
            messages = consumer.consume(wanted, timeout)
            for msg in messages:
                err = msg.error()
                if err is not None:
                    if err.fatal():
                        raise KafkaException(err)
                    log.warning("consumer error", error=str(err))
                    continue
                self._add(msg)
            if self._deadline is None and self._batch:
                self._deadline = time.monotonic() + self.settings.sink_flush_interval_s

    def _advance(
        self,
        consumer: Consumer,
        stop: threading.Event,
        inserter: ThreadPoolExecutor,
        *,
        wait: bool,
        force: bool = False,
    ) -> None:
        """Commit the batch in flight once inserted (waiting for it if ``wait``), then hand the
        batch being filled to the insert thread if it is ready (or ``force``)."""
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
            inserted = inserter.submit(self._insert_batch, batch, ranges, stop)
            self._inflight = _InFlight(inserted, offsets, ranges)

    def _add(self, msg: Message) -> None:
        topic, partition, offset = _coordinates(msg)
        part = self._batch.get((topic, partition))
        if part is None:
            part = self._batch[(topic, partition)] = _PartitionBatch(first=offset, next=offset + 1)
        part.next = offset + 1
        self._size += 1
        value = msg.value()
        if value is not None and self.codec.is_newest(CLEAN_EVENT, value):
            part.events.append((msg, value))
            return
        table, row = self._row(msg)
        part.rows.setdefault(table.name, []).append(row)

    def _row(self, msg: Message) -> tuple[Table, tuple[Any, ...]]:
        """Decode one message into a row of the table its record name selects, or a rejection."""
        value = msg.value()
        try:
            if value is None:
                raise CodecError("message without a value")
            record, data = self.codec.decode(value, millis=True)
            table = TABLES_BY_RECORD.get(record)
            if table is None:
                raise CodecError(f"{record} records are not written by the sink")
            return table, table.row(data)
        except (CodecError, ValueError, TypeError) as exc:
            return REJECTED, self._rejection(msg, f"{type(exc).__name__}: {exc}")

    def _rejection(self, msg: Message, reason: str) -> tuple[Any, ...]:
        topic, partition, offset = _coordinates(msg)
        log.warning(
            "message rejected", topic=topic, partition=partition, offset=offset, reason=reason
        )
        # The Kafka timestamp is the producer's claim: one DateTime64 cannot hold must not make
        # the rejection itself fail (that raised out of the loop and stopped the sink for good).
        _, ts_ms = msg.timestamp()
        received = ts_ms if ts_ms > 0 and timestamp_in_range(ts_ms) else to_ms(datetime.now(UTC))
        return REJECTED.row(
            {
                # The Kafka coordinates identify it: a redelivered copy gets the same id.
                "event_id": f"{topic}/{partition}/{offset}",
                "product": "",
                "source": "",
                "dialect": "",
                "stage": SINK_STAGE,
                "field": None,
                "reason": reason,
                "received_at": received,
                "payload": msg.value() or b"",
            }
        )

    # --- insert, then commit ----------------------------------------------------------------------

    def _insert_batch(self, batch: Batch, ranges: dict[str, str], stop: threading.Event) -> bool:
        """Insert every row of ``batch`` (in the insert thread); False if stopped before."""
        self._insert_encoded_events(batch, ranges)
        pending = list(TABLES_BY_RECORD.values())
        delay = BACKOFF_START_S
        while pending:
            table = pending[0]
            rows = [r for b in batch.values() for r in b.rows.get(table.name, ())]
            try:
                self._insert(table, rows)
            except Exception as exc:
                self.metrics.insert_failures.inc()
                log.error(
                    "clickhouse insert failed",
                    table=table.name,
                    rows=len(rows),
                    offsets=ranges,
                    retry_in_s=delay,
                    error=str(exc),
                )
                if stop.wait(delay):
                    log.warning("sink stopping with an uninserted batch", offsets=ranges)
                    return False
                self.metrics.retries.labels("insert").inc()
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            pending.pop(0)  # inserted: a retry of the next table must not insert it again
        return True

    def _insert_encoded_events(self, batch: Batch, ranges: dict[str, str]) -> None:
        """The fast path: one Avro container insert; on any failure, turn it into rows.

        Failed, the batch's clean events are decoded like every other message (a bad one becomes
        a rejection) and go through the retried row inserts of :meth:`_flush`: if ClickHouse is
        merely down, those retries wait for it, and nothing is inserted twice.
        """
        values = [value for b in batch.values() for _, value in b.events]
        if not values:
            return
        started = time.perf_counter()
        try:
            self.writer.insert_avro(EVENTS, self.codec.container(CLEAN_EVENT, values))
        except Exception as exc:
            log.warning(
                "avro insert refused, decoding the batch row by row",
                rows=len(values),
                offsets=ranges,
                error=str(exc)[:500],
            )
            for part in batch.values():
                for msg, _ in part.events:
                    table, row = self._row(msg)
                    part.rows.setdefault(table.name, []).append(row)
        else:
            self.metrics.insert_seconds.observe(time.perf_counter() - started)
            self.metrics.rows.labels(table=EVENTS.name).inc(len(values))
        for part in batch.values():
            part.events.clear()

    def _insert(self, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        started = time.perf_counter()
        self.writer.insert_rows(table, rows)
        self.metrics.insert_seconds.observe(time.perf_counter() - started)
        self.metrics.rows.labels(table=table.name).inc(len(rows))

    def _commit(
        self,
        consumer: Consumer,
        stop: threading.Event,
        next_offsets: dict[tuple[str, int], int],
        ranges: dict[str, str],
    ) -> None:
        """Commit the next offsets; retry what may pass, give up on what cannot.

        A commit refused because the partitions moved to another member cannot succeed later:
        the new owner re-reads from the last commit and the duplicate rows collapse in
        ``events``. A transient broker error is retried like an insert.
        """
        offsets = [TopicPartition(t, p, o) for (t, p), o in next_offsets.items()]
        if not offsets:
            return
        delay = BACKOFF_START_S
        while True:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
                self.metrics.committed()
                return
            except KafkaException as exc:
                err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                retriable = err is not None and err.retriable()
                log.error(
                    "offset commit failed",
                    offsets=ranges,
                    error=str(exc),
                    retriable=retriable,
                )
                if not retriable or stop.wait(delay):
                    return
                self.metrics.retries.labels("commit").inc()
                delay = min(delay * 2, BACKOFF_MAX_S)

    def _clear(self) -> None:
        self._batch = {}
        self._size = 0
        self._deadline = None

    # --- rebalance -------------------------------------------------------------------------------

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Drop the buffered rows of partitions leaving us (see the module docstring), and their
        offsets from the batch in flight: its rows go in, but the new owner commits for them."""
        for tp in partitions:
            if self._inflight is not None:
                self._inflight.offsets.pop((tp.topic, tp.partition), None)
            part = self._batch.pop((tp.topic, tp.partition), None)
            if part is not None:
                self._size -= sum(len(r) for r in part.rows.values()) + len(part.events)
                log.info(
                    "revoked partition's buffered rows dropped",
                    topic=tp.topic,
                    partition=tp.partition,
                    offsets=f"{part.first}-{part.next - 1}",
                )


def run_sink(settings: Settings, stop: threading.Event, client: Client | None = None) -> None:
    """Migrate, then run one sink until ``stop`` is set (the CLI calls this in a thread).

    ``client`` lets a process that owns a chDB directory (``eventpipe dev``) share its engine;
    without it the sink connects to ``settings.clickhouse_dsn`` itself.
    """
    own = client is None
    ch = connect(settings.clickhouse_dsn) if client is None else client
    try:
        migrate(ch)
        Sink(settings, ch, AvroCodec(settings.schema_registry_url)).run(stop)
    finally:
        if own:
            ch.close()

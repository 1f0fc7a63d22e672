"""One batch into ClickHouse: retried while ClickHouse is down, its refused rows set aside.

Runs in the sink's insert thread. What a failure means comes from :mod:`eventpipe.retry`:

- *retryable* (ClickHouse down, a timeout, too many parts, ...): the same insert is tried again
  with :func:`eventpipe.retry.backoff` until it passes or the sink stops. Only the failed
  insert is tried again, never a table already in, and a block ClickHouse refused was not
  written; the exception is a timeout after the server did write (over HTTP the client cannot
  tell): ``events`` collapses such a copy, ``rejected_events`` may show the row twice.
- *permanent* (ClickHouse refuses the rows' content: a CHECK constraint, a value it cannot
  parse or hold): retrying cannot help, so the batch is bisected. Each half is inserted on its
  own, and a half refused again is split again, until the refused rows stand alone; each of
  those becomes a ``rejected_events`` row (stage ``sink``, ClickHouse's reason, the message's
  bytes) and every other row is in. Bisecting costs about ``2 * log2(n)`` inserts per bad row
  (28 for one bad row in 10,000) where row by row would cost ``n``, and a refusal is rare.

Tables go in this order: ``events``, ``identity_links``, then ``rejected_events``, so that the
rejections of rows refused in the first two go in with the batch's own. A rejection row that
ClickHouse refuses too is written again as the sink's rejection of its message (the Kafka
payload kept), then, refused again, with nothing but the message's coordinates and an ASCII
reason. If even that is refused, the message is logged and counted
(``eventpipe_sink_rejections_lost``) and the batch is done: a rejection must never stop the
sink (its bytes stay in Kafka until retention, at the offset logged).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog
from confluent_kafka import Message
from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception, stop_when_event_set

from eventpipe.codec import CLEAN_EVENT, AvroCodec
from eventpipe.retry import backoff, clickhouse_error_text, clickhouse_retryable
from sinks.clickhouse import EVENTS, REJECTED, TABLES_BY_RECORD, EventWriter, Table
from sinks.metrics import SinkMetrics
from sinks.rows import Entry, coordinates, decode_row, rejection_row

log = structlog.get_logger(__name__)

ROW_TABLES = [t for t in TABLES_BY_RECORD.values() if t is not REJECTED]
"""Every table a message's row goes to, ``rejected_events`` aside: it comes last, with the rows
the others refused."""


@dataclass
class PartitionBatch:
    """What one partition contributed to a batch: rows (with their messages) and the offsets."""

    first: int
    next: int
    rows: dict[str, list[Entry]] = field(default_factory=dict)
    events: list[tuple[Message, bytes]] = field(default_factory=list)
    """Clean events for the fast path, still encoded: (message, its value)."""

    def size(self) -> int:
        return sum(len(r) for r in self.rows.values()) + len(self.events)


Batch = dict[tuple[str, int], PartitionBatch]


class Stopped(Exception):
    """The sink is stopping while ClickHouse still fails: the batch is given up, uncommitted."""


class BatchInserter:
    """Inserts whole batches; ``insert`` returns only once every row is stored or set aside."""

    def __init__(self, writer: EventWriter, codec: AvroCodec, metrics: SinkMetrics) -> None:
        self.writer = writer
        self.codec = codec
        self.metrics = metrics

    def insert(self, batch: Batch, ranges: dict[str, str], stop: threading.Event) -> bool:
        """Insert every row of ``batch``; False if the sink stopped before ClickHouse took it."""
        try:
            self._insert_encoded_events(batch, ranges, stop)
            refused: list[Entry] = []
            for table in ROW_TABLES:
                rows = [e for b in batch.values() for e in b.rows.get(table.name, ())]
                for (msg, _), reason in self._insert_isolating(table, rows, ranges, stop):
                    refused.append((msg, rejection_row(msg, reason)))
            rejections = [e for b in batch.values() for e in b.rows.get(REJECTED.name, ())]
            self._insert_rejections(rejections + refused, ranges, stop)
        except Stopped:
            log.warning("sink stopping with an uninserted batch", offsets=ranges)
            return False
        return True

    def _insert_encoded_events(
        self, batch: Batch, ranges: dict[str, str], stop: threading.Event
    ) -> None:
        """The fast path: one Avro container insert. Refused (not merely failed), the batch's
        clean events are decoded like every other message (a bad one becomes a rejection) and
        go through the row inserts, where ClickHouse's refusals are isolated."""
        values = [value for b in batch.values() for _, value in b.events]
        if not values:
            return
        container = self.codec.container(CLEAN_EVENT, values)
        try:
            self._attempt(
                EVENTS,
                len(values),
                ranges,
                stop,
                lambda: self.writer.insert_avro(EVENTS, container),
            )
        except Stopped:
            raise
        except Exception as exc:  # permanent: _attempt retried every other failure
            log.warning(
                "avro insert refused, decoding the batch row by row",
                rows=len(values),
                offsets=ranges,
                error=clickhouse_error_text(exc)[:500],
            )
            for part in batch.values():
                for msg, _ in part.events:
                    table, row = decode_row(self.codec, msg)
                    part.rows.setdefault(table.name, []).append((msg, row))
        for part in batch.values():
            part.events.clear()

    def _insert_isolating(
        self, table: Table, entries: Sequence[Entry], ranges: dict[str, str], stop: threading.Event
    ) -> list[tuple[Entry, str]]:
        """Insert ``entries``; return those ClickHouse refuses for their content, with its
        reason (bisecting, see the module docstring). Raises :class:`Stopped`."""
        if not entries:
            return []
        rows = [row for _, row in entries]
        try:
            self._attempt(
                table, len(rows), ranges, stop, lambda: self.writer.insert_rows(table, rows)
            )
            return []
        except Stopped:
            raise
        except Exception as exc:  # permanent: _attempt retried every other failure
            self.metrics.refused_inserts.labels(table=table.name).inc()
            if len(entries) == 1:
                reason = f"ClickHouse refused the row: {clickhouse_error_text(exc)}"
                return [(entries[0], reason)]
            log.warning(
                "clickhouse refused rows, bisecting",
                table=table.name,
                rows=len(rows),
                offsets=ranges,
                error=clickhouse_error_text(exc)[:500],
            )
        mid = len(entries) // 2
        return self._insert_isolating(table, entries[:mid], ranges, stop) + self._insert_isolating(
            table, entries[mid:], ranges, stop
        )

    def _insert_rejections(
        self, entries: list[Entry], ranges: dict[str, str], stop: threading.Event
    ) -> None:
        """``rejected_events`` rows, each refused one written again more plainly (twice at most:
        see the module docstring)."""
        refused = self._insert_isolating(REJECTED, entries, ranges, stop)
        for keep_payload in (True, False):
            if not refused:
                return
            entries = [(m, rejection_row(m, why, payload=keep_payload)) for (m, _), why in refused]
            refused = self._insert_isolating(REJECTED, entries, ranges, stop)
        for (msg, _), reason in refused:
            topic, partition, offset = coordinates(msg)
            self.metrics.rejections_lost.inc()
            log.error(
                "rejection refused by clickhouse, not stored",
                topic=topic,
                partition=partition,
                offset=offset,
                reason=reason[:500],
            )

    def _attempt(
        self,
        table: Table,
        rows: int,
        ranges: dict[str, str],
        stop: threading.Event,
        insert: Callable[[], None],
    ) -> None:
        """Run ``insert`` until it passes, retrying what :func:`clickhouse_retryable` allows.

        A permanent failure is raised as it is, on the first try; ``stop`` set during an
        outage raises :class:`Stopped` (the wait between tries ends at once).
        """

        def failed(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self.metrics.insert_failures.inc()
            self.metrics.retries.labels("insert").inc()
            log.error(
                "clickhouse insert failed, retrying",
                table=table.name,
                rows=rows,
                offsets=ranges,
                attempt=state.attempt_number,
                retry_in_s=round(state.upcoming_sleep, 2),
                error=clickhouse_error_text(exc)[:500] if exc else None,
            )

        def sleep(seconds: float) -> None:
            stop.wait(seconds)  # set, it ends the wait at once, and the stop check then stops

        retrying = Retrying(
            wait=backoff(),
            retry=retry_if_exception(clickhouse_retryable),
            stop=stop_when_event_set(stop),
            sleep=sleep,
            before_sleep=failed,
        )
        try:
            for attempt in retrying:
                with attempt:
                    started = time.perf_counter()
                    insert()
        except RetryError as exc:
            raise Stopped() from exc
        self.metrics.insert_seconds.observe(time.perf_counter() - started)
        self.metrics.rows.labels(table=table.name).inc(rows)

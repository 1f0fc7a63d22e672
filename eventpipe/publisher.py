"""Publishing to Kafka from asyncio: an await returns only after the broker acknowledged.

Shared by the edge and the worker's agents. The edge answers 2xx only after the delivery report
(acks=all, idempotent producer); the agents let Faust ack a batch of source records only after
what they produced from it was acknowledged. A batch waits on one future that is resolved when
its last report arrives.

Delivery reports are served on the event loop's own thread (a task polls while anything is
outstanding), not by a poll thread. confluent-kafka takes the GIL once per delivery report: a
poll thread waited up to the interpreter's switch interval (5 ms) for it each time the event
loop was busy, so a batch of 700 outputs took ~125 ms to be reported in the worker against
~5 ms on an idle loop, and the agent sat waiting for it.

A producer whose idempotence state is dead (a fatal error, or a fenced producer id) is replaced
by a new one on the next publish; what it still held fails and is answered 503. On the embedded
Tansu broker this happens after every delivery timeout: librdkafka bumps the producer epoch,
Tansu answers PRODUCER_FENCED (not flagged fatal), and every later send would fail the same way.

Each item's outcome is None (acknowledged) or a :class:`Failure` that says whether a later try
may store it (``eventpipe.retry``): the worker retries only those and turns the others into
rejections, and the edge answers them 503 or a non-retryable error.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from eventpipe.kafka import close_producer, producer_config
from eventpipe.metrics import KAFKA_DELIVERY_SECONDS, KAFKA_PRODUCER_QUEUE, labelled
from eventpipe.retry import KAFKA_TOO_LARGE, kafka_retryable, produce_exception_retryable
from eventpipe.settings import Settings

log = structlog.get_logger(__name__)

FENCED = frozenset(
    {
        KafkaError.PRODUCER_FENCED,
        KafkaError._FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.INVALID_PRODUCER_ID_MAPPING,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
    }
)
"""Errors after which, on the embedded broker, this producer's idempotence state is dead and every
later send fails too (``eventpipe.broker``: ``replace_fenced_producer``)."""


POLL_INTERVAL_S = 0.001
"""How often delivery reports are served while some are outstanding: a bound on the latency it
adds to an acknowledgement, at about one short loop callback per millisecond."""


def _needs_new_producer(err: KafkaError, replace_fenced: bool) -> bool:
    return bool(err.fatal()) or (replace_fenced and err.code() in FENCED)


ANY_PARTITION = -1
"""Let the producer's partitioner (murmur2 of the key) choose the partition."""


@dataclass(frozen=True, slots=True)
class Failure:
    """Why Kafka did not store one item, and whether the same item may be stored on a later
    try (``eventpipe.retry``): a permanent failure repeats on every try."""

    reason: str
    retryable: bool
    too_large: bool = False
    """The record is over a size limit (the producer's ``message.max.bytes`` or the broker's)."""

    @classmethod
    def of(cls, err: KafkaError, prefix: str = "") -> Failure:
        reason = f"{prefix}{err.name()}: {err.str()}"
        return cls(reason, kafka_retryable(err), err.code() in KAFKA_TOO_LARGE)

    @classmethod
    def not_enqueued(cls, exc: BaseException) -> Failure:
        """``produce`` raised: the record never reached the producer's queue."""
        if isinstance(exc, KafkaException) and isinstance(exc.args[0], KafkaError):
            return cls.of(exc.args[0], "not enqueued: ")
        return cls(f"not enqueued: {exc!r}", produce_exception_retryable(exc))


class Publisher(Protocol):
    async def publish(
        self,
        topic: str,
        items: Sequence[tuple[bytes, bytes | None]],
        partitions: Sequence[int] | None = None,
    ) -> list[Failure | None]:
        """Publish (key, value) pairs, to the given partitions if any (``ANY_PARTITION``: by
        key); return, per item, None when acknowledged, else its failure."""
        ...

    def close(self) -> None: ...


class KafkaPublisher:
    def __init__(self, config: dict[str, Any], *, replace_fenced: bool = False) -> None:
        """``replace_fenced``: also replace the producer on the :data:`FENCED` codes (the embedded
        broker's workaround; ``Settings.workarounds.replace_fenced_producer``)."""
        self._replace_fenced = replace_fenced
        self._config = {**config, "error_cb": self._on_error}
        self._producer = Producer(self._config)
        self._retiring: list[Producer] = []
        self._fatal = threading.Event()
        self._swap = threading.Lock()
        self._poller: asyncio.Task[None] | None = None
        KAFKA_PRODUCER_QUEUE.set_function(self.in_flight)  # the process's newest publisher

    def in_flight(self) -> int:
        """Records handed to the producer(s) and not yet reported on."""
        return len(self._producer) + sum(len(old) for old in list(self._retiring))

    def _on_error(self, err: KafkaError) -> None:
        if _needs_new_producer(err, self._replace_fenced):
            log.error("kafka producer unusable", error=err.str())
            self._fatal.set()
        else:
            log.debug("kafka producer error", error=err.str())

    def _current(self) -> Producer:
        if self._fatal.is_set():
            with self._swap:
                if self._fatal.is_set():
                    log.warning("replacing the kafka producer after a fatal error")
                    self._retiring.append(self._producer)
                    self._producer = Producer(self._config)
                    self._fatal.clear()
        return self._producer

    def _ensure_poller(self) -> None:
        loop = asyncio.get_running_loop()
        if self._poller is None or self._poller.done() or self._poller.get_loop() is not loop:
            self._poller = loop.create_task(self._poll())

    async def _poll(self) -> None:
        """Serve delivery reports until nothing is outstanding (``publish`` restarts it)."""
        while True:
            self._producer.poll(0)
            for old in list(self._retiring):
                old.poll(0)  # serves the failed reports of what it still held
                if len(old) == 0:
                    self._retiring.remove(old)
            if len(self._producer) == 0 and not self._retiring:
                return
            await asyncio.sleep(POLL_INTERVAL_S)

    async def publish(
        self,
        topic: str,
        items: Sequence[tuple[bytes, bytes | None]],
        partitions: Sequence[int] | None = None,
    ) -> list[Failure | None]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        results: list[Failure | None] = [None] * len(items)
        failed: list[tuple[bytes | None, bytes | None, KafkaError]] = []
        pending = [len(items)]
        lock = threading.Lock()
        loop_thread = threading.get_ident()

        def finish() -> None:
            if not done.done():
                done.set_result(None)

        def count_down() -> None:
            with lock:
                pending[0] -= 1
                last = pending[0] == 0
            if not last:
                return
            # Reports are served by the poller on the loop's own thread: resolve in place. The
            # thread-safe call wrote to the loop's wake-up pipe and cost a second loop turn, once
            # per single-event request. close() may serve reports from elsewhere, or after the
            # loop closed.
            if threading.get_ident() == loop_thread:
                finish()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(finish)

        # One callback for the whole call, not one per item (a partial per item cost 1.3 us of
        # the ~2.6 us a produce took): a failed report is matched to its item by (key, value).
        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failed.append((msg.key(), msg.value(), err))
                if _needs_new_producer(err, self._replace_fenced):
                    self._fatal.set()
            count_down()

        producer = self._current()
        started = time.perf_counter()
        produce = producer.produce
        for i, (key, value) in enumerate(items):
            try:
                if partitions is None:
                    produce(topic, value, key, on_delivery=on_delivery)
                else:
                    produce(topic, value, key, partitions[i], on_delivery=on_delivery)
            except (BufferError, KafkaException) as exc:
                # Not enqueued, so no report will come for it: count it as done here. A record
                # over message.max.bytes is refused here (MSG_SIZE_TOO_LARGE), not by the broker.
                results[i] = Failure.not_enqueued(exc)
                count_down()
        if items:
            self._ensure_poller()
            await done
            labelled(KAFKA_DELIVERY_SECONDS, topic).observe(time.perf_counter() - started)
        if failed:
            _match_failures(items, results, failed)
        return results

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued, then close the producer (``eventpipe.kafka.close_producer``);
        nothing is published after this."""
        remaining = sum(close_producer(p, timeout_s) for p in [self._producer, *self._retiring])
        if remaining:
            log.error("producer closed with undelivered messages", count=remaining)


def _match_failures(
    items: Sequence[tuple[bytes, bytes | None]],
    results: list[Failure | None],
    failed: list[tuple[bytes | None, bytes | None, KafkaError]],
) -> None:
    """Mark each failed report's item in ``results``. Two equal items are interchangeable: a
    failure is put on one of them, and a retry of it stores the same bytes."""
    where: dict[tuple[bytes | None, bytes | None], list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        if results[i] is None:
            where[item].append(i)
    for key, value, err in failed:
        indices = where.get((key, value))
        if indices:
            results[indices.pop()] = Failure.of(err)


def publisher_for(settings: Settings, **extra: Any) -> KafkaPublisher:
    """The publisher every process uses: ``producer_config`` plus the broker profile's choice."""
    return KafkaPublisher(
        producer_config(settings, **extra),
        replace_fenced=settings.workarounds.replace_fenced_producer,
    )

"""Fakes shared by the unit tests: a publisher whose sends succeed or fail as scripted, the
part of a Faust table the outbox uses, and a Kafka message and consumer for the sink."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

from confluent_kafka import TopicPartition

from eventpipe.publisher import Failure
from streams.dedupe import Expiry

TIMED_OUT = Failure("_MSG_TIMED_OUT: Local: Message timed out", retryable=True)
TOO_LARGE = Failure(
    "not enqueued: MSG_SIZE_TOO_LARGE: Broker: Message size too large",
    retryable=False,
    too_large=True,
)


class ScriptedPublisher:
    """Fails the first ``failures`` items it is handed as a retryable timeout, and for good
    (``refusal``: by default ``TOO_LARGE``, as librdkafka does) every item over ``max_bytes``
    or sent to a topic of ``refuse_topics``; records what it acknowledged."""

    def __init__(
        self,
        failures: int = 0,
        hang: bool = False,
        max_bytes: int | None = None,
        refuse_topics: frozenset[str] = frozenset(),
        refusal: Failure = TOO_LARGE,
    ) -> None:
        self.failures, self.hang = failures, hang
        self.max_bytes, self.refuse_topics, self.refusal = max_bytes, refuse_topics, refusal
        self.refused: list[tuple[str, bytes]] = []
        self.acked: list[tuple[str, bytes]] = []
        self.sent: list[tuple[str, bytes, bytes, int]] = []
        self.on_publish: Callable[[], None] = lambda: None

    async def publish(
        self,
        topic: str,
        items: Sequence[tuple[bytes, bytes]],
        partitions: Sequence[int] | None = None,
    ) -> list[Failure | None]:
        self.on_publish()
        if self.hang:
            await asyncio.sleep(3600)
        out: list[Failure | None] = []
        for i, (key, value) in enumerate(items):
            too_large = self.max_bytes is not None and len(key) + len(value) > self.max_bytes
            if too_large or topic in self.refuse_topics:
                self.refused.append((topic, key))
                out.append(self.refusal)
            elif self.failures:
                self.failures -= 1
                out.append(TIMED_OUT)
            else:
                self.acked.append((topic, key))
                self.sent.append((topic, key, value, -1 if partitions is None else partitions[i]))
                out.append(None)
        return out

    def close(self) -> None: ...


class FakeTable(dict[bytes, Any]):
    """What the outbox and the agent use of a Faust table: changelog topic, serializers,
    raw_update, the store (``data``) and, for the dedupe table, its ``expiry``."""

    key_serializer = "raw"
    value_serializer = "json"

    def __init__(self, changelog: str = "app-dedupe-changelog", window_ms: int = 3_600_000) -> None:
        super().__init__()
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: changelog)
        self.expiry = Expiry(window_ms)

    @property
    def data(self) -> dict[bytes, Any]:
        return self

    def raw_update(self, entries: dict[bytes, Any]) -> None:
        self.update(entries)


class Msg:
    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        value: bytes | None,
        timestamp_ms: int = 1_767_323_045_000,
    ) -> None:
        self._t, self._p, self._o, self._v = topic, partition, offset, value
        self._ts = timestamp_ms

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes | None:
        return self._v

    def error(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)


class ScriptedConsumer:
    """Returns one scripted batch per consume() (logged as "consume"). Once the script is
    exhausted it returns nothing (not logged) and sets stop when a commit followed the last
    batch (or once ``until(log)`` holds), or after ~2 s: the sink's inserts run in another
    thread.

    Like a real consumer it first assigns (through the sink's ``on_assign``) every partition
    the script's batches come from (or those of ``assign``), and holds back (returns nothing,
    not logged) a batch with a message of a paused partition; pause and resume calls go to
    ``flow``."""

    def __init__(
        self,
        log: list[Any],
        stop: threading.Event,
        script: list[Any],
        assign: list[tuple[str, int]] | None = None,
        until: Callable[[list[Any]], bool] | None = None,
    ) -> None:
        self.log, self.stop, self.script = log, stop, list(script)
        self.initial = assign
        self.until = until
        self.on_revoke: Callable[..., None] | None = None
        self.on_assign: Callable[..., None] | None = None
        self.assigned: set[tuple[str, int]] = set()
        self.paused: set[tuple[str, int]] = set()
        self.flow: list[tuple[str, list[tuple[str, int]]]] = []
        self.commit_errors: list[dict[tuple[str, int], Any]] = []
        self.closed = False
        self._assigned = False
        self._last_batch_at = 0
        self._idle = 0

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.on_revoke = callbacks["on_revoke"]
        self.on_assign = callbacks.get("on_assign")

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in sorted(self.assigned)]

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned |= {(tp.topic, tp.partition) for tp in partitions}

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.flow.append(("pause", sorted((tp.topic, tp.partition) for tp in partitions)))
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.flow.append(("resume", sorted((tp.topic, tp.partition) for tp in partitions)))
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def consume(self, num_messages: int, timeout: float) -> list[Msg]:
        if not self._assigned:
            self._assigned = True
            parts = {
                (m.topic(), m.partition())
                for step in self.script
                if isinstance(step, list)
                for m in step
            }
            if self.initial is not None:
                parts = set(self.initial)
            assigned = [TopicPartition(t, p) for t, p in sorted(parts)]
            if self.on_assign is None:
                self.incremental_assign(assigned)
            else:
                self.on_assign(self, assigned)
        step = self.script[0] if self.script else None
        if isinstance(step, list) and any((m.topic(), m.partition()) in self.paused for m in step):
            time.sleep(0.002)
            return []
        if not self.script:
            committed = any(e[0] == "commit" for e in self.log[self._last_batch_at :])
            if self.until is not None:
                committed = self.until(self.log)
            self._idle += 1
            if committed or self._idle > 1000:
                self.stop.set()
            time.sleep(0.002)
            return []
        self.log.append("consume")
        self._last_batch_at = len(self.log)
        step = self.script.pop(0)
        if callable(step):
            step(self)
            return []
        return list(step)

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> list[Any]:
        """Logged; answers from ``commit_errors`` if any is left: (topic, partition) -> the
        KafkaError that partition's result carries."""
        assert asynchronous is False
        self.log.append(("commit", sorted((o.topic, o.partition, o.offset) for o in offsets)))
        errors = self.commit_errors.pop(0) if self.commit_errors else {}
        return [
            SimpleNamespace(
                topic=o.topic,
                partition=o.partition,
                offset=o.offset,
                error=errors.get((o.topic, o.partition)),
            )
            for o in offsets
        ]

    def close(self) -> None:
        self.closed = True

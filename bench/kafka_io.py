"""Filling topics before a stage and watching one while it runs (confluent-kafka, no group)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from eventpipe.codec import AvroCodec
from eventpipe.kafka import producer_config
from eventpipe.settings import Settings


def fill(
    settings: Settings, topic: str, record: str, items: Iterable[tuple[bytes, dict[str, Any]]]
) -> int:
    """Encode and produce every (key, value), wait for all acks; raise if any failed."""
    codec = AvroCodec()
    producer = Producer(producer_config(settings, **{"linger.ms": 20}))
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    n = 0
    for key, value in items:
        data = codec.encode(record, value)
        while True:
            try:
                producer.produce(topic, data, key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.01)
        n += 1
    if producer.flush(120) or errors:
        raise RuntimeError(f"filling {topic} failed: {errors[:3]}")
    return n


def from_beginning(
    bootstrap: str, group: str, topic: str, partitions: Iterable[int] | None = None, **conf: Any
) -> Consumer:
    """A consumer assigned ``partitions`` of ``topic`` (default: all of them) from their first
    record; it never commits (``group`` is only the name librdkafka requires)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False, **conf}
    )
    if partitions is None:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    return consumer


TAIL_SHARE = 0.99
STALL_S = 3.0


class Watcher:
    """Counts records arriving on a topic (all partitions, from the beginning) with their times."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.consumer = from_beginning(
            bootstrap, "bench-watcher", topic, range(partitions), **{"fetch.wait.max.ms": 10}
        )
        self.count = 0
        self.first: float | None = None
        self.last: float | None = None

    def wait_for(
        self, n: int, timeout_s: float, on_first: Callable[[], None], alive: Callable[[], bool]
    ) -> None:
        """Consume until ``n`` records arrived; ``on_first`` runs when the first one does.

        Also returns when at least ``TAIL_SHARE`` of them arrived and nothing more came for
        ``STALL_S``: on Tansu the last records of a partition can stay unread until more are
        written (its end-offset bug), and the caller reports how many were still missing.
        """
        deadline = time.monotonic() + timeout_s
        while self.count < n:
            if time.monotonic() > deadline or not alive():
                raise TimeoutError(f"{self.count} of {n} records arrived")
            if (
                self.last is not None
                and self.count >= TAIL_SHARE * n
                and time.perf_counter() - self.last > STALL_S
            ):
                return
            got = sum(1 for m in self.consumer.consume(10_000, 0.05) if m.error() is None)
            if got:
                now = time.perf_counter()
                if self.first is None:
                    self.first = now
                    on_first()
                self.last = now
                self.count += got

    def close(self) -> None:
        self.consumer.close()


def record_times(
    bootstrap: str, topic: str, ids: set[str], timeout_s: float = 60.0
) -> dict[str, float]:
    """The Kafka timestamp (seconds; the producer's time at ``produce``) of each record of
    ``topic`` whose ``external_id`` is in ``ids``, read from the beginning until every one was
    seen or ``timeout_s`` passed (then the ones seen)."""
    codec = AvroCodec()
    consumer = from_beginning(bootstrap, "bench-times", topic)
    times: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(times) < len(ids) and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 0.2):
                if msg.error() is not None or msg.value() is None:
                    continue
                _, record = codec.decode(msg.value() or b"", millis=True)
                external_id = record.get("external_id")
                if external_id in ids:
                    times.setdefault(external_id, msg.timestamp()[1] / 1000)
    finally:
        consumer.close()
    return times

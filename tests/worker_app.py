"""The worker's Faust app against an embedded broker, for tests of its consumer and recovery.

Each test gets its own broker, with one topic made and the group's commits set, and drives the
app's real consumer in one event loop (the consumer thread answers to the loop it was made in)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import faust
from confluent_kafka import Consumer, Producer, TopicPartition

from eventpipe.embedded import TansuBroker
from eventpipe.kafka import close_producer, create_topics, producer_config
from eventpipe.publisher import KafkaPublisher
from eventpipe.settings import Settings
from streams.app import app_id, create_app

T = TypeVar("T")


@contextmanager
def worker_app(
    prefix: str, commits: Mapping[int, int] | None = None
) -> Iterator[tuple[faust.App, Settings]]:
    """The worker's app and its settings on a fresh broker, the ``<prefix>raw`` topic made and
    committed at ``commits`` (partition -> offset) for the app's group."""
    broker = TansuBroker()
    broker.start()
    try:
        settings = Settings(kafka_bootstrap=broker.bootstrap, topic_prefix=prefix)
        create_topics(settings, [f"{prefix}raw"])
        if commits:
            committer = Consumer(
                {"bootstrap.servers": broker.bootstrap, "group.id": app_id(settings)}
            )
            offsets = [TopicPartition(f"{prefix}raw", p, o) for p, o in commits.items()]
            committer.commit(offsets=offsets, asynchronous=False)
            committer.close()
        publisher = KafkaPublisher(producer_config(settings, log_level=0))
        try:
            yield create_app(settings, publisher), settings
        finally:
            publisher.close(timeout_s=0)
    finally:
        broker.stop()


def write(
    settings: Settings, topic: str, records: Iterable[tuple[int, bytes, bytes | None]]
) -> None:
    """Append ``(partition, key, value)`` records to ``topic``."""
    producer = Producer(producer_config(settings))
    for partition, key, value in records:
        producer.produce(topic, value, key, partition=partition)
    assert close_producer(producer, 10) == 0


def on_consumer(app: faust.App, body: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``body(consumer)`` with the app's consumer started, in a loop of its own."""

    async def run() -> T:
        consumer = app.consumer  # made in this loop: its thread answers to it
        await consumer.start()
        try:
            return await body(consumer)
        finally:
            await consumer.stop()

    return asyncio.run(run())

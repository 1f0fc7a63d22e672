"""The sink's pause and resume of its partitions while it waits, so it can keep polling.

The sink's consumer uses the cooperative-sticky assignor (``eventpipe.kafka.consumer_config``):
a rebalance hands it only the partitions that change, through ``incremental_assign``.
"""

from __future__ import annotations

import structlog
from confluent_kafka import Consumer, TopicPartition

from sinks.metrics import SinkMetrics

log = structlog.get_logger(__name__)


class PartitionFlow:
    """Pauses every assigned partition while the sink waits (for ClickHouse, or to retry a
    commit) and resumes them after, so that the sink can keep polling: a consumer that does
    not poll for ``max.poll.interval.ms`` is put out of its group, which re-reads and
    re-inserts its uncommitted batches and churns rebalances for as long as ClickHouse is down.

    A paused partition returns nothing from a poll. A rebalance during the wait can assign new
    partitions: :meth:`on_assign` pauses them too before any of their messages is fetched.
    Revoked partitions need nothing here (they leave the assignment); the sink drops their
    buffered rows as at any time.
    """

    def __init__(self, metrics: SinkMetrics) -> None:
        self.paused = False
        self.metrics = metrics

    def pause(self, consumer: Consumer, reason: str) -> None:
        if self.paused:
            return
        parts = consumer.assignment()
        consumer.pause(parts)
        self.paused = True
        self.metrics.paused.set(1)
        log.info("partitions paused", reason=reason, partitions=_names(parts))

    def resume(self, consumer: Consumer) -> None:
        if not self.paused:
            return
        parts = consumer.assignment()
        consumer.resume(parts)
        self.paused = False
        self.metrics.paused.set(0)
        log.info("partitions resumed", partitions=_names(parts))

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The consumer's ``on_assign``: take the partitions, paused if the others are."""
        log.info("partitions assigned", partitions=_names(partitions), paused=self.paused)
        consumer.incremental_assign(partitions)
        if self.paused:
            consumer.pause(partitions)


def _names(parts: list[TopicPartition]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in parts]

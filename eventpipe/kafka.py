"""Kafka client configuration and topic creation, shared by the edge, the sink and the CLI."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import structlog
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from tenacity import Retrying, retry_if_exception_type, stop_after_delay

from eventpipe.retry import backoff
from eventpipe.settings import Settings
from eventpipe.topics import TopicNames

log = structlog.get_logger(__name__)

MESSAGE_MAX_BYTES = 1_000_000
"""The largest record (key + value) our producers send: librdkafka's default, said here so the
edge's per-event limit (``Settings.max_event_bytes``) can stay below it."""


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """The edge's producer: acks=all, idempotent, and the murmur2 partitioner.

    ``murmur2_random`` because confluent-kafka's default partitioner agrees with aiokafka/Java on
    only ~25% of keys: a dedupe key must land on the partition Faust's table reads.
    """
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "partitioner": "murmur2_random",
        "linger.ms": 2,
        "compression.type": "lz4",
        "message.timeout.ms": settings.kafka_delivery_timeout_ms,
        "queue.buffering.max.messages": 1_000_000,
        "message.max.bytes": MESSAGE_MAX_BYTES,
    }
    conf.update(extra)
    return conf


def consumer_config(settings: Settings, group: str, **extra: Any) -> dict[str, Any]:
    """Manual offset commits only: offsets move after the work they stand for is done."""
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": int(settings.session_timeout_s * 1000),
        "heartbeat.interval.ms": int(settings.heartbeat_interval_s * 1000),
        "partition.assignment.strategy": "cooperative-sticky",
    }
    fetch_wait_ms = settings.workarounds.fetch_wait_ms
    if fetch_wait_ms is not None:
        conf["fetch.wait.max.ms"] = fetch_wait_ms
    conf.update(extra)
    return conf


def create_topics(
    settings: Settings,
    topics: Iterable[str],
    *,
    config: dict[str, str] | None = None,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the missing ones of ``topics`` (idempotent; retried while the broker starts).

    Every topic gets ``topic_partitions`` partitions; returns the names created now.
    """
    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    wanted = list(topics)

    def attempt() -> list[str]:
        existing = set(admin.list_topics(timeout=5).topics)
        missing = [t for t in wanted if t not in existing]
        new = [
            NewTopic(t, settings.topic_partitions, settings.topic_replication, config=config or {})
            for t in missing
        ]
        for topic, fut in (admin.create_topics(new) if new else {}).items():
            try:
                fut.result(timeout=10)
                log.info("topic created", topic=topic, partitions=settings.topic_partitions)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
        return missing

    try:
        for try_ in Retrying(
            retry=retry_if_exception_type(KafkaException),
            wait=backoff(max_s=1.0),
            stop=stop_after_delay(timeout_s),
            reraise=True,
        ):
            with try_:
                return attempt()
    except KafkaException as exc:
        raise RuntimeError(
            f"could not create topics {wanted} on {settings.bootstrap}: {exc}"
        ) from exc
    raise AssertionError("unreachable: Retrying returns or raises")


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> None:
    """Create the pipeline's own topics (``eventpipe.topics``) if missing."""
    create_topics(settings, TopicNames.from_settings(settings).all(), timeout_s=timeout_s)

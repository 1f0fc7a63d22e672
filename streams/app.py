"""The Faust app factory: topics, the dedupe table and the agents, all from one ``Settings``.

No module-level app: ``create_app`` builds one per call, so tests and ``eventpipe dev`` can make
their own, each with its own topic prefix.
"""

from __future__ import annotations

from typing import Any

import faust

from eventpipe.codec import CLEAN_EVENT, RAW_EVENT, REJECTED_EVENT
from eventpipe.settings import Settings
from eventpipe.topics import TopicNames
from streams.agents import attach_normalize_dedupe
from streams.codec import CODEC_NAMES, register_codecs

DEDUPE_TABLE = "dedupe"
PRODUCER_LINGER_S = 0.02
"""Lets the per-event sends of one batch share Kafka produce requests (measured: +30%)."""


def app_id(settings: Settings) -> str:
    """The Faust app id, which names the consumer group and the changelog topics.

    The topic prefix is part of it, so pipelines sharing a cluster (or test runs) never share
    a group or a table."""
    return f"{settings.topic_prefix}{settings.worker_id}"


def create_app(settings: Settings) -> faust.App:
    """A Faust app wired for eventpipe; start it with ``streams.worker.run_worker``."""
    if not settings.kafka_bootstrap:
        raise RuntimeError("the worker needs EVENTPIPE_KAFKA_BOOTSTRAP (or an embedded broker)")
    register_codecs()
    app = faust.App(
        app_id(settings),
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        web_enabled=False,
        autodiscover=False,
        # Tansu answers a group join after half the session timeout: dev keeps it short.
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_s,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        # at_least_once keeps Faust's aiokafka producer non-idempotent: its InitProducerId
        # fails on Tansu; "exactly_once" would turn idempotence on and cannot start there.
        processing_guarantee="at_least_once",
        producer_linger=PRODUCER_LINGER_S,
        key_serializer="raw",
        value_serializer="raw",
    )
    names = TopicNames.from_settings(settings)

    def topic(name: str, record: str) -> Any:
        return app.topic(name, key_serializer="raw", value_serializer=CODEC_NAMES[record])

    # use_partitioner: the agent writes the table inside take_events(), where Faust has no
    # current event to take a partition from. The producer's murmur2 of the key then picks the
    # changelog partition, the same one the edge's murmur2 picked for the raw record.
    table = app.Table(
        DEDUPE_TABLE,
        partitions=settings.topic_partitions,
        use_partitioner=True,
        key_type=bytes,  # serialized "raw"
        value_type=int,  # serialized "json"
    )
    attach_normalize_dedupe(
        app,
        source=topic(names.raw, RAW_EVENT),
        forward_to=topic(names.clean, CLEAN_EVENT),
        rejected_to=topic(names.rejected, REJECTED_EVENT),
        table=table,
        window_ms=settings.dedupe_window_seconds * 1000,
    )
    return app


def changelog_topics(app: faust.App) -> list[str]:
    """The changelog topic of every table of ``app``, named as Faust names it."""
    return [t.changelog_topic.get_topic_name() for t in app.tables.values()]

"""Kafka client configuration, and the topics every process checks (or creates) at start.

Every confluent-kafka client's configuration starts from :func:`client_config`: the bootstrap
servers plus the security block (``eventpipe.kafka_security``), so no client can connect in
plaintext while the others use TLS. The worker's Faust clients get the same block through
``streams.app.faust_config``.

At start, every process calls :func:`ensure_topics` (the worker also ``ensure_changelogs``): it
creates what is missing when ``EVENTPIPE_CREATE_TOPICS`` is on (replication, retention and the
changelogs' compaction from settings), and in either case refuses to start when a topic is
missing or has fewer partitions than ``EVENTPIPE_TOPIC_PARTITIONS``, naming the topic and the
setting. A broker that refuses the credentials or the TLS handshake stops it at once with
librdkafka's reason (:class:`KafkaStartError`), rather than retrying into a timeout.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from tenacity import Retrying, retry_if_exception_type, stop_after_delay

from eventpipe import kafka_security
from eventpipe.errors import StartError
from eventpipe.retry import backoff, kafka_connect_refused
from eventpipe.settings import Settings
from eventpipe.topics import TopicNames

log = structlog.get_logger(__name__)

MESSAGE_MAX_BYTES = 1_000_000
"""The largest record (key + value) our producers send: librdkafka's default, said here so the
edge's per-event limit (``Settings.max_event_bytes``) can stay below it."""
METADATA_TIMEOUT_S = 5.0


class KafkaStartError(StartError):
    """Kafka cannot be used as configured: the process stops at start with this message."""


def client_config(settings: Settings) -> dict[str, Any]:
    """The bootstrap servers and the security block: the base of every confluent-kafka client."""
    return {"bootstrap.servers": settings.bootstrap, **kafka_security.librdkafka_security(settings)}


def close_producer(producer: Producer, timeout_s: float) -> int:
    """Deliver what ``producer`` holds within ``timeout_s``, then close its connections; return
    how many records were left undelivered (0: closed).

    A producer with records left stays open: closing it would wait for them up to their
    delivery timeout. Closing is not left to garbage collection because a broker waits on its
    clients: the embedded one does not exit on SIGTERM while one is connected. Closing twice
    is harmless.
    """
    try:
        remaining = producer.flush(timeout_s)
    except RuntimeError:  # already closed
        return 0
    if remaining == 0:
        producer.close()
    return remaining


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """The edge's producer: acks=all, idempotent, and the murmur2 partitioner.

    ``murmur2_random`` because confluent-kafka's default partitioner agrees with aiokafka/Java on
    only ~25% of keys: a dedupe key must land on the partition Faust's table reads.
    """
    conf: dict[str, Any] = {
        **client_config(settings),
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
        **client_config(settings),
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


def topic_config(settings: Settings) -> dict[str, str]:
    """The configs of the four pipeline topics eventpipe creates."""
    return {
        "retention.ms": str(settings.topic_retention_ms),
        "min.insync.replicas": str(_min_insync(settings)),
        **settings.topic_config,
    }


def changelog_config(settings: Settings) -> dict[str, str]:
    """The configs of the worker's table changelogs: compacted, so a table's state is kept."""
    return {
        "cleanup.policy": "compact",
        "min.insync.replicas": str(_min_insync(settings)),
        **settings.changelog_topic_config,
    }


def _min_insync(settings: Settings) -> int:
    if settings.topic_min_insync_replicas is not None:
        return settings.topic_min_insync_replicas
    return max(1, settings.topic_replication - 1)


def _admin(settings: Settings) -> tuple[AdminClient, list[KafkaError]]:
    """An admin client whose connection errors are kept: librdkafka reports a refused login or
    TLS handshake only there, while the request itself just times out."""
    errors: list[KafkaError] = []
    conf: dict[str, Any] = {**client_config(settings), "error_cb": errors.append}
    admin = AdminClient(conf)
    return admin, errors


def _refused(settings: Settings, admin: AdminClient, errors: list[KafkaError]) -> None:
    """Raise :class:`KafkaStartError` if the broker refused eventpipe's login or TLS."""
    admin.poll(0)  # serves error_cb
    refused = [e for e in errors if kafka_connect_refused(e)]
    errors.clear()
    if refused:
        raise KafkaStartError(
            f"Kafka at {settings.bootstrap} refused the connection "
            f"({kafka_security.describe(settings)}): {refused[-1].str()}. Check "
            "EVENTPIPE_KAFKA_SECURITY_PROTOCOL, EVENTPIPE_KAFKA_SASL_* and EVENTPIPE_KAFKA_SSL_*"
        )


def create_topics(
    settings: Settings,
    topics: Iterable[str],
    *,
    config: dict[str, str] | None = None,
    exact: Collection[str] = (),
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the missing ones of ``topics`` if ``create_topics`` is on, then check them all.

    Every topic needs at least ``topic_partitions`` partitions, and those in ``exact`` exactly
    that many (Faust's tables must have as many partitions as the topic they follow). Retried
    while the broker starts; returns the names created now.
    """
    admin, errors = _admin(settings)
    wanted = list(topics)

    def attempt() -> list[str]:
        try:
            meta = admin.list_topics(timeout=METADATA_TIMEOUT_S).topics
        except KafkaException:
            _refused(settings, admin, errors)
            raise
        missing = [t for t in wanted if t not in meta]
        if missing and not settings.create_topics:
            raise KafkaStartError(
                f"topic {missing[0]!r} does not exist on {settings.bootstrap} "
                f"(missing: {', '.join(missing)}) and EVENTPIPE_CREATE_TOPICS is false: "
                "create it, or let eventpipe create it"
            )
        counts = {t: len(meta[t].partitions) for t in wanted if t in meta}
        _check_partitions(settings, counts, exact)
        new = [
            NewTopic(t, settings.topic_partitions, settings.topic_replication, config=config or {})
            for t in missing
        ]
        for topic, fut in (admin.create_topics(new) if new else {}).items():
            try:
                fut.result(timeout=10)
                log.info(
                    "topic created",
                    topic=topic,
                    partitions=settings.topic_partitions,
                    replication=settings.topic_replication,
                )
            except KafkaException as exc:
                err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                code = err.code() if err is not None else None
                if code == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                if code in (
                    KafkaError.TOPIC_AUTHORIZATION_FAILED,
                    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
                ):
                    raise KafkaStartError(
                        f"not allowed to create topic {topic!r} ({exc}): grant CreateTopics, or "
                        "create the topics yourself and set EVENTPIPE_CREATE_TOPICS=false"
                    ) from exc
                if code in (KafkaError.INVALID_REPLICATION_FACTOR, KafkaError.INVALID_CONFIG):
                    raise KafkaStartError(
                        f"could not create topic {topic!r}: {exc}. Check "
                        "EVENTPIPE_TOPIC_REPLICATION (the cluster's brokers), "
                        "EVENTPIPE_TOPIC_MIN_INSYNC_REPLICAS and EVENTPIPE_TOPIC_CONFIG"
                    ) from exc
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
        raise KafkaStartError(
            f"could not reach Kafka at {settings.bootstrap} "
            f"({kafka_security.describe(settings)}) to check topics {wanted}: {exc}"
        ) from exc
    raise AssertionError("unreachable: Retrying returns or raises")


def _check_partitions(settings: Settings, counts: dict[str, int], exact: Collection[str]) -> None:
    want = settings.topic_partitions
    for topic, n in counts.items():
        if n < want or (topic in exact and n != want):
            raise KafkaStartError(
                f"topic {topic!r} has {n} partitions and EVENTPIPE_TOPIC_PARTITIONS is {want}: "
                f"set EVENTPIPE_TOPIC_PARTITIONS={n}"
                + ("" if topic in exact else " or add partitions to the topic")
            )


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> None:
    """Create (if allowed) and check the pipeline's own topics (``eventpipe.topics``).

    ``events.raw`` must have exactly ``topic_partitions``: the worker's tables follow it.
    """
    names = TopicNames.from_settings(settings)
    create_topics(
        settings,
        names.all(),
        config=topic_config(settings),
        exact={names.raw},
        timeout_s=timeout_s,
    )
    # Compacted like a changelog: a suppression must outlive every retention (it is lifted
    # with a tombstone, never by age).
    create_topics(
        settings, [names.suppressions], config=changelog_config(settings), timeout_s=timeout_s
    )

"""Changelog preparation before a worker starts: create the topics, then write sentinels.

Why sentinels: Tansu reports a partition's end offset as the first offset of its last batch + 1
(docs/architecture.md, "Broker profile"), so Faust's table recovery stops before the last batch and
its keys are lost. Writing one sentinel record per changelog partition, as its own flushed
batch, makes that last batch one record whose loss costs nothing. We chose this over
``recovery_buffer_size=1`` because it costs nothing at run time (the other costs ~24%
throughput). Its limit: it covers recovery when a worker starts; a partition moving between
running workers (rebalance) can still recover without the other worker's last batch. The
event-id keyed ReplacingMergeTree in ClickHouse is the second line for that case.

The sentinel key cannot collide with a dedupe key (``streams.dedupe.SENTINEL_KEY``), and the
dedupe table does not keep it when it recovers (``streams.dedupe_table``).

Topic configs: the identity changelog is compacted (links are kept for good); the dedupe
changelog is ``compact,delete`` with a retention past the window (:func:`expiring`), so a real
Kafka drops the entries of keys that left the window even where no tombstone was written (a key
that expired while no worker ran). Tansu accepts these configs and honours neither: it never
compacts or deletes, and the dedupe table's tombstones and recovery filter bound what a worker
keeps there. Topics that already exist keep the config they were created with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import structlog
from confluent_kafka import Producer

from eventpipe.kafka import changelog_config, create_topics, producer_config
from eventpipe.settings import Settings
from streams.dedupe import SENTINEL_KEY, SENTINEL_VALUE

log = structlog.get_logger(__name__)


COMPACT = {"cleanup.policy": "compact"}


def expiring(window_ms: int) -> dict[str, str]:
    """The config of a changelog whose entries matter for ``window_ms`` after they were written.

    Retention is two windows, counted from the record's timestamp (when the worker wrote it,
    never before the ``received_at`` the window counts from): a worker that lags the edge by
    up to a window still recovers every key its backlog needs. Segments roll every window, as
    Kafka deletes only whole segments: the topic holds about three windows of entries.
    """
    return {
        "cleanup.policy": "compact,delete",
        "retention.ms": str(2 * window_ms),
        "segment.ms": str(window_ms),
    }


def ensure_changelogs(
    settings: Settings, topics: Mapping[str, Mapping[str, str]], timeout_s: float = 30.0
) -> None:
    """Create missing changelog topics (name -> the table's own config, over
    ``eventpipe.kafka.changelog_config``) with exactly the raw topic's partition count, or with
    ``EVENTPIPE_CREATE_TOPICS=false`` check that they exist with that count.

    Faust would create them itself when it starts, but the sentinels must be written first.
    """
    for name, config in topics.items():
        merged = {**changelog_config(settings), **config}
        create_topics(settings, [name], config=merged, exact=[name], timeout_s=timeout_s)


def write_sentinels(settings: Settings, topics: Iterable[str], timeout_s: float = 30.0) -> int:
    """Append one sentinel to every partition of each topic, each as its own flushed batch.

    Returns how many were written. Raises if the broker did not acknowledge one: starting
    without them would silently lose table keys on recovery.
    """
    producer = Producer(producer_config(settings, **{"linger.ms": 0}))
    errors: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    written = 0
    for topic in topics:
        meta = producer.list_topics(topic, timeout=10).topics[topic]
        if meta.error is not None:
            raise RuntimeError(f"changelog {topic}: {meta.error}")
        for partition in sorted(meta.partitions):
            producer.produce(
                topic, SENTINEL_VALUE, SENTINEL_KEY, partition=partition, on_delivery=on_delivery
            )
            if producer.flush(timeout_s) > 0 or errors:
                raise RuntimeError(f"sentinel to {topic}[{partition}] not acknowledged: {errors}")
            written += 1
    log.info("changelog sentinels written", count=written)
    return written


def prepare_changelogs(settings: Settings, topics: Mapping[str, Mapping[str, str]]) -> None:
    """Create the changelog topics (name -> topic config) and, on the embedded broker, write
    their sentinels: call before the worker starts. A real Kafka reports true end offsets
    (``eventpipe.broker``)."""
    ensure_changelogs(settings, topics)
    if settings.workarounds.changelog_sentinels:
        write_sentinels(settings, list(topics))

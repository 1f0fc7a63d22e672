"""The tables' changelogs: created, then given sentinels, before a worker starts; read in bulk
when it recovers its tables (:class:`ChangelogReader`, used by ``streams.bulk_recovery``).

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

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Iterable, Iterator, Mapping
from typing import Any, cast

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from faust.serializers import codecs
from faust.types import EventT
from faust.types.codecs import CodecArg

from eventpipe.kafka import changelog_config, consumer_config, create_topics, producer_config
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


Entry = tuple[int, bytes, bytes | None, Any]
"""A changelog record as the tables' recovery rules take it: (partition, key, raw value, decoded
value); a raw value of None is a tombstone. Keyless records and the sentinels are never entries:
they hold no table key, and this module writes the sentinels."""


def event_entries(batch: Iterable[EventT[Any]]) -> Iterator[Entry]:
    """The entries of the records Faust's recovery delivers (their values decoded by Faust)."""
    for event in batch:
        msg = event.message
        if msg.key is not None and msg.key != SENTINEL_KEY:
            yield msg.partition, msg.key, msg.value, event.value


def record_entries(records: Iterable[Message], serializer: CodecArg) -> Iterator[Entry]:
    """The entries of records read in bulk, their values decoded by the table's ``serializer``
    (the codec the outbox encodes them with). A value it refuses is passed on raw, for the rule
    to skip and log: one bad record does not stop a recovery."""
    loads = codecs.get_codec(serializer).loads
    for msg in records:
        key, raw = msg.key(), msg.value()
        if key is None or key == SENTINEL_KEY:
            continue
        value: Any = None
        if raw is not None:
            try:
                value = loads(raw)
            except Exception:  # not the outbox's: the rule logs it and goes on
                value = raw
        yield cast(int, msg.partition()), key, raw, value


class ChangelogReader:
    """Reads changelog partitions from given offsets up to given last offsets, in large batches.

    Table recovery in bulk (``streams.bulk_recovery``): librdkafka fetches and decodes the
    records in C, many thousands per call, where Faust delivers each one through its consumer,
    conductor and recovery loop (about 100 us of CPU per record). It never joins a group nor
    commits: ``group.id`` is only a name librdkafka requires. A record past a partition's last
    offset is not returned (whoever recovers next reads it), and that partition stops fetching.
    """

    def __init__(
        self, settings: Settings, topic: str, starts: Mapping[int, int], lasts: Mapping[int, int]
    ) -> None:
        self.topic = topic
        self._lasts = dict(lasts)
        self._left = {p for p, last in self._lasts.items() if starts[p] <= last}
        group = f"{settings.topic_prefix}{settings.worker_id}-changelog-reader"
        self._consumer = Consumer(
            consumer_config(settings, group, **{"enable.partition.eof": True, "log_level": 3})
        )
        self._consumer.assign([TopicPartition(topic, p, starts[p]) for p in self._left])
        self._lock = threading.Lock()  # a close waits for a fetch still running in a thread
        self._closed = False

    @property
    def done(self) -> bool:
        return not self._left

    def batch(self, max_records: int = 10_000, timeout_s: float = 0.05) -> list[Message]:
        """The next records within the last offsets, in offset order per partition.

        ``consume`` returns when it has ``max_records`` or the timeout passed, even once every
        partition is at its end: a short timeout keeps the last batch of each read from waiting
        it out (0.5 s held every worker start three times), and a large changelog still comes in
        full batches (librdkafka fetches ahead)."""
        with self._lock:
            if self._closed:
                return []
            return self._batch(max_records, timeout_s)

    def _batch(self, max_records: int, timeout_s: float) -> list[Message]:
        out: list[Message] = []
        finished: list[int] = []
        for msg in self._consumer.consume(max_records, timeout_s):
            err = msg.error()
            p = cast(int, msg.partition())  # set on every consumed record
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(err)
                finished.append(p)  # nothing more there than what it held when asked
                continue
            offset = cast(int, msg.offset())
            if offset > self._lasts[p] or p not in self._left:
                finished.append(p)
                continue
            out.append(msg)
            if offset == self._lasts[p]:
                finished.append(p)
        done = [p for p in finished if p in self._left]
        if done:
            self._left.difference_update(done)
            self._consumer.pause([TopicPartition(self.topic, p) for p in done])
        return out

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._consumer.close()


async def read_changelog(
    settings: Settings,
    topic: str,
    starts: Mapping[int, int],
    lasts: Mapping[int, int],
    budget_s: float,
) -> AsyncGenerator[list[Message], None]:
    """Batches of ``topic``'s partitions from ``starts`` to ``lasts`` (inclusive), for at most
    ``budget_s`` seconds; the fetches run in a thread, so the event loop (heartbeats, the
    agents' acks) keeps running between them. Close it (``contextlib.aclosing``) to close its
    consumer at once when the reading stops early."""
    deadline = time.monotonic() + budget_s
    reader = await asyncio.to_thread(ChangelogReader, settings, topic, starts, lasts)
    try:
        while not reader.done and time.monotonic() < deadline:
            yield await asyncio.to_thread(reader.batch)
    finally:
        await asyncio.to_thread(reader.close)

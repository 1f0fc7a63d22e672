"""What an agent produces from one batch of source records, published before the batch is acked.

Why not Faust's ``topic.send`` per record: it was the agents' largest cost (~26% of worker CPU
in the benchmark's profile; ARCHITECTURE.md: "per-event Faust sends ... are the cost"). The
agents take records in batches (``stream.take_events``), encode each output once, and hand the
whole batch to the confluent-kafka producer of ``eventpipe.publisher`` (one future per topic).

At-least-once: Faust acks a batch's source records only when the agent asks for the next batch,
and the agent asks only after :meth:`Outbox.flush` returned, which is after every output was
acknowledged by Kafka. A send that fails (the broker unreachable past the delivery timeout) is
retried, with backoff, until it is acknowledged: the partition waits rather than acking a
record whose output was never stored. A retried output may be stored twice; every consumer
keys on the event id (ClickHouse's ReplacingMergeTree), so that shows as one row.

Table entries (:meth:`Outbox.put`) go the same way, after the outputs: their changelog records
are published through the same producer and the in-memory table learns them only once Kafka
acknowledged both, so a table never holds an entry for a record that was not stored. Through
Faust's own ``table[key] = value`` each entry cost a Faust + aiokafka send in Python, the
largest part of the worker's own work once the outputs were batched.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import structlog
from faust import EventT, Stream, StreamT, Table
from faust.serializers import codecs

from eventpipe.codec import REJECTED_EVENT, AvroCodec
from eventpipe.publisher import ANY_PARTITION, Publisher
from streams.codec import Undecodable, rejected_undecodable

log = structlog.get_logger(__name__)

BATCH_MAX = 1000
BATCH_WITHIN_S = 0.05
"""Records per ``take_events`` batch, and how long a partial batch waits (a latency bound)."""

RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0


def batches(stream: StreamT[Any]) -> AsyncIterator[Sequence[EventT[Any]]]:
    """The agents' batches: ``take_events`` with one set of bounds (``StreamT`` lacks it)."""
    return cast("Stream[Any]", stream).take_events(BATCH_MAX, within=BATCH_WITHIN_S)


@dataclass
class _Changelog:
    """A table as the outbox writes it: its changelog topic and serializers (looked up once:
    per entry they were a third of ``put``'s cost), and the entries not yet acknowledged."""

    table: Table[Any, Any]
    topic: str
    dump_key: Callable[[Any], bytes]
    dump_value: Callable[[Any], bytes]
    pending: dict[Any, Any] = field(default_factory=dict)


class Outbox:
    """Encoded (key, value) pairs by topic, for one batch; reusable after :meth:`flush`."""

    def __init__(self, publisher: Publisher, codec: AvroCodec, rejected_to: str) -> None:
        self._publisher = publisher
        self._codec = codec
        self._rejected_to = rejected_to
        self._items: defaultdict[str, list[tuple[bytes, bytes, int]]] = defaultdict(list)
        self._entries: defaultdict[str, list[tuple[bytes, bytes | None, int]]] = defaultdict(list)
        self._changelogs: dict[int, _Changelog] = {}

    def add(self, topic: str, record_name: str, key: bytes, record: dict[str, Any]) -> str | None:
        """Queue ``record``; return why it cannot be encoded (nothing queued), else None."""
        try:
            value = self._codec.encode(record_name, record)
        except Exception as exc:  # fastavro raises several types (OverflowError for a huge long)
            return f"cannot encode a {record_name}: {exc}"
        self._items[topic].append((key, value, ANY_PARTITION))
        return None

    def put(
        self, table: Table[Any, Any], key: Any, value: Any, partition: int = ANY_PARTITION
    ) -> None:
        """Queue ``table[key] = value``, its changelog record to ``partition`` (by default the
        partitioner's choice for the key, as Faust's ``use_partitioner`` does)."""
        changelog = self._changelogs.get(id(table))
        if changelog is None:
            changelog = self._changelogs[id(table)] = _Changelog(
                table,
                table.changelog_topic.get_topic_name(),
                codecs.get_codec(table.key_serializer).dumps,
                codecs.get_codec(table.value_serializer).dumps,
            )
        dump_key, dump_value = changelog.dump_key, changelog.dump_value
        self._entries[changelog.topic].append((dump_key(key), dump_value(value), partition))
        changelog.pending[key] = value

    def forget(self, table: Table[Any, Any], key: Any, partition: int) -> None:
        """Queue ``del table[key]``: a tombstone to the changelog ``partition`` its entry was
        written to; the store drops the key once Kafka acknowledged it (``get`` sees None)."""
        self.put(table, key, None, partition)  # queues b"null" for the value: replaced here
        entries = self._entries[self._changelogs[id(table)].topic]
        entries[-1] = (entries[-1][0], None, partition)  # a tombstone has no value at all

    def get(self, table: Table[Any, Any], key: Any) -> Any:
        """``table.get(key)``, seeing what :meth:`put` queued for it and is not stored yet (a
        later record of the same batch must see an earlier one's key or link)."""
        changelog = self._changelogs.get(id(table))
        if changelog is not None and key in changelog.pending:
            return changelog.pending[key]
        return table.get(key)

    def reject(self, record: dict[str, Any]) -> None:
        """Queue a ``RejectedEvent`` for the rejected topic. One that cannot be encoded (not
        expected of a well-formed rejection) still goes out, with the reason and no payload."""
        key = record["event_id"].encode()
        err = self.add(self._rejected_to, REJECTED_EVENT, key, record)
        if err is not None:
            log.error("rejection cannot be encoded", event_id=record["event_id"], error=err)
            bare = {**record, "field": None, "payload": b"", "reason": f"{record['reason']}; {err}"}
            self.add(self._rejected_to, REJECTED_EVENT, key, bare)

    def reject_undecodable(self, event: EventT[Any], value: Undecodable) -> None:
        """Queue the rejection of a source record that did not decode (its ``value``)."""
        msg = event.message
        ts_ms = int(msg.timestamp * 1000)
        self.reject(rejected_undecodable(value, msg.topic, msg.partition, msg.offset, ts_ms))

    async def flush(self) -> None:
        """Publish everything queued and return once Kafka acknowledged all of it; then apply
        the queued table entries.

        What is not acknowledged yet stays queued, so if this raises or is cancelled (the agent
        restarts; Faust acks the batch anyway), the next flush sends it rather than losing it.
        """
        await self._send(self._items)
        await self._send(self._entries)
        for changelog in self._changelogs.values():
            changelog.table.raw_update(changelog.pending)  # the store only: records are sent
            for key in [k for k, v in changelog.pending.items() if v is None]:
                changelog.table.data.pop(key, None)  # forgotten (tables hold no None value)
            changelog.pending.clear()

    # A queued value is Any, not bytes: a tombstone's is None, which produce() sends as is.
    async def _send(self, queued: defaultdict[str, list[tuple[bytes, Any, int]]]) -> None:
        delay = RETRY_FIRST_S
        while True:
            pending = {topic: items for topic, items in queued.items() if items}
            if not pending:
                queued.clear()
                return
            topics = list(pending)
            results = await asyncio.gather(
                *(self._publish(topic, pending[topic]) for topic in topics)
            )
            queued.clear()
            for topic, outcome in zip(topics, results, strict=True):
                retry = [item for item, err in zip(pending[topic], outcome, strict=True) if err]
                if retry:
                    queued[topic] = retry
                    first_error = next(err for err in outcome if err)
                    log.warning(
                        "send failed, retrying",
                        topic=topic,
                        count=len(retry),
                        error=first_error,
                        retry_in_s=delay,
                    )
            if queued:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    def _publish(self, topic: str, items: list[tuple[bytes, Any, int]]) -> Any:
        pairs = [(key, value) for key, value, _ in items]
        return self._publisher.publish(topic, pairs, [partition for _, _, partition in items])

"""What an agent produces from one batch of source records, published before the batch is acked.

Why not Faust's ``topic.send`` per record: it was the agents' largest cost (~26% of worker CPU
in the benchmark's profile). The agents take records in batches (``stream.take_events``), encode
each output once, and hand the whole batch to the confluent-kafka producer of
``eventpipe.publisher`` (one future per topic).

At-least-once: Faust acks a batch's source records only when the agent asks for the next batch,
and the agent asks only after :meth:`Outbox.flush` returned, which is after every output was
stored or rejected. The publisher says of each failed send whether a later try may store it
(``eventpipe.retry``):

- *retryable* (the broker unreachable past the delivery timeout, a full queue): the send is
  retried with the shared backoff until it is acknowledged. The partition waits rather than
  acking a record whose output was never stored. A retried output may be stored twice; every
  consumer keys on the event id (ClickHouse's ReplacingMergeTree), so that shows as one row.
- *permanent* (too large for the topic, a record the broker refuses): the same send fails on
  every try, so retrying it would stop every partition behind one record. The output's source
  record becomes a ``RejectedEvent`` (stage ``publish``, the reason naming the topic and the
  Kafka error) and the batch moves on; that record's table entries are not written, so a retry
  of it is not taken for a duplicate of an event that was never stored. A rejection refused in
  turn (it carries the source payload, as large as the record) goes out again without its
  payload; only if even that is refused is it lost, and then it is logged and counted.

Table entries (:meth:`Outbox.put`) go the same way, after the outputs: their changelog records
are published through the same producer and the in-memory table learns them only once Kafka
acknowledged both, so a table never holds an entry for a record that was not stored. Through
Faust's own ``table[key] = value`` each entry cost a Faust + aiokafka send in Python, the
largest part of the worker's own work once the outputs were batched. A changelog record
refused permanently (not expected: keys and values are small) is logged and counted, and the
entry still reaches the in-memory table: the output it stands for was stored, and losing the
entry at the next recovery is what the tables already tolerate (ClickHouse's ReplacingMergeTree
on the event id is the second line).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import structlog
from faust import EventT, StreamT, Table
from faust.serializers import codecs
from prometheus_client import Counter
from tenacity import AsyncRetrying, retry_if_result

from eventpipe import retry
from eventpipe.codec import REJECTED_EVENT, AvroCodec
from eventpipe.publisher import ANY_PARTITION, Failure, Publisher
from streams.codec import Undecodable, rejected, rejected_undecodable
from streams.take import overlapped_batches

log = structlog.get_logger(__name__)

REFUSED = Counter(
    "eventpipe_worker_refused_total",
    "Records Kafka refused permanently, by topic (outputs, rejections, changelog entries)",
    ["topic"],
)

BATCH_MAX = 1000
BATCH_WITHIN_S = 0.05
"""Records per ``take_events`` batch, and how long a partial batch waits (a latency bound)."""

RETRY_FIRST_S = retry.FIRST_WAIT_S
RETRY_MAX_S = retry.MAX_WAIT_S


def batches(stream: StreamT[Any]) -> AsyncIterator[Sequence[EventT[Any]]]:
    """The agents' batches, the next one filling while the agent flushes the last
    (``streams.take``)."""
    return overlapped_batches(stream, BATCH_MAX, BATCH_WITHIN_S)


class _Item(NamedTuple):
    key: bytes
    value: bytes | None
    """None: a tombstone (a forgotten table key), which produce() sends as a null value."""
    partition: int
    origin: Mapping[str, Any] | None
    """What to reject if Kafka refuses the record for good: the source raw record of an
    output, the rejection itself on the rejected topic (None: nothing more to fall back to)."""


@dataclass
class _Changelog:
    """A table as the outbox writes it: its changelog topic and serializers (looked up once:
    per entry they were a third of ``put``'s cost), and the entries not yet acknowledged."""

    table: Table[Any, Any]
    topic: str
    dump_key: Callable[[Any], bytes]
    dump_value: Callable[[Any], bytes]
    pending: dict[Any, Any] = field(default_factory=dict)
    queued: list[tuple[Any, _Item]] = field(default_factory=list)
    """(table key, changelog record) of the entries put since the last flush."""


class Outbox:
    """Encoded (key, value) pairs by topic, for one batch; reusable after :meth:`flush`."""

    def __init__(self, publisher: Publisher, codec: AvroCodec, rejected_to: str) -> None:
        self._publisher = publisher
        self._codec = codec
        self._rejected_to = rejected_to
        self._items: defaultdict[str, list[_Item]] = defaultdict(list)
        self._entries: defaultdict[str, list[_Item]] = defaultdict(list)
        self._changelogs: dict[int, _Changelog] = {}
        self._refused: dict[int, Mapping[str, Any]] = {}
        """Source records with an output refused for good, by id (held, so no id is reused)."""

    def add(
        self,
        topic: str,
        record_name: str,
        key: bytes,
        record: dict[str, Any],
        origin: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Queue ``record``; return why it cannot be encoded (nothing queued), else None.

        ``origin`` is the raw record it was made from: if Kafka refuses ``record`` for good,
        ``origin`` is rejected in its place (without one, the refusal is only logged).
        """
        try:
            value = self._codec.encode(record_name, record)
        except Exception as exc:  # fastavro raises several types (OverflowError for a huge long)
            return f"cannot encode a {record_name}: {exc}"
        self._items[topic].append(_Item(key, value, ANY_PARTITION, origin))
        return None

    def put(
        self,
        table: Table[Any, Any],
        key: Any,
        value: Any,
        partition: int = ANY_PARTITION,
        origin: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue ``table[key] = value``, its changelog record to ``partition`` (by default the
        partitioner's choice for the key, as Faust's ``use_partitioner`` does). If an output of
        ``origin`` is refused for good, the entry is dropped with it."""
        changelog = self._changelogs.get(id(table))
        if changelog is None:
            changelog = self._changelogs[id(table)] = _Changelog(
                table,
                table.changelog_topic.get_topic_name(),
                codecs.get_codec(table.key_serializer).dumps,
                codecs.get_codec(table.value_serializer).dumps,
            )
        item = _Item(changelog.dump_key(key), changelog.dump_value(value), partition, origin)
        changelog.queued.append((key, item))
        changelog.pending[key] = value

    def forget(self, table: Table[Any, Any], key: Any, partition: int) -> None:
        """Queue ``del table[key]``: a tombstone to the changelog ``partition`` its entry was
        written to; the store drops the key once Kafka acknowledged it (``get`` sees None)."""
        self.put(table, key, None, partition)  # queues b"null" for the value: replaced here
        queued = self._changelogs[id(table)].queued
        queued[-1] = (key, queued[-1][1]._replace(value=None))  # a tombstone has no value at all

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
        err = self.add(self._rejected_to, REJECTED_EVENT, key, record, origin=record)
        if err is not None:
            log.error("rejection cannot be encoded", event_id=record["event_id"], error=err)
            self.add(self._rejected_to, REJECTED_EVENT, key, _bare(record, err))

    def notice(self, record_name: str, record: dict[str, Any]) -> None:
        """Queue a notice (a ``DedupeNotice``: not a rejection, nothing needs attention) for the
        rejected topic, which the sink stores in the notice's own table by its record name."""
        err = self.add(self._rejected_to, record_name, record["event_id"].encode(), record)
        if err is not None:
            log.error("notice cannot be encoded", event_id=record["event_id"], error=err)

    def reject_undecodable(self, event: EventT[Any], value: Undecodable) -> None:
        """Queue the rejection of a source record that did not decode (its ``value``)."""
        msg = event.message
        ts_ms = int(msg.timestamp * 1000)
        self.reject(rejected_undecodable(value, msg.topic, msg.partition, msg.offset, ts_ms))

    async def flush(self) -> None:
        """Publish everything queued and return once Kafka acknowledged all of it (or refused
        it for good, see the module docstring); then apply the queued table entries.

        What is not acknowledged yet stays queued, so if this raises or is cancelled (the agent
        restarts; Faust acks the batch anyway), the next flush sends it rather than losing it.
        """
        await self._send(self._items, self._refuse_output)
        for changelog in self._changelogs.values():
            for key, item in changelog.queued:
                if item.origin is not None and id(item.origin) in self._refused:
                    changelog.pending.pop(key, None)  # its output was rejected
                else:
                    self._entries[changelog.topic].append(item)
            changelog.queued.clear()
        self._refused.clear()
        await self._send(self._entries, self._refuse_entry)
        for changelog in self._changelogs.values():
            changelog.table.raw_update(changelog.pending)  # the store only: records are sent
            for key in [k for k, v in changelog.pending.items() if v is None]:
                changelog.table.data.pop(key, None)  # forgotten (tables hold no None value)
            changelog.pending.clear()

    async def _send(
        self, queued: defaultdict[str, list[_Item]], refuse: Callable[[str, _Item, Failure], None]
    ) -> None:
        """Send ``queued`` until nothing retryable is left in it, with the shared backoff."""
        retrying = AsyncRetrying(
            wait=retry.backoff(RETRY_FIRST_S, RETRY_MAX_S), retry=retry_if_result(bool)
        )
        await retrying(self._send_once, queued, refuse)

    async def _send_once(
        self, queued: defaultdict[str, list[_Item]], refuse: Callable[[str, _Item, Failure], None]
    ) -> int:
        """Send what is queued, and what ``refuse`` queues for what Kafka refused for good;
        return how many sends failed retryably (queued again, to go after a wait)."""
        while True:
            pending = {topic: items for topic, items in queued.items() if items}
            if not pending:
                queued.clear()
                return 0
            topics = list(pending)
            results = await asyncio.gather(
                *(self._publish(topic, pending[topic]) for topic in topics)
            )
            queued.clear()
            again = 0
            for topic, outcome in zip(topics, results, strict=True):
                failed = [(i, f) for i, f in zip(pending[topic], outcome, strict=True) if f]
                for item, failure in failed:
                    if not failure.retryable:
                        refuse(topic, item, failure)
                retried = [(item, failure) for item, failure in failed if failure.retryable]
                if retried:
                    queued[topic] += [item for item, _ in retried]
                    again += len(retried)
                    log.warning(
                        "send failed, retrying",
                        topic=topic,
                        count=len(retried),
                        error=retried[0][1].reason,
                    )
            if again:
                return again
            # Only permanent failures: the rejections they queued go out now, without a wait.

    def _refuse_output(self, topic: str, item: _Item, failure: Failure) -> None:
        """Kafka will never store ``item`` in ``topic``: reject its source in its place."""
        REFUSED.labels(topic).inc()
        size = len(item.key) + len(item.value or b"")
        reason = f"{topic} refused the record ({size} bytes) for good: {failure.reason}"
        origin = item.origin
        context = {"topic": topic, "bytes": size, "error": failure.reason}
        if origin is None:
            event_id = item.key.decode(errors="replace") if topic == self._rejected_to else None
            log.error("record refused, nothing left to fall back to", event_id=event_id, **context)
        elif topic == self._rejected_to:
            event_id = origin["event_id"]
            log.error(
                "rejection refused, sending it without its payload", event_id=event_id, **context
            )
            self.add(topic, REJECTED_EVENT, item.key, _bare(origin, reason))
        else:
            log.warning(
                "output refused, rejecting its event", event_id=origin["event_id"], **context
            )
            self._refused[id(origin)] = origin
            self.reject(rejected(origin, "publish", reason))

    def _refuse_entry(self, topic: str, item: _Item, failure: Failure) -> None:
        """A changelog record Kafka will never store: the entry stays in the in-memory table
        (its output was stored) and is missing after the next recovery (module docstring)."""
        REFUSED.labels(topic).inc()
        log.error(
            "changelog entry refused, kept in memory only",
            topic=topic,
            partition=item.partition,
            key=item.key[:200].decode(errors="replace"),
            bytes=len(item.key) + len(item.value or b""),
            error=failure.reason,
        )

    def _publish(self, topic: str, items: list[_Item]) -> Any:
        pairs = [(item.key, item.value) for item in items]
        return self._publisher.publish(topic, pairs, [item.partition for item in items])


def _bare(record: Mapping[str, Any], why: str) -> dict[str, Any]:
    """A rejection without its payload or field: what is left when the whole one cannot be
    stored."""
    return {**record, "field": None, "payload": b"", "reason": f"{record['reason']}; {why}"}

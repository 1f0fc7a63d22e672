"""The normalize + dedupe agent: ``events.raw`` in; ``events.clean`` or ``events.rejected`` out.

Per raw record, in this order:

1. parse it with its dialect's rules (``eventpipe.dialects.parse``, the edge's own code);
   anything that fails (bad bytes, an invalid event, an unexpected error) becomes a
   ``RejectedEvent``: the agent never crashes on a record and never drops one silently;
2. if it carries an external id, ask the dedupe table (``streams.dedupe.decide``); a duplicate
   is counted and dropped;
3. send the ``CleanEvent`` on to identity linking (``events.deduped``, keyed by identity key),
   and only once Kafka acknowledged it record the key in the table, so a marker never exists
   for a record that was not stored. A duplicate is reported on ``events.rejected`` (stage
   ``dedupe``) instead.

Records are handled in batches (``take_events``) and their outputs published together through
``streams.outbox`` (why: per-record Faust sends were the worker's main cost). Offsets: Faust
acks a batch when the agent asks for the next one, which is after the outbox was acknowledged,
and flushes its own producer (the changelog writes) before committing. At-least-once: a record
read again after a crash is forwarded again (``Decision.REDELIVERY``); ClickHouse keeps one row
per event id.

Next stage: ``streams.identity`` reads ``events.deduped`` and produces ``events.clean``.
"""

from __future__ import annotations

from collections import ChainMap, Counter
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from faust import App, EventT, StreamT, TopicT
from prometheus_client import Counter as PromCounter

from eventpipe import dialects
from eventpipe.codec import CLEAN_EVENT
from eventpipe.errors import InvalidEvent
from eventpipe.event import clean_record, to_ms
from streams.codec import Undecodable
from streams.dedupe import Decision, decide, table_key
from streams.identity import identity_key
from streams.outbox import Outbox, batches

log = structlog.get_logger(__name__)

DEDUPE_DROPPED = PromCounter(
    "eventpipe_dedupe_dropped_total", "Keyed events dropped as duplicates", ["product"]
)
PROCESSED = PromCounter(
    "eventpipe_worker_events_total", "Raw events handled by the worker, by outcome", ["outcome"]
)


@dataclass(frozen=True, slots=True)
class Forward:
    key: bytes
    record: dict[str, Any]
    mark: tuple[bytes, int] | None
    """The table entry to store once the record is sent (``None``: nothing to store)."""


@dataclass(frozen=True, slots=True)
class Reject:
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Drop:
    """A duplicate: not forwarded, but reported on ``events.rejected`` (stage ``dedupe``), so
    dedupe counts are queryable and a test can tell a retry has been processed."""

    product: str
    key: bytes
    notice: dict[str, Any]


Outcome = Forward | Reject | Drop


def rejected(
    raw: Mapping[str, Any], stage: str, reason: str, field: str | None = None
) -> dict[str, Any]:
    """The ``RejectedEvent`` for a decoded raw record."""
    return {
        "event_id": raw["event_id"],
        "product": raw["product"],
        "source": raw["source"],
        "dialect": raw["dialect"],
        "stage": stage,
        "field": field,
        "reason": reason,
        "received_at": to_ms(raw["received_at"]),
        "payload": raw["payload"],
    }


def process(raw: Mapping[str, Any], seen: Mapping[bytes, int], window_ms: int) -> Outcome:
    """Decide what one decoded raw record becomes; reads ``seen`` but never writes it."""
    received_ms = to_ms(raw["received_at"])
    try:
        parsed = dialects.parse(raw["dialect"], raw["payload"], received_ms)
    except InvalidEvent as exc:
        return Reject(rejected(raw, "normalize", exc.message, exc.field))
    mark: tuple[bytes, int] | None = None
    external_id = raw["external_id"]
    if external_id is not None:
        key = table_key(raw["product"], raw["source"], external_id)
        decision = decide(seen.get(key), received_ms, window_ms)
        if decision is Decision.DUPLICATE:
            notice = rejected(
                raw, "dedupe", "duplicate of an event accepted earlier", "external_id"
            )
            return Drop(raw["product"], key, notice)
        if decision is Decision.FIRST:
            mark = (key, received_ms)
    record = clean_record(raw, parsed, person_id=parsed.actor_id)
    return Forward(identity_key(record), record, mark)


def _safe_process(raw: Mapping[str, Any], seen: Mapping[bytes, int], window_ms: int) -> Outcome:
    try:
        return process(raw, seen, window_ms)
    except Exception as exc:  # one bad record must not stop the partition
        log.warning("raw event failed", event_id=raw.get("event_id"), error=repr(exc))
        return Reject(rejected(raw, "normalize", f"internal error: {exc!r}"))


@dataclass(frozen=True)
class Deduper:
    """The normalize + dedupe agent: its outputs, its table and the dedupe window.

    The table must be built with ``use_partitioner=True``: Faust refuses table writes inside
    ``take_events`` otherwise. A key's changelog partition is then murmur2(key), which is its
    raw partition too, because the table key is the raw record's Kafka key (the same bytes) and
    the edge produces with the murmur2 partitioner (``eventpipe.kafka.producer_config``).
    """

    outbox: Outbox
    forward_to: str
    table: MutableMapping[bytes, int]
    window_ms: int

    def attach(self, app: App, source: TopicT) -> None:
        async def normalize_dedupe(stream: StreamT[Any]) -> None:
            async for events in batches(stream):
                for outcome, n in (await self.handle(events)).items():
                    PROCESSED.labels(outcome).inc(n)

        app.agent(source, name="normalize_dedupe")(normalize_dedupe)

    async def handle(self, events: Sequence[EventT[Any]]) -> Counter[str]:
        """Process one batch of raw events; return once every output is acknowledged by Kafka.

        The table learns the batch's first-seen keys only after the sends, so a marker never
        exists for a record that was not stored; meanwhile ``marks`` lets a second copy later in
        the same batch see the first one.
        """
        marks: dict[bytes, int] = {}
        seen = ChainMap[bytes, int](marks, self.table)
        counts: Counter[str] = Counter()
        for event in events:
            value: Any = event.value
            if isinstance(value, Undecodable):
                self.outbox.reject_undecodable(event, value)
                counts["rejected"] += 1
                continue
            out = _safe_process(value, seen, self.window_ms)
            if isinstance(out, Forward):
                err = self.outbox.add(self.forward_to, CLEAN_EVENT, out.key, out.record)
                if err is None:
                    if out.mark is not None:
                        marks[out.mark[0]] = out.mark[1]
                    counts["forwarded"] += 1
                    continue
                out = Reject(rejected(value, "normalize", err))
            if isinstance(out, Reject):
                self.outbox.reject(out.record)
                counts["rejected"] += 1
                continue
            self.outbox.reject(out.notice)
            DEDUPE_DROPPED.labels(out.product).inc()
            counts["duplicate"] += 1
        await self.outbox.flush()
        for key, received_ms in marks.items():
            self.table[key] = received_ms
        return counts

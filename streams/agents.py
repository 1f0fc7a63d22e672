"""The normalize + dedupe agent: ``events.raw`` in; ``events.clean`` or ``events.rejected`` out.

Per raw record, in this order:

1. parse it with its dialect's rules (``eventpipe.dialects.parse``, the edge's own code);
   anything that fails (bad bytes, an invalid event, an unexpected error) becomes a
   ``RejectedEvent``: the agent never crashes on a record and never drops one silently;
2. if it carries an external id, ask the dedupe table (``streams.dedupe.decide``); a duplicate
   is counted and dropped;
3. send the ``CleanEvent`` on to identity linking (``events.deduped``, keyed by identity key),
   and only then record the key in the table, so a marker never exists for a record that was
   not handed to the producer. A duplicate is reported on ``events.rejected`` (stage
   ``dedupe``) instead.

Offsets: Faust acks an event when the agent asks for the next one and, before committing
offsets, flushes the producer (clean records and changelog writes alike). At-least-once: a
record read again after a crash is forwarded again (``Decision.REDELIVERY``); ClickHouse keeps
one row per event id.

Next stage: ``streams.identity`` reads ``events.deduped`` and produces ``events.clean``.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import structlog
from faust import App, EventT, StreamT, TopicT
from prometheus_client import Counter as PromCounter

from eventpipe import dialects
from eventpipe.errors import InvalidEvent
from eventpipe.event import clean_record, to_ms
from eventpipe.ids import derived_event_id
from streams.codec import Undecodable
from streams.dedupe import Decision, decide, table_key
from streams.identity import identity_key

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


def rejected_undecodable(
    value: Undecodable, topic: str, partition: int, offset: int, timestamp_ms: int
) -> dict[str, Any]:
    """The ``RejectedEvent`` for bytes that are no raw record.

    Its id is derived from the record's position, so a replay rejects it under the same id.
    """
    return {
        "event_id": derived_event_id(f"{topic}\x1f{partition}\x1f{offset}"),
        "product": "",
        "source": "",
        "dialect": "",
        "stage": "decode",
        "field": None,
        "reason": value.reason,
        "received_at": timestamp_ms,
        "payload": value.data,
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


def attach_normalize_dedupe(
    app: App,
    *,
    source: TopicT,
    forward_to: TopicT,
    rejected_to: TopicT,
    table: MutableMapping[bytes, int],
    window_ms: int,
) -> None:
    """Register the agent on ``app``; every dependency comes in as an argument.

    One event at a time rather than ``stream.take_events()``: the table is then written while
    Faust knows the current event, so a key's changelog partition is its raw partition (the
    one this worker recovers), with no ``use_partitioner``. Producer linger batches the sends.
    """
    outcomes = {name: PROCESSED.labels(name) for name in ("forwarded", "rejected", "duplicate")}

    async def normalize_dedupe(stream: StreamT[Any]) -> None:
        async for event in stream.events():
            outcome = await _handle_event(event, forward_to, rejected_to, table, window_ms)
            outcomes[outcome].inc()

    app.agent(source, name="normalize_dedupe")(normalize_dedupe)


async def _handle_event(
    event: EventT[Any],
    forward_to: TopicT,
    rejected_to: TopicT,
    table: MutableMapping[bytes, int],
    window_ms: int,
) -> str:
    value: Any = event.value
    if isinstance(value, Undecodable):
        msg = event.message
        record = rejected_undecodable(
            value, msg.topic, msg.partition, msg.offset, int(msg.timestamp * 1000)
        )
        await rejected_to.send(key=record["event_id"].encode(), value=record)
        return "rejected"
    out = _safe_process(value, table, window_ms)
    if isinstance(out, Forward):
        try:
            await forward_to.send(key=out.key, value=out.record)
        except Exception as exc:  # e.g. a value the clean schema cannot encode
            out = Reject(rejected(value, "normalize", f"cannot send: {exc!r}"))
        else:
            if out.mark is not None:
                table[out.mark[0]] = out.mark[1]
            return "forwarded"
    if isinstance(out, Reject):
        await rejected_to.send(key=out.record["event_id"].encode(), value=out.record)
        return "rejected"
    await rejected_to.send(key=out.notice["event_id"].encode(), value=out.notice)
    DEDUPE_DROPPED.labels(out.product).inc()
    log.debug("duplicate dropped", product=out.product, key=out.key)
    return "duplicate"

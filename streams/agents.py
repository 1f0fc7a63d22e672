"""The worker's one agent: ``events.raw`` in; ``events.clean``, ``identities`` and
``events.rejected`` out.

Per raw record, in this order:

1. parse it with its dialect's rules (``eventpipe.dialects.parse``, the edge's own code);
   anything that fails (bad bytes, an invalid event, an unexpected error) becomes a
   ``RejectedEvent``: the agent never crashes on a record and never drops one silently;
2. if it carries an external id, ask the dedupe table (``streams.dedupe.decide``); a duplicate
   goes no further, reported on ``events.rejected`` as a ``DedupeNotice`` (its own table: a
   dropped retry needs no attention, a rejection does);
3. link identities (``eventpipe.identity.resolve``) against the identity table, publish a link
   (or a conflict) to ``identities``, and the ``CleanEvent`` with its ``person_id`` to
   ``events.clean``;
4. only once Kafka acknowledged every output, record the batch's first-seen keys and new links
   in the tables, so neither holds an entry for a record that was not stored.

One pass, not two agents with a topic between them: the edge keys ``events.raw`` by identity key
(``eventpipe.identity.identity_key``), so a record's partition is already the one identity
linking needs, and each event is read, decoded, encoded and produced once. With two agents
(normalize + dedupe, then linking over an ``events.deduped`` topic) every event crossed Faust's
consumer twice, which capped the worker at about half of a bare Faust agent's rate.

Tables and partitions: the identity table's key is the raw record's Kafka key (the same bytes),
so murmur2 puts its changelog entry in the record's partition. The dedupe table's key is
(product, source, external_id), which is not the Kafka key, so its entries are written to the
source record's partition explicitly: the worker that owns a raw partition recovers the dedupe
keys of the records it read there. A retry carries the same payload, hence the same identity key
and partition, and meets its key. Both tables' entries are written through the outbox
(``Outbox.put``), after the batch's outputs.

Records are handled in batches (``take_events``) and their outputs published together through
``streams.outbox`` (why: per-record Faust sends were the worker's main cost). Offsets: Faust
acks a batch when the agent asks for the next one, which is after the outbox was acknowledged,
table entries included. At-least-once: a record
read again after a crash is forwarded again (``Decision.REDELIVERY``); ClickHouse keeps one row
per event id.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from faust import App, EventT, StreamT, Table, TopicT
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge, Histogram

from eventpipe import dialects
from eventpipe.codec import CLEAN_EVENT, DEDUPE_NOTICE, IDENTITY_LINK
from eventpipe.errors import InvalidEvent
from eventpipe.event import clean_record, to_ms
from eventpipe.identity import identity_key, resolve
from eventpipe.metrics import labelled
from eventpipe.suppression import NONE as NO_SUPPRESSIONS
from eventpipe.suppression import STAGE as SUPPRESSED_STAGE
from eventpipe.suppression import Suppressions
from streams.codec import Undecodable, dedupe_notice, mark_source, rejected, suppressed
from streams.dedupe import Decision, decide, table_key
from streams.dedupe_table import DedupeTable
from streams.outbox import Outbox, batches

log = structlog.get_logger(__name__)

DEDUPE_DROPPED = PromCounter(
    "eventpipe_dedupe_dropped_total",
    "Keyed events dropped as duplicates (per workspace: the dedupe_notices table, not a label "
    "with one series per workspace)",
)
PROCESSED = PromCounter(
    "eventpipe_worker_records_total",
    "Raw records handled by the worker: outcome clean, duplicate (stage dedupe) or rejected "
    "(stage normalize, identity, decode or suppressed)",
    ["outcome", "stage"],
)
SUPPRESSED = PromCounter(
    "eventpipe_suppressed_total",
    "Events of a forgotten person dropped while suppressed, by who dropped them: the worker, "
    "or a replay or redrive (replay)",
    ["by"],
)
DEDUPE_FORGOTTEN = PromCounter(
    "eventpipe_dedupe_forgotten_total", "Dedupe keys forgotten after the window (tombstoned)"
)
DEDUPE_LIVE = Gauge("eventpipe_dedupe_live_keys", "Dedupe keys held by this worker")
LINKS = PromCounter("eventpipe_identity_links_total", "Identity links by status", ["status"])
BATCH_RECORDS = Histogram(
    "eventpipe_worker_batch_records",
    "Raw records per batch the agent handles",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000),
)
BATCH_SECONDS = Histogram(
    "eventpipe_worker_batch_seconds",
    "From a batch handed to the agent to every output of it acknowledged by Kafka",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
TABLE_KEYS = Gauge("eventpipe_worker_table_keys", "Keys in this worker's table", ["table"])


@dataclass(frozen=True, slots=True)
class Forward:
    record: dict[str, Any]
    """The clean record, its ``person_id`` still the actor (identity linking sets it)."""
    mark: tuple[bytes, int] | None
    """The table entry to store once the record is sent (``None``: nothing to store)."""


@dataclass(frozen=True, slots=True)
class Reject:
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Drop:
    """A duplicate: not forwarded, but reported on ``events.rejected`` as a ``DedupeNotice``,
    so dedupe counts are queryable and a test can tell a retry has been processed."""

    product: str
    key: bytes
    notice: dict[str, Any]


Outcome = Forward | Reject | Drop


def process(
    raw: Mapping[str, Any],
    seen: Callable[[bytes], int | None],
    window_ms: int,
    suppressions: Suppressions = NO_SUPPRESSIONS,
) -> Outcome:
    """Decide what one decoded raw record becomes, given the first ``received_at`` stored for
    a dedupe key (``seen``) and the people forgotten (``suppressions``).

    A forgotten person's event is rejected (stage ``suppressed``, no payload) before dedupe, so
    it claims no dedupe key, and before linking, so it links nothing: an anonymous id first
    seen with a forgotten user id is never linked to them (``eventpipe.suppression``).
    """
    received_ms = to_ms(raw["received_at"])
    try:
        parsed = dialects.parse(raw["dialect"], raw["payload"], received_ms)
    except InvalidEvent as exc:
        return Reject(rejected(raw, "normalize", exc.message, exc.field))
    record = clean_record(raw, parsed, person_id=parsed.actor_id)
    if suppressions.matches(record):
        return Reject(suppressed(raw))
    mark: tuple[bytes, int] | None = None
    external_id = raw["external_id"]
    if external_id is not None:
        key = table_key(raw["product"], raw["source"], external_id)
        first_ms = seen(key)
        decision = decide(first_ms, received_ms, window_ms)
        if decision is Decision.DUPLICATE and first_ms is not None:
            return Drop(raw["product"], key, dedupe_notice(raw, first_ms))
        if decision is Decision.FIRST:
            mark = (key, received_ms)
    return Forward(record, mark)


def _safe_process(
    raw: Mapping[str, Any],
    seen: Callable[[bytes], int | None],
    window_ms: int,
    suppressions: Suppressions,
) -> Outcome:
    try:
        return process(raw, seen, window_ms, suppressions)
    except Exception as exc:  # one bad record must not stop the partition
        log.warning("raw event failed", event_id=raw.get("event_id"), error=repr(exc))
        return Reject(rejected(raw, "normalize", f"internal error: {exc!r}"))


@dataclass(frozen=True)
class EventAgent:
    """The agent's outputs, its two tables and the dedupe window."""

    outbox: Outbox
    clean_to: str
    identities_to: str
    seen: DedupeTable
    """Dedupe key -> the first ``received_at`` (ms), within the window."""
    links: Table[bytes, str]
    """Identity key -> the user id its anonymous id is linked to."""
    window_ms: int
    suppressions: Suppressions = NO_SUPPRESSIONS
    """The people forgotten, kept current by ``eventpipe.suppression_feed``."""

    def attach(self, app: App, source: TopicT) -> None:
        TABLE_KEYS.labels("dedupe").set_function(lambda: len(self.seen))
        TABLE_KEYS.labels("identity").set_function(lambda: len(self.links))

        async def clean_events(stream: StreamT[Any]) -> None:
            async for events in batches(stream):
                started = time.perf_counter()
                counts = await self.handle(events)
                BATCH_SECONDS.observe(time.perf_counter() - started)
                BATCH_RECORDS.observe(len(events))
                for outcome, n in counts.items():
                    labelled(PROCESSED, *outcome.split(":")).inc(n)
                # Between batches: the keys that left the window get their tombstones.
                partitions = {event.message.partition for event in events}
                DEDUPE_FORGOTTEN.inc(await self.seen.sweep(self.outbox, partitions))
                DEDUPE_LIVE.set(self.seen.live_keys())

        app.agent(source, name="clean_events")(clean_events)

    async def handle(self, events: Sequence[EventT[Any]]) -> Counter[str]:
        """Process one batch of raw events; return once every output is acknowledged by Kafka,
        with the count of each ``"outcome:stage"`` (``clean:``, ``duplicate:dedupe``,
        ``rejected:normalize``, ...).

        Table lookups go through the outbox (``Outbox.get``), so a later record of the batch
        sees an earlier one's key or link before the tables do.
        """
        seen = functools.partial(self.outbox.get, self.seen)
        counts: Counter[str] = Counter()
        for event in events:
            value: Any = event.value
            if isinstance(value, Undecodable):
                self.outbox.reject_undecodable(event, value)
                counts["rejected:decode"] += 1
                continue
            msg = event.message
            mark_source(value, msg.topic, msg.partition, msg.offset)  # for its rejections
            self.seen.expiry.observe(event.message.partition, to_ms(value["received_at"]))
            out = _safe_process(value, seen, self.window_ms, self.suppressions)
            if isinstance(out, Drop):
                self.outbox.notice(DEDUPE_NOTICE, out.notice)
                DEDUPE_DROPPED.inc()
                counts["duplicate:dedupe"] += 1
                continue
            if isinstance(out, Forward):
                err = self._link_and_add(out.record, value)
                if err is None:
                    if out.mark is not None:
                        key, received_ms = out.mark
                        partition = event.message.partition
                        self.outbox.put(self.seen, key, received_ms, partition, origin=value)
                        self.seen.expiry.track(partition, key, received_ms)
                    counts["clean:"] += 1
                    continue
                out = Reject(rejected(value, "identity", err))
            self.outbox.reject(out.record)
            counts[f"rejected:{out.record['stage']}"] += 1
            if out.record["stage"] == SUPPRESSED_STAGE:
                labelled(SUPPRESSED, "worker").inc()
        await self.outbox.flush()  # then the tables have the batch's keys and links
        return counts

    def _link_and_add(self, record: dict[str, Any], raw: Mapping[str, Any]) -> str | None:
        """Queue the record's link (if any) and the record; return why not, else None.

        A new link is put in the table only when both were queued. Both name ``raw`` as their
        origin: if Kafka refuses either for good, ``raw`` is rejected (``streams.outbox``).
        """
        key = identity_key(
            record["product"], record["anonymous_id"], record["person_id"], record["event_id"]
        )
        try:
            out = resolve(record, self.outbox.get(self.links, key))
        except Exception as exc:  # one bad record must not stop the partition
            return f"internal error: {exc!r}"
        record["person_id"] = out.person_id
        if out.link is not None:
            err = self.outbox.add(self.identities_to, IDENTITY_LINK, key, out.link, raw)
            if err is not None:
                return err
        err = self.outbox.add(self.clean_to, CLEAN_EVENT, record["event_id"].encode(), record, raw)
        if err is not None:
            return err  # a link queued above may still go out: its event is then rejected
        if out.link is not None:
            labelled(LINKS, out.link["status"]).inc()
            if out.link["status"] == "conflict":
                log.info(
                    "identity conflict kept the first link",
                    product=record["product"],
                    event_id=record["event_id"],
                )
        if out.store is not None:
            self.outbox.put(self.links, key, out.store, origin=raw)
        return None

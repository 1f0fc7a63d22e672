"""Identity linking: ``events.deduped`` (keyed by identity key) in; ``events.clean`` and
``identities`` out.

The table maps (product, anonymous id) to the user id it was linked to. Rules:

* a link is made when one event carries both a valid anonymous id and a valid user id
  (v1 ``anonymous_id`` + ``user_id``; v2 ``properties.anonymous_id`` + a user subject; named
  ``user.anonymous_id`` + ``user.external_id``), and published to ``identities``;
* ids that are placeholders, not people (``null``, ``undefined``, ``anonymous``, ``0``, ...;
  ``INVALID_IDS``) never link, and are not used as the event's person either;
* a link is never re-pointed: an anonymous id already linked to user A, seen with user B, keeps
  A; the attempt is published with status ``conflict`` so it is stored, not lost;
* every clean event gets ``person_id``: its own user id, else the user its anonymous id is
  linked to (when known at processing time), else its anonymous id, else its subject.
  ClickHouse's ``events_resolved`` view resolves earlier anonymous events at query time.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from faust import App, EventT, StreamT, TopicT
from prometheus_client import Counter as PromCounter

from eventpipe.codec import CLEAN_EVENT, IDENTITY_LINK
from streams.codec import Undecodable
from streams.outbox import Outbox, batches

log = structlog.get_logger(__name__)

_SEP = "\x1f"

INVALID_IDS = frozenset(
    {
        "",
        "null",
        "none",
        "nil",
        "nan",
        "undefined",
        "anonymous",
        "anon",
        "guest",
        "unknown",
        "0",
        "-1",
        "true",
        "false",
        "id",
        "user",
        "user_id",
        "distinct_id",
        "distinctid",
        "anonymous_id",
        "not_authenticated",
        "email",
        "[object object]",
    }
)
"""Values SDKs send when they have no id (PostHog refuses to merge on a similar list)."""

LINKS = PromCounter("eventpipe_identity_links_total", "Identity links by status", ["status"])


def valid_id(value: str | None) -> str | None:
    """The id, or None when it is missing or a placeholder that must never link two people."""
    if value is None or value.strip().lower() in INVALID_IDS:
        return None
    return value


def identity_key(record: Mapping[str, Any]) -> bytes:
    """Kafka key of ``events.deduped``: (product, anonymous id), else (product, person)."""
    anon = valid_id(record.get("anonymous_id"))
    who = anon if anon is not None else record.get("person_id") or record["event_id"]
    return f"{record['product']}{_SEP}{who}".encode()


@dataclass(frozen=True, slots=True)
class Linked:
    """What one event does to identities: its person, and a link record to publish, if any."""

    person_id: str
    link: dict[str, Any] | None = None
    store: str | None = None
    """The user id to store for this event's identity key (a first link)."""


def resolve(record: Mapping[str, Any], known: str | None) -> Linked:
    """Apply the module's rules to one clean record, given the user its anonymous id maps to."""
    anon = valid_id(record.get("anonymous_id"))
    user = valid_id(record.get("user_id"))
    fallback = record.get("subject_id") or ""
    if anon is None:
        return Linked(user or fallback)
    if user is None:
        return Linked(known or anon)
    if known == user:
        return Linked(user)
    status = "linked" if known is None else "conflict"
    link = {
        "product": record["product"],
        "anonymous_id": anon,
        "user_id": user,
        "linked_at": record["occurred_at"],
        "event_id": record["event_id"],
        "status": status,
    }
    return Linked(user, link, user if known is None else None)


@dataclass(frozen=True)
class IdentityLinker:
    """The link agent: its outputs and its table (keyed like its source: identity key).

    Batched like ``streams.agents`` (same reasons; the table is ``use_partitioner=True`` and its
    key is the source record's Kafka key, so the changelog partition is the source partition).
    """

    outbox: Outbox
    forward_to: str
    identities_to: str
    table: MutableMapping[bytes, str]

    def attach(self, app: App, source: TopicT) -> None:
        async def link_identities(stream: StreamT[Any]) -> None:
            async for events in batches(stream):
                await self.handle(events)

        app.agent(source, name="link_identities")(link_identities)

    async def handle(self, events: Sequence[EventT[Any]]) -> None:
        """Link one batch; return once every output is acknowledged by Kafka.

        New links reach the table only after the sends (like the dedupe markers); ``links``
        lets a later event of the same batch see a link made earlier in it.
        """
        links: dict[bytes, str] = {}
        for event in events:
            value: Any = event.value
            if isinstance(value, Undecodable):  # not written by our agents: keep it
                self.outbox.reject_undecodable(event, value)
                continue
            record: dict[str, Any] = dict(value)
            key = event.key if isinstance(event.key, bytes) else identity_key(record)
            try:
                out = resolve(record, links.get(key) or self.table.get(key))
            except Exception as exc:  # one bad record must not stop the partition
                self.outbox.reject(_rejection(record, f"internal error: {exc!r}"))
                continue
            if out.link is not None:
                err = self.outbox.add(self.identities_to, IDENTITY_LINK, key, out.link)
                if err is not None:
                    self.outbox.reject(_rejection(record, err))
                    continue
                LINKS.labels(out.link["status"]).inc()
                if out.link["status"] == "conflict":
                    log.info(
                        "identity conflict kept the first link",
                        product=record["product"],
                        event_id=record["event_id"],
                    )
            record["person_id"] = out.person_id
            err = self.outbox.add(self.forward_to, CLEAN_EVENT, record["event_id"].encode(), record)
            if err is not None:
                self.outbox.reject(_rejection(record, err))
                continue
            if out.store is not None:
                links[key] = out.store
        await self.outbox.flush()
        for key, user in links.items():
            self.table[key] = user


def _rejection(record: Mapping[str, Any], reason: str) -> dict[str, Any]:
    """The ``RejectedEvent`` for a clean record this agent cannot handle (its raw payload stays
    in ``events.raw``, so none is attached)."""
    return {
        "event_id": record["event_id"],
        "product": record["product"],
        "source": record["source"],
        "dialect": record["dialect"],
        "stage": "identity",
        "field": None,
        "reason": reason,
        "received_at": record["received_at"],
        "payload": b"",
    }

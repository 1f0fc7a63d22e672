"""The identity rules, written once and free of Faust: the edge keys ``events.raw`` with
:func:`identity_key`, and the worker (``streams.agents``) applies :func:`resolve`.

The worker's identity table maps (product, anonymous id) to the user id it was linked to. Rules:

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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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


def valid_id(value: str | None) -> str | None:
    """The id, or None when it is missing or a placeholder that must never link two people."""
    if value is None or value.strip().lower() in INVALID_IDS:
        return None
    return value


def identity_key(product: str, anonymous_id: str | None, actor_id: str, event_id: str) -> bytes:
    """Kafka key of ``events.raw``: (product, anonymous id), else (product, actor), else the id.

    The edge keys each raw record with it, so every event of one anonymous id meets the same
    partition, and so the same worker and identity-table partition: links are made and read
    there in the order the edge accepted them. A client's retry carries the same payload, so it
    meets the same partition too, and with it the dedupe table's entry for its external id.
    ``actor_id`` is ``ParsedEvent.actor_id``.
    """
    who = valid_id(anonymous_id) or valid_id(actor_id) or event_id  # no hot "null" key
    return f"{product}{_SEP}{who}".encode()


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

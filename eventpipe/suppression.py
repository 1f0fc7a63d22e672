"""Forgotten people, as every stage that could write their rows again checks them.

A person is (product, person id). Forgetting one (``eventpipe forget``, ``/admin/forget``)
deletes their rows from ClickHouse (``sinks.forget``) and *suppresses* them: until the
suppression is lifted, an event of theirs is dropped by the worker's rules
(``streams.agents.process``, which replay and redrive run too), with a ``rejected_events`` row
of stage ``suppressed`` that holds no payload (``streams.codec.suppressed``).

Whose event is it? One that names, in its user id, anonymous id or user subject, the person id
or one of the anonymous ids linked to them when they were forgotten. The same rule picks the
rows the forget deletes (``sinks.forget``), so what is deleted and what is suppressed agree.

Ids are kept as digests (:func:`digest`: SHA-256 of product and id), never in clear: the
suppressions topic is compacted and kept forever, and ClickHouse keeps its record, so neither
may hold the very ids the person asked us to forget. Checking an event costs up to three
digests, and only for a product that has a suppression.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from eventpipe.identity import valid_id

STAGE = "suppressed"
"""The rejection stage of a suppressed event."""
REASON = "the person was forgotten; the event is dropped while the suppression lasts"
USER_SUBJECT = "user"
"""Only a user subject is a person: an account or group id may equal a user id by chance."""
_SEP = "\x1f"


def digest(product: str, value: str) -> str:
    """The digest an id of ``product`` is known by in a suppression."""
    return hashlib.sha256(f"{product}{_SEP}{value}".encode()).hexdigest()


def topic_key(product: str, person: str) -> bytes:
    """The suppressions topic's key of ``person`` (a digest): one per person, so compaction
    keeps the latest state, and a lift is this key's tombstone."""
    return f"{product}{_SEP}{person}".encode()


def parse_key(key: bytes) -> tuple[str, str]:
    """(product, person digest) of a suppressions topic key; ValueError if it is none."""
    product, person = key.decode().split(_SEP, 1)
    return product, person


@dataclass(frozen=True, slots=True)
class Suppression:
    """One forgotten person: the digests of their person id and linked anonymous ids."""

    product: str
    person: str
    """Digest of the person id."""
    ids: frozenset[str]
    """Digests of every id that makes an event theirs (the person's own included)."""
    suppressed_at_ms: int

    @classmethod
    def of(
        cls, product: str, person_id: str, anonymous_ids: Iterable[str], at_ms: int
    ) -> Suppression:
        ids = {digest(product, i) for i in (person_id, *anonymous_ids) if valid_id(i)}
        return cls(product, digest(product, person_id), frozenset(ids), at_ms)

    def to_json(self) -> bytes:
        """The topic's value (JSON: a control record read by eventpipe alone, see README)."""
        return orjson.dumps(
            {
                "product": self.product,
                "person": self.person,
                "ids": sorted(self.ids),
                "suppressed_at_ms": self.suppressed_at_ms,
            }
        )

    @classmethod
    def from_json(cls, value: bytes) -> Suppression:
        d = orjson.loads(value)
        return cls(d["product"], d["person"], frozenset(d["ids"]), int(d["suppressed_at_ms"]))


class Suppressions:
    """The suppressions in force, looked up by product and id digest."""

    def __init__(self, items: Iterable[Suppression] = ()) -> None:
        self._people: dict[tuple[str, str], Suppression] = {}
        self._ids: dict[str, dict[str, int]] = {}
        """product -> id digest -> how many suppressions name it."""
        for s in items:
            self.apply(s.product, s.person, s)

    def __len__(self) -> int:
        return len(self._people)

    def apply(self, product: str, person: str, suppression: Suppression | None) -> None:
        """Put (or with None, lift) the suppression of ``person`` (a digest).

        The feed's thread calls this while the worker's loop reads :meth:`matches`: the new ids
        are counted before the old ones are let go, so a re-published suppression never has a
        moment without its ids."""
        old = self._people.pop((product, person), None)
        ids = self._ids.setdefault(product, {})
        if suppression is not None:
            self._people[(product, person)] = suppression
            for i in suppression.ids:
                ids[i] = ids.get(i, 0) + 1
        for i in old.ids if old else ():
            ids[i] -= 1
            if not ids[i]:
                del ids[i]

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Whether ``record`` (a clean record) is an event of a suppressed person."""
        ids = self._ids.get(record["product"])
        if not ids:
            return False
        product = record["product"]
        candidates = [record.get("user_id"), record.get("anonymous_id")]
        if record.get("subject_type") == USER_SUBJECT:
            candidates.append(record.get("subject_id"))
        for candidate in candidates:
            value = valid_id(candidate)
            if value is not None and digest(product, value) in ids:
                return True
        return False


NONE = Suppressions()
"""No one suppressed (the default of code paths that were given no suppressions)."""

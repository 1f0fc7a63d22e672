"""Event ids and dedupe keys.

The id of an event that carries an external id (or an ``Idempotency-Key``) is derived from its
dedupe key, so a retried request gets the same id back and ClickHouse's ReplacingMergeTree keeps
one row even when the agents' dedupe table lost state. Other events get a random id at the edge,
kept in the raw record, so an at-least-once redelivery still carries the same id.
"""

from __future__ import annotations

import base64
import hashlib
import os

PREFIX = "evt_"
_SEP = "\x1f"  # unit separator: cannot appear in a JSON-decoded id without being escaped


def dedupe_key(product: str, source: str, external_id: str) -> str:
    """The (product, source, external_id) key of document 000, as one string."""
    return f"{product}{_SEP}{source}{_SEP}{external_id}"


def _encode(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def derived_event_id(key: str) -> str:
    return PREFIX + _encode(hashlib.blake2b(key.encode("utf-8"), digest_size=15).digest())


def random_event_id() -> str:
    return PREFIX + _encode(os.urandom(15))


def event_id_for(product: str, source: str, external_id: str | None) -> tuple[str, str]:
    """Return (event id, Kafka key): the key is the dedupe key when there is one, else the id."""
    if external_id is None:
        eid = random_event_id()
        return eid, eid
    key = dedupe_key(product, source, external_id)
    return derived_event_id(key), key

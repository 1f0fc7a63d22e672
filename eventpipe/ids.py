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


class _RandomBytes:
    """``os.urandom`` drawn 4,096 ids at a time: one ``getrandom`` call per event was ~13% of the
    edge's CPU in the benchmark's profile. Refilled after a fork, so two processes never share
    ids. Not thread-safe by design: ids are made on the edge's event loop thread."""

    BLOCK = 24 * 4096

    def __init__(self) -> None:
        self._buf = b""
        self._at = 0

    def reset(self) -> None:
        self._buf, self._at = b"", 0

    def take(self, n: int) -> bytes:
        if self._at + n > len(self._buf):
            self._buf, self._at = os.urandom(self.BLOCK), 0
        out = self._buf[self._at : self._at + n]
        self._at += n
        return out


_random = _RandomBytes()
os.register_at_fork(after_in_child=_random.reset)


_ALPHABET = b"abcdefghijklmnopqrstuvwxyz234567"  # base32's, lower-cased: ids look alike
_TO_ALPHABET = bytes(_ALPHABET[i % 32] for i in range(256))


def random_event_id() -> str:
    """24 random base32 characters (120 bits): each from one random byte's low 5 bits, which
    ``bytes.translate`` does in C (``b32encode`` of 15 bytes was ~7% of the edge's CPU)."""
    return PREFIX + _random.take(24).translate(_TO_ALPHABET).decode("ascii")


def event_id_for(product: str, source: str, external_id: str | None) -> str:
    """The id of an event: derived from its dedupe key when it has an external id, else random."""
    if external_id is None:
        return random_event_id()
    return derived_event_id(dedupe_key(product, source, external_id))

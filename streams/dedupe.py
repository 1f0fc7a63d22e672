"""The dedupe rule, written once and free of Faust so it can be tested without a broker.

The table maps a dedupe key (``eventpipe.ids.dedupe_key`` as UTF-8 bytes, the same bytes the edge
uses as the ``events.raw`` Kafka key, so a key's changelog partition is its raw partition) to the
``received_at`` (ms) of the first accepted occurrence.

An event is a duplicate when its key was accepted before, at a *different* ``received_at``, less
than the window away. The same ``received_at`` means the same raw record delivered again (a
restarted worker re-reads what it had not committed): that one is forwarded again rather than
dropped, because its clean record may never have been sent; ClickHouse keeps one row per event id.
"""

from __future__ import annotations

from enum import Enum

from eventpipe.ids import dedupe_key

SENTINEL_KEY = b"__eventpipe_sentinel__"
"""Written to each changelog partition before a worker starts (see ``streams.changelog``).

It cannot collide with a real key: every dedupe key holds two ``\\x1f`` separators, and this
one holds none."""

SENTINEL_VALUE = b"0"
"""The sentinel's value, as the table's ``json`` value serializer writes the integer 0."""


class Decision(Enum):
    FIRST = "first"
    """Never seen (or seen outside the window): store ``received_at`` and forward."""
    REDELIVERY = "redelivery"
    """The very record already accepted, read again: forward, the table already has it."""
    DUPLICATE = "duplicate"
    """Another occurrence within the window: drop."""


def table_key(product: str, source: str, external_id: str) -> bytes:
    return dedupe_key(product, source, external_id).encode("utf-8")


def decide(first_ms: int | None, received_ms: int, window_ms: int) -> Decision:
    """Classify one keyed event against the ``received_at`` stored for its key (if any).

    Distance is absolute: edge replicas' clocks differ, so a copy may carry an earlier time
    than the one accepted first and is still the same client retry.
    """
    if first_ms is None:
        return Decision.FIRST
    if received_ms == first_ms:
        return Decision.REDELIVERY
    if abs(received_ms - first_ms) < window_ms:
        return Decision.DUPLICATE
    return Decision.FIRST

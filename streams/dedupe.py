"""The dedupe rule, written once and free of Faust so it can be tested without a broker.

The table maps a dedupe key (``eventpipe.ids.dedupe_key`` as UTF-8 bytes: product, source,
external id) to the ``received_at`` (ms) of the first accepted occurrence. ``events.raw`` is
keyed by the identity key (``eventpipe.identity``), not by this one, so the agent writes each
entry to its source record's partition explicitly: the worker that owns a raw partition
recovers the keys of the records it read there (docs/architecture.md, "Data flow").

An event is a duplicate when its key was accepted before, at a *different* ``received_at``, less
than the window away. The same ``received_at`` means the same raw record delivered again (a
restarted worker re-reads what it had not committed): that one is forwarded again rather than
dropped, because its clean record may never have been sent; ClickHouse keeps one row per event id.

Keys are forgotten once they left the window (:class:`Expiry`), so the table, its changelog and
a restart's recovery hold the window's keys, not every external id ever seen. Forgetting a key
never changes a decision: :func:`expired` holds only for keys that :func:`decide` would answer
``FIRST`` for at any later ``received_at`` of their partition.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable
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


def expired(first_ms: int, horizon_ms: int, window_ms: int) -> bool:
    """True when a key first accepted at ``first_ms`` is out of the window at ``horizon_ms``.

    Time is the records' ``received_at`` (the edge's clock, as :func:`decide` uses), never the
    worker's wall clock: a worker catching up a backlog, or replaying ``events.raw``, must still
    see a retry of its backlog as the duplicate it was when the edge accepted it. A wall-clock
    expiry would forget the keys of an hour-old backlog that an hour-old retry still needs.
    """
    return horizon_ms - first_ms >= window_ms


class Expiry:
    """The dedupe keys of each partition in the order they were stored, and each partition's
    horizon: the latest ``received_at`` seen there (the stream time the window is measured at).

    Per partition because a partition that lags (a backlog, a worker that just took it over)
    must not lose keys to the time of a partition that is ahead. In order because a partition's
    records carry ``received_at`` in about the order the edge accepted them: :meth:`due` pops
    from the front until the first key still in the window, so a sweep costs what it forgets,
    not what is stored. A key that arrives out of order (an edge whose clock is off) is
    forgotten that much later, never earlier than :func:`expired` allows.

    It knows nothing of the table: a popped key may have been stored again since (a newer
    ``first_ms`` for it is queued behind), which the caller tells by comparing values.
    """

    def __init__(self, window_ms: int) -> None:
        if window_ms <= 0:
            raise ValueError(f"the dedupe window must be positive, not {window_ms} ms")
        self.window_ms = window_ms
        self._queues: defaultdict[int, deque[tuple[int, bytes]]] = defaultdict(deque)
        self._horizons: dict[int, int] = {}

    def observe(self, partition: int, received_ms: int) -> None:
        """Move ``partition``'s horizon to ``received_ms`` if that is later."""
        if received_ms > self._horizons.get(partition, received_ms - 1):
            self._horizons[partition] = received_ms

    def track(self, partition: int, key: bytes, first_ms: int) -> None:
        """Remember that ``key`` was stored with ``first_ms`` in ``partition``."""
        self._queues[partition].append((first_ms, key))
        self.observe(partition, first_ms)

    def due(self, partitions: Iterable[int]) -> list[tuple[int, bytes, int]]:
        """Pop and return ``(partition, key, first_ms)`` of every key of ``partitions`` that is
        out of the window at its partition's horizon."""
        out: list[tuple[int, bytes, int]] = []
        for partition in partitions:
            queue = self._queues.get(partition)
            horizon = self._horizons.get(partition)
            if not queue or horizon is None:
                continue
            oldest = horizon - self.window_ms  # expired(first, horizon) <=> first <= oldest
            while queue and queue[0][0] <= oldest:
                first_ms, key = queue.popleft()
                out.append((partition, key, first_ms))
        return out

    def drop(self, partition: int) -> list[tuple[bytes, int]]:
        """Forget ``partition`` (revoked from this worker); return its ``(key, first_ms)``."""
        self._horizons.pop(partition, None)
        return [(key, first_ms) for first_ms, key in self._queues.pop(partition, ())]

    def partitions(self) -> set[int]:
        return set(self._queues) | set(self._horizons)

    def __len__(self) -> int:
        """Keys tracked (a key stored twice counts twice until its older copy is due)."""
        return sum(len(q) for q in self._queues.values())

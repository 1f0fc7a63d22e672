"""A person's rows out of ClickHouse, and the record of their suppression.

What belongs to a person (``eventpipe.suppression``): in their product, the rows naming their
person id or an anonymous id linked to them. Per table:

* ``events``: user id, anonymous id, user subject or person id among those ids (the person
  id also covers an anonymous event resolved to them when the worker had the link);
* ``user_traits``: the traits of those ids, and any trait row of an event deleted above;
* ``identity_links``: links and conflicts of those ids (as user or as anonymous id);
* ``persons_daily`` (the daily actives rollup): its rows of those ids;
* ``dedupe_notices``: the notices of their events (dropped retries of them);
* ``rejected_events``: rejections of their events, and rejections whose payload names one of
  the ids as a JSON string (an event refused before it had a row).

The aggregated rollups (``events_minutely``, ``events_hourly``, ``catalog_*_hourly``,
``identity_links_daily``, ``rejections_hourly``) keep their counts: they hold sketches of event
ids (``uniqCombined`` states) per name and hour, no id of a person, and cannot give one event
back; the views that name events (``catalog_anomalies``' examples) read ``events`` itself.

Deletes are lightweight ``DELETE FROM`` (synchronous by default: the rows are gone from every
query when the statement returns; the parts are rewritten at later merges). ``events`` goes
last: the other tables' conditions read it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client

from eventpipe.suppression import USER_SUBJECT, Suppression, digest

_THEIRS = (
    "(user_id IN %(ids)s OR anonymous_id IN %(ids)s OR person_id IN %(ids)s "
    f"OR (subject_type = '{USER_SUBJECT}' AND subject_id IN %(ids)s))"
)
_EVENTS = f"SELECT event_id FROM events WHERE product = %(product)s AND {_THEIRS}"

PERSON_TABLES: dict[str, tuple[str, str]] = {
    # table -> (what is counted, which rows are theirs), in the order they are deleted
    "user_traits": (
        "count()",
        f"user_id IN %(ids)s OR event_id IN ({_EVENTS})",
    ),
    "identity_links": ("count()", "user_id IN %(ids)s OR anonymous_id IN %(ids)s"),
    "persons_daily": ("count()", "person_id IN %(ids)s"),
    "dedupe_notices": ("count()", f"event_id IN ({_EVENTS})"),
    "rejected_events": (
        "count()",
        f"event_id IN ({_EVENTS}) OR multiSearchAny(payload, %(quoted)s)",
    ),
    "events": ("uniqExact(event_id)", _THEIRS),
}
"""Counted with ``FINAL`` where the engine collapses copies, so a count is of rows a query sees."""
_FINAL = {"user_traits", "identity_links", "persons_daily", "dedupe_notices", "events"}


def _ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


class PersonEraser:
    """The forget's ClickHouse side, on a writing client of its own (calls serialised)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._lock = threading.Lock()

    def anonymous_ids(self, product: str, person_id: str) -> list[str]:
        """The anonymous ids linked to ``person_id`` (conflicts are someone else's)."""
        with self._lock:
            rows = self._client.query(
                "SELECT DISTINCT anonymous_id FROM identity_links WHERE product = %(product)s "
                "AND user_id = %(person)s AND status = 'linked' ORDER BY anonymous_id",
                parameters={"product": product, "person": person_id},
            ).result_rows
        return [r[0] for r in rows]

    def erase(self, product: str, ids: Sequence[str]) -> dict[str, int]:
        """Delete every row of ``ids`` (the person id and their anonymous ids) in ``product``;
        return how many each table held (``events``: distinct events)."""
        params: dict[str, Any] = {
            "product": product,
            "ids": list(ids),
            "quoted": [orjson.dumps(i).decode() for i in ids][:255],  # multiSearch's limit
        }
        counts: dict[str, int] = {}
        with self._lock:
            for table, (counted, theirs) in PERSON_TABLES.items():
                where = f"product = %(product)s AND ({theirs})"
                final = " FINAL" if table in _FINAL else ""
                found = self._client.query(
                    f"SELECT {counted} FROM {table}{final} WHERE {where}", parameters=params
                ).result_rows
                counts[table] = int(found[0][0])
                if counts[table]:
                    self._client.command(f"DELETE FROM {table} WHERE {where}", parameters=params)
        return counts

    def record(self, s: Suppression, deleted: dict[str, int] | None = None) -> None:
        """Store ``s`` as in force, with the counts deleted so far."""
        self._insert(s.product, s.person, sorted(s.ids), s.suppressed_at_ms, None, deleted or {})

    def lift(self, product: str, person_id: str, at_ms: int) -> bool:
        """Mark the person's suppression lifted; False if none was in force."""
        person = digest(product, person_id)
        with self._lock:
            rows = self._client.query(
                "SELECT ids, suppressed_at, deleted FROM suppressions FINAL "
                "WHERE product = %(product)s AND person = %(person)s AND lifted_at IS NULL",
                parameters={"product": product, "person": person},
            ).result_rows
        if not rows:
            return False
        ids, suppressed_at, deleted = rows[0]
        self._insert(product, person, list(ids), _ms(suppressed_at) or 0, at_ms, dict(deleted))
        return True

    def suppression(self, product: str, person: str) -> Suppression | None:
        """The suppression in force for ``person`` (a digest), if any."""
        found = [s for s in self.active(product) if s.person == person]
        return found[0] if found else None

    def active(self, product: str | None = None) -> list[Suppression]:
        """The suppressions in force (replay and redrive honour them)."""
        return active_suppressions(self._client, self._lock, product)

    def _insert(
        self,
        product: str,
        person: str,
        ids: list[str],
        suppressed_ms: int,
        lifted_ms: int | None,
        deleted: dict[str, int],
    ) -> None:
        def ts(ms: int | None) -> datetime | None:
            return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)

        row = [product, person, ids, ts(suppressed_ms), ts(lifted_ms), deleted]
        with self._lock:
            self._client.insert(
                "suppressions",
                [row],
                column_names=["product", "person", "ids", "suppressed_at", "lifted_at", "deleted"],
            )


def active_suppressions(
    client: Client, lock: threading.Lock, product: str | None = None
) -> list[Suppression]:
    """The suppressions in force (of ``product``, or all), as ClickHouse records them."""
    with lock:
        rows = client.query(
            "SELECT product, person, ids, suppressed_at FROM suppressions FINAL "
            "WHERE lifted_at IS NULL AND (%(product)s IS NULL OR product = %(product)s)",
            parameters={"product": product},
        ).result_rows
    return [Suppression(p, person, frozenset(ids), _ms(at) or 0) for p, person, ids, at in rows]

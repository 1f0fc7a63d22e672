"""What a replay asks ClickHouse, and the one write it makes there itself.

Replay (``replay/``) runs raw records through the worker's rules in its own process, so it cannot
see the worker's Faust tables. It asks ClickHouse instead, which is the better source anyway:

* **stored rows** (:meth:`EventStore.rows`) by event id: what a record would change (new,
  identical, changed), and the dedupe decision. A keyed record whose row is missing is written
  again, even when the live dedupe table knows the key (OpenMeter #4902: a known key whose row
  never reached storage must not be skipped);
* **first links** (:meth:`EventStore.links`): the user each (product, anonymous id) was linked
  to first (``identity_resolved``'s rule: earliest ``linked_at``), so a replay never re-points one;
* **recorded rejections** (:meth:`EventStore.rejections`): a replay re-rejecting a record that was
  rejected before for the same reason does not store the rejection twice.

Writes go through Kafka and the sink, except one: when a replay changes a row's sorting key
(``canonical_name`` or the day of ``occurred_at``, migration 001), ReplacingMergeTree keeps the old
row next to the new one. :meth:`EventStore.delete_superseded` deletes the copies of an event
inserted before the replay began, and only where a copy inserted since exists (so an event whose
new row the sink has not stored yet keeps its old one). ``user_traits`` rows made from a superseded
copy go with it. :meth:`EventStore.delete_events` is an operator's repair: rows deleted there are
what a replay fills in again.

All SQL here binds its values (clickhouse-connect's parameters), never splices them in. Runs
against chDB or a server alike; ``eventpipe dev`` serves these calls to other processes
(``producers/store_routes.py``), since it owns the chDB directory.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from clickhouse_connect.driver.client import Client

from eventpipe.suppression import STAGE as SUPPRESSED_STAGE
from eventpipe.suppression import Suppression
from sinks.clickhouse import EVENTS
from sinks.forget import active_suppressions
from sinks.journey import journeys

ROW_COLUMNS = tuple(c for c in EVENTS.columns)
"""A stored row as a clean record: the CleanEvent fields, timestamps as epoch milliseconds."""

_SELECT_ROW = ", ".join(
    f"toUnixTimestamp64Milli({c}) AS {c}" if c in EVENTS.timestamps else c for c in ROW_COLUMNS
)

Link = tuple[str, str]
"""(product, anonymous id)."""


@dataclass(frozen=True)
class RejectedFilter:
    """Which rejections ``eventpipe rejected`` lists and ``eventpipe redrive`` sends again."""

    product: str | None = None
    stage: str | None = None
    reason: str | None = None
    """A case-insensitive part of the reason."""
    from_ms: int | None = None
    to_ms: int | None = None
    """By ``received_at``, [from, to)."""
    event_ids: tuple[str, ...] = ()
    pending: bool = False
    """Only rejections no redrive resolved yet (accepted, or found a copy already stored)."""

    def where(self) -> tuple[str, dict[str, Any]]:
        parts, params = ["1"], {}
        for name in ("product", "stage"):
            if getattr(self, name) is not None:
                parts.append(f"{name} = %({name})s")
                params[name] = getattr(self, name)
        if self.stage is None:
            # A forgotten person's dropped event needs no attention (and cannot be redriven: it
            # has no payload); it is listed only when its stage is asked for.
            parts.append(f"stage != '{SUPPRESSED_STAGE}'")
        if self.reason is not None:
            parts.append("positionCaseInsensitiveUTF8(reason, %(reason)s) > 0")
            params["reason"] = self.reason
        if self.from_ms is not None:
            parts.append("toUnixTimestamp64Milli(received_at) >= %(from_ms)s")
            params["from_ms"] = self.from_ms
        if self.to_ms is not None:
            parts.append("toUnixTimestamp64Milli(received_at) < %(to_ms)s")
            params["to_ms"] = self.to_ms
        if self.event_ids:
            parts.append("event_id IN %(event_ids)s")
            params["event_ids"] = list(self.event_ids)
        if self.pending:
            parts.append("redrive_outcome NOT IN ('accepted', 'duplicate')")
        return " AND ".join(parts), params

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> RejectedFilter:
        values = dict(body)
        values["event_ids"] = tuple(values.get("event_ids") or ())
        return cls(**values)


REJECTION_COLUMNS = (
    "event_id",
    "product",
    "source",
    "dialect",
    "stage",
    "field",
    "reason",
    "received_at",
    "external_id",
    "source_topic",
    "source_partition",
    "source_offset",
    "redrive_outcome",
    "redrive_detail",
    "payload",
)
_SELECT_REJECTION = (
    "event_id, product, source, dialect, stage, field, reason, "
    "toUnixTimestamp64Milli(received_at), external_id, source_topic, source_partition, "
    "source_offset, redrive_outcome, redrive_detail, hex(payload)"
)


class Store(Protocol):
    """What replay needs of ClickHouse: :class:`EventStore`, or dev's routes in front of one."""

    def now_ms(self) -> int: ...

    def rows(self, ids: Mapping[str, Sequence[str]]) -> dict[str, list[dict[str, Any]]]:
        """Stored rows (every copy, ``FINAL``) of the event ids, by product."""
        ...

    def links(self, keys: Iterable[Link]) -> dict[Link, str]:
        """The first user each (product, anonymous id) was linked to, where there is one."""
        ...

    def rejections(self, ids: Mapping[str, Sequence[str]]) -> set[tuple[str, str, str]]:
        """(event id, stage, reason) of the rejections stored for the event ids, by product."""
        ...

    def delete_superseded(self, product: str, ids: Sequence[str], since_ms: int) -> int:
        """Delete copies inserted before ``since_ms`` of the ids that have one inserted since;
        return how many events had copies deleted."""
        ...

    def delete_events(self, product: str, ids: Sequence[str]) -> int:
        """Delete every copy of the events (and their trait rows); return how many there were."""
        ...

    def suppressions(self) -> list[Suppression]:
        """The suppressions in force (``sinks.forget``): replay and redrive honour them."""
        ...

    def rejected_groups(self, f: RejectedFilter) -> list[dict[str, Any]]:
        """Rejections by stage and reason: counts, events, how many were redriven, when."""
        ...

    def rejected_rows(self, f: RejectedFilter, limit: int) -> list[dict[str, Any]]:
        """One row per rejection (event, stage, reason), oldest first, ``payload`` as bytes."""
        ...

    def journeys(
        self,
        product: str | None,
        event_ids: Sequence[str] = (),
        external_ids: Sequence[str] = (),
        external_prefix: str | None = None,
    ) -> list[dict[str, Any]]:
        """Where each event is (``sinks.journey``)."""
        ...


class EventStore:
    """:class:`Store` on a ClickHouse client (its own: chDB keeps settings per session).

    Calls are serialised: dev serves them from a thread pool, and one client is one session.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._lock = threading.Lock()

    def query(self, sql: str, **parameters: Any) -> list[tuple[Any, ...]]:
        with self._lock:
            return [tuple(r) for r in self._client.query(sql, parameters=parameters).result_rows]

    def now_ms(self) -> int:
        """ClickHouse's clock, which stamps ``inserted_at`` (the replay's own may differ)."""
        return int(self.query("SELECT toUnixTimestamp64Milli(now64(3))")[0][0])

    def rows(self, ids: Mapping[str, Sequence[str]]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for product, event_ids in ids.items():
            if not event_ids:
                continue
            found = self.query(
                f"SELECT {_SELECT_ROW} FROM events FINAL "
                "WHERE product = %(product)s AND event_id IN %(ids)s",
                product=product,
                ids=list(event_ids),
            )
            for values in found:
                row = dict(zip(ROW_COLUMNS, values, strict=True))
                out.setdefault(row["event_id"], []).append(row)
        return out

    def links(self, keys: Iterable[Link]) -> dict[Link, str]:
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        found = self.query(
            "SELECT product, anonymous_id, argMin(user_id, linked_at) FROM identity_links "
            "WHERE status = 'linked' AND (product, anonymous_id) IN %(keys)s "
            "GROUP BY product, anonymous_id",
            keys=wanted,
        )
        return {(p, a): u for p, a, u in found}

    def rejections(self, ids: Mapping[str, Sequence[str]]) -> set[tuple[str, str, str]]:
        out: set[tuple[str, str, str]] = set()
        for product, event_ids in ids.items():
            if event_ids:
                found = self.query(
                    "SELECT DISTINCT event_id, stage, reason FROM rejected_events "
                    "WHERE product = %(product)s AND event_id IN %(ids)s",
                    product=product,
                    ids=list(event_ids),
                )
                out.update((e, s, r) for e, s, r in found)
        return out

    def delete_superseded(self, product: str, ids: Sequence[str], since_ms: int) -> int:
        if not ids:
            return 0
        params = {"product": product, "ids": list(ids), "since": since_ms}
        replaced = (
            "SELECT event_id FROM events WHERE product = %(product)s AND event_id IN %(ids)s "
            "AND toUnixTimestamp64Milli(inserted_at) >= %(since)s"
        )
        stale = (
            "product = %(product)s AND event_id IN %(ids)s "
            f"AND toUnixTimestamp64Milli(inserted_at) < %(since)s AND event_id IN ({replaced})"
        )
        with self._lock:
            found = self._client.query(
                f"SELECT uniqExact(event_id) FROM events WHERE {stale}", parameters=params
            ).result_rows
            count = int(found[0][0])
            if count:
                # user_traits first: the condition's subquery reads events (the same columns
                # exist in both; inside the subquery they are events'), whose old copies go next.
                self._client.command(f"DELETE FROM user_traits WHERE {stale}", parameters=params)
                self._client.command(f"DELETE FROM events WHERE {stale}", parameters=params)
        return count

    def delete_events(self, product: str, ids: Sequence[str]) -> int:
        """An operator's repair (and the test of a replay filling in rows that went missing)."""
        if not ids:
            return 0
        params = {"product": product, "ids": list(ids)}
        where = "product = %(product)s AND event_id IN %(ids)s"
        with self._lock:
            found = self._client.query(
                f"SELECT uniqExact(event_id) FROM events WHERE {where}", parameters=params
            ).result_rows
            self._client.command(f"DELETE FROM user_traits WHERE {where}", parameters=params)
            self._client.command(f"DELETE FROM events WHERE {where}", parameters=params)
        return int(found[0][0])

    def suppressions(self) -> list[Suppression]:
        return active_suppressions(self._client, self._lock)

    def rejected_groups(self, f: RejectedFilter) -> list[dict[str, Any]]:
        where, params = f.where()
        found = self.query(
            "SELECT stage, reason, count() AS rejections, uniqExact(event_id) AS events, "
            "uniqExactIf(event_id, redrive_outcome = 'accepted') AS redriven, "
            "toUnixTimestamp64Milli(min(received_at)) AS first, "
            "toUnixTimestamp64Milli(max(received_at)) AS last "
            f"FROM rejected_events_status WHERE {where} "
            "GROUP BY stage, reason ORDER BY rejections DESC, stage, reason LIMIT 500",
            **params,
        )
        names = ("stage", "reason", "rejections", "events", "redriven", "first", "last")
        return [dict(zip(names, r, strict=True)) for r in found]

    def rejected_rows(self, f: RejectedFilter, limit: int) -> list[dict[str, Any]]:
        where, params = f.where()
        # A redelivered rejection is stored twice (a plain MergeTree): one row per rejection.
        found = self.query(
            f"SELECT {_SELECT_REJECTION} FROM rejected_events_status WHERE {where} "
            "ORDER BY received_at, event_id LIMIT 1 BY event_id, stage, reason "
            "LIMIT %(limit)s",
            limit=limit,
            **params,
        )
        out = []
        for values in found:
            row = dict(zip(REJECTION_COLUMNS, values, strict=True))
            row["payload"] = bytes.fromhex(row["payload"])
            out.append(row)
        return out

    def journeys(
        self,
        product: str | None,
        event_ids: Sequence[str] = (),
        external_ids: Sequence[str] = (),
        external_prefix: str | None = None,
    ) -> list[dict[str, Any]]:
        return journeys(
            self.query,
            product,
            event_ids=event_ids,
            external_ids=external_ids,
            external_prefix=external_prefix,
        )

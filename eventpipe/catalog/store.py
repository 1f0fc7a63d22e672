"""The catalog on ClickHouse: list, get, create, patch and delete resources of one workspace, and
read its anomalies and versions.

Every read and write is scoped by the caller's product, so another workspace's id is simply not
found (a 404, never a 403). Writes are whole curated rows (``catalog_resources``, newest
revision wins, read with FINAL): a GET after a PATCH returns the change. A PATCH reads, merges
and writes under this store's lock, so two PATCHes through one edge never lose each other's
fields; through two edge replicas at once, the later row wins whole.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from clickhouse_connect.driver.client import Client

from eventpipe.catalog import sql
from eventpipe.catalog.filters import Compiled
from eventpipe.catalog.model import (
    EVENT,
    EVENT_CATEGORY,
    EVENT_PROPERTY,
    PARENT_TYPE,
    Create,
    Patch,
    Resource,
    resource_from_row,
    stable_id,
)
from eventpipe.catalog.paging import Page
from eventpipe.errors import Conflict, InvalidEvent, NotFound
from eventpipe.settings import Settings

log = structlog.get_logger(__name__)

_NAMES = {EVENT_CATEGORY: "event category", EVENT: "event", EVENT_PROPERTY: "event property"}


def _utc(value: Any) -> Any:
    """ClickHouse hands back naive datetimes for UTC columns; the API says they are UTC."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class Catalog:
    """One ClickHouse client (a writer: curated entries are inserted) behind one re-entrant lock:
    queries are serialized (a chDB client is not shared mid-query), and a PATCH's read, merge and
    write happen under it as one step."""

    def __init__(
        self,
        client: Client,
        *,
        typical_share: float = 0.95,
        window_days: int = 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._lock = threading.RLock()
        self.typical_share = typical_share
        self.window_days = window_days
        self._clock = clock
        self._revision = 0

    @classmethod
    def from_settings(cls, client: Client, settings: Settings) -> Catalog:
        return cls(
            client,
            typical_share=settings.catalog_typical_share,
            window_days=settings.catalog_window_days,
        )

    def _rows(self, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        with self._lock:
            result = self._client.query(query, parameters=params)
        names = result.column_names
        return [dict(zip(names, map(_utc, row), strict=True)) for row in result.result_rows]

    def _params(self, product: str, **more: Any) -> dict[str, Any]:
        return {"product": product, "window_days": self.window_days, **more}

    # --- reads ---------------------------------------------------------------------------------

    def search(
        self, product: str, where: Compiled | None, order_by: str, page: Page
    ) -> tuple[int, list[Resource]]:
        """One page of matching resources, and how many match in all."""
        cond = where.sql if where else "1"
        params = self._params(product, limit=page.size, offset=page.offset)
        if where:
            params.update(where.params)
        rows = self._rows(sql.list_sql(cond, order_by), params)
        if rows:
            total = int(rows[0]["total"])
        else:  # past the last page: no row carries the total
            total = int(self._rows(sql.count_sql(cond), params)[0]["total"])
        return total, [resource_from_row(r, product) for r in rows]

    def get(self, product: str, resource_id: str, entity_type: str | None = None) -> Resource:
        """The visible resource with this id in this workspace (of this type), else NotFound."""
        where = Compiled("id = {rid:String}", {"rid": resource_id})
        _, found = self.search(product, where, "id ASC", Page(1, 1))
        if not found or (entity_type and found[0].entity_type != entity_type):
            name = _NAMES.get(entity_type or "", "resource")
            raise NotFound(f"no {name} with id {resource_id!r} in this workspace")
        return found[0]

    def anomalies(self, product: str, event: Resource) -> list[dict[str, Any]]:
        """Per day, version, kind and property: how many events broke the rule, with examples."""
        return self._rows(
            "SELECT day, version, kind, property, events, example_event_ids "
            "FROM catalog_anomalies(share = {share:Float64}, days = {days:UInt32}) "
            "WHERE product = {product:String} AND canonical_name = {name:String} "
            "ORDER BY day DESC, version, kind, property",
            {
                "product": product,
                "name": event.title,
                "share": self.typical_share,
                "days": self.window_days,
            },
        )

    def versions(self, product: str, event: Resource | None) -> list[dict[str, Any]]:
        """Each version of an event (or of every event) once, with its diff to the previous."""
        cond = "product = {product:String}"
        params: dict[str, Any] = {"product": product}
        if event is not None:
            cond += " AND canonical_name = {name:String}"
            params["name"] = event.title
        return self._rows(
            "SELECT canonical_name, version, previous_version, first_seen_at, last_seen_at, "
            "events, properties, added, removed, changed "
            f"FROM catalog_versions WHERE {cond} ORDER BY first_seen_at DESC, version DESC",
            params,
        )

    # --- writes --------------------------------------------------------------------------------

    def create(self, product: str, entity_type: str, body: Create) -> Resource:
        """A hand-made resource. Its id is derived from its name, so a discovered resource with
        the same name becomes this one (curated fields added); a curated one is a conflict."""
        if not isinstance(body.title, str):
            raise InvalidEvent("'title' is required", field="title")
        integration = body.integration_of(product)
        parent_id = body.parent_id if isinstance(body.parent_id, str) else ""
        names: tuple[str, ...] = (body.title,)
        if entity_type == EVENT_CATEGORY:
            if integration is None:
                raise InvalidEvent(
                    "an event category must belong to an integration", field="integration"
                )
            if parent_id:
                raise InvalidEvent("an event category has no parent", field="parent_id")
        else:
            want = PARENT_TYPE[entity_type]
            if not parent_id:
                need = f"an {_NAMES[entity_type]} needs a parent {_NAMES[want]}"
                raise InvalidEvent(need, field="parent_id")
            try:
                parent = self.get(product, parent_id, want)
            except NotFound as exc:
                raise InvalidEvent(exc.message, field="parent_id") from None
            integration = integration or parent.integration_id
            if entity_type == EVENT_PROPERTY:
                names = (parent.title, body.title)
        resource_id = stable_id(product, entity_type, *names)
        with self._lock:
            existing = self._curated(product, resource_id)
            if existing and not existing["deleted"]:
                raise Conflict(f"{_NAMES[entity_type]} {body.title!r} exists: {resource_id}")
            now = self._now()
            row: dict[str, Any] = {
                "id": resource_id,
                "entity_type": entity_type,
                "title": body.title,
                "parent_id": parent_id,
                "integration_id": integration or "",
                "description": "",
                "definition": "",
                "pii": False,
                "verified": False,
                "published": False,
                **{f: [] for f in ("teams", "owners", "collections", "tags", "subscribers")},
                "created_at": now,
                "updated_at": now,
                "deleted": False,
            }
            row.update(body.changes())
            self._insert(product, row)
        log.info("catalog resource created", product=product, id=resource_id, type=entity_type)
        return self.get(product, resource_id)

    def patch(self, product: str, resource_id: str, entity_type: str, patch: Patch) -> Resource:
        changes = patch.changes()
        with self._lock:
            current = self.get(product, resource_id, entity_type)
            row = {c: getattr(current, c) for c in sql.COLUMNS if c != "deleted"}
            row["parent_id"] = current.parent_id or ""
            row["integration_id"] = current.integration_id or ""
            if not self._has_curated(product, resource_id):
                row["created_at"] = self._now()
            row.update(changes, updated_at=self._now(), deleted=False)
            self._insert(product, row)
        log.info("catalog resource updated", product=product, id=resource_id, fields=list(changes))
        return self.get(product, resource_id)

    def delete(self, product: str, resource_id: str, entity_type: str) -> None:
        """A tombstone: curated fields are dropped; traffic received later shows it again."""
        with self._lock:
            current = self.get(product, resource_id, entity_type)
            now = self._now()
            self._insert(
                product,
                {
                    "id": resource_id,
                    "entity_type": entity_type,
                    "title": current.title,
                    "parent_id": current.parent_id or "",
                    "integration_id": current.integration_id or "",
                    "created_at": now,
                    "updated_at": now,
                    "deleted": True,
                },
            )
        log.info("catalog resource deleted", product=product, id=resource_id, type=entity_type)

    # --- helpers (called with the lock held) --------------------------------------------------

    def _curated(self, product: str, resource_id: str) -> dict[str, Any] | None:
        rows = self._rows(
            "SELECT deleted FROM catalog_resources FINAL "
            "WHERE product = {product:String} AND id = {rid:String}",
            {"product": product, "rid": resource_id},
        )
        return rows[0] if rows else None

    def _has_curated(self, product: str, resource_id: str) -> bool:
        found = self._curated(product, resource_id)
        return found is not None and not found["deleted"]

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _insert(self, product: str, row: dict[str, Any]) -> None:
        # Strictly increasing within this process, so two writes in one tick keep their order.
        self._revision = max(self._revision + 1, time.time_ns())
        full = {
            "description": "",
            "definition": "",
            "pii": False,
            "verified": False,
            "published": False,
            **{f: [] for f in ("teams", "owners", "collections", "tags", "subscribers")},
            **row,
            "product": product,
            "revision": self._revision,
        }
        columns = ["product", *sql.COLUMNS, "revision"]
        self._client.insert("catalog_resources", [[full[c] for c in columns]], column_names=columns)

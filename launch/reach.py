"""How a command reaches a running pipeline: its Kafka, and its ClickHouse store.

With the embedded chDB, the running ``eventpipe dev`` owns the directory, so the store is reached
through its ``/admin/store`` routes (:class:`DevStore`), and its Kafka bootstrap is read from its
state file (the embedded broker's port changes every start). With a ClickHouse server
(``EVENTPIPE_CLICKHOUSE_URL``) and ``EVENTPIPE_KAFKA_BOOTSTRAP``, both are reached directly.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import httpx
import orjson

from eventpipe.broker import BrokerProfile
from eventpipe.settings import Settings
from eventpipe.suppression import Suppression
from launch.dev import DevState
from sinks.store import EventStore, Link, RejectedFilter, Store

STORE_TIMEOUT_S = 120.0


class NotReachable(RuntimeError):
    """No running pipeline where the settings point."""


class DevStore:
    """:class:`sinks.store.Store` through a running ``eventpipe dev``."""

    def __init__(self, state: DevState) -> None:
        self._http = httpx.Client(
            base_url=state.url,
            headers={"Authorization": f"Bearer {state.admin_token}"},
            timeout=STORE_TIMEOUT_S,
        )

    def _call(self, call: str, body: dict[str, Any]) -> Any:
        resp = self._http.post(f"/admin/store/{call}", json=body)
        if resp.status_code != 200:
            raise NotReachable(f"eventpipe dev answered {resp.status_code}: {resp.text[:300]}")
        return resp.json()

    def now_ms(self) -> int:
        return int(self._call("now", {})["ms"])

    def rows(self, ids: Mapping[str, Sequence[str]]) -> dict[str, list[dict[str, Any]]]:
        if not any(ids.values()):
            return {}
        rows: dict[str, list[dict[str, Any]]] = self._call("rows", {"ids": ids})["rows"]
        return rows

    def links(self, keys: Iterable[Link]) -> dict[Link, str]:
        wanted = [list(k) for k in set(keys)]
        if not wanted:
            return {}
        found = self._call("links", {"keys": wanted})["links"]
        return {(p, a): u for p, a, u in found}

    def rejections(self, ids: Mapping[str, Sequence[str]]) -> set[tuple[str, str, str]]:
        if not any(ids.values()):
            return set()
        return {(e, s, r) for e, s, r in self._call("rejections", {"ids": ids})["rejections"]}

    def delete_superseded(self, product: str, ids: Sequence[str], since_ms: int) -> int:
        body = {"product": product, "ids": list(ids), "since_ms": since_ms}
        return int(self._call("superseded", body)["deleted"])

    def delete_events(self, product: str, ids: Sequence[str]) -> int:
        return int(self._call("delete_events", {"product": product, "ids": list(ids)})["deleted"])

    def suppressions(self) -> list[Suppression]:
        found = self._call("suppressions", {})["suppressions"]
        return [Suppression.from_json(orjson.dumps(s)) for s in found]

    def rejected_groups(self, f: RejectedFilter) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self._call("rejected_groups", {"filter": f.to_json()})[
            "groups"
        ]
        return groups

    def rejected_rows(self, f: RejectedFilter, limit: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._call(
            "rejected_rows", {"filter": f.to_json(), "limit": limit}
        )["rows"]
        for row in rows:
            row["payload"] = base64.b64decode(row["payload"])
        return rows

    def journeys(
        self,
        product: str | None,
        event_ids: Sequence[str] = (),
        external_ids: Sequence[str] = (),
        external_prefix: str | None = None,
    ) -> list[dict[str, Any]]:
        body = {
            "product": product,
            "event_ids": list(event_ids),
            "external_ids": list(external_ids),
            "external_prefix": external_prefix,
        }
        found: list[dict[str, Any]] = self._call("journeys", body)["journeys"]
        return found

    def close(self) -> None:
        self._http.close()


def pipeline(settings: Settings) -> tuple[Settings, Store]:
    """Settings pointing at the running pipeline's Kafka, and its store."""
    state = DevState.read(settings.data_dir)
    if settings.embedded_clickhouse:
        if state is None:
            raise NotReachable(
                f"no eventpipe dev runs on {settings.data_dir} (it owns the embedded ClickHouse "
                "and, unless EVENTPIPE_KAFKA_BOOTSTRAP is set, the broker): start it, or set "
                "EVENTPIPE_CLICKHOUSE_URL and EVENTPIPE_KAFKA_BOOTSTRAP"
            )
        store: Store = DevStore(state)
    else:
        from sinks.clickhouse import connect

        store = EventStore(connect(settings.clickhouse_dsn))
    if not settings.kafka_bootstrap:
        if state is None:
            raise NotReachable("EVENTPIPE_KAFKA_BOOTSTRAP is not set and no eventpipe dev runs")
        settings = settings.model_copy(
            update={
                "kafka_bootstrap": state.kafka_bootstrap,
                # dev started its embedded broker: its workarounds apply (eventpipe.broker)
                "broker_profile": settings.broker_profile or BrokerProfile.EMBEDDED,
            }
        )
    return settings, store


@contextmanager
def pipeline_store(settings: Settings) -> Iterator[Store]:
    """The running pipeline's store only (for reads that need no Kafka), closed after use."""
    state = DevState.read(settings.data_dir)
    if not settings.embedded_clickhouse:
        from sinks.clickhouse import connect

        client = connect(settings.clickhouse_dsn)
        try:
            yield EventStore(client)
        finally:
            client.close()
        return
    if state is None:
        raise NotReachable(f"no eventpipe dev runs on {settings.data_dir}")
    dev = DevStore(state)
    try:
        yield dev
    finally:
        dev.close()

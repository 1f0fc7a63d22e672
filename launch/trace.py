"""``eventpipe trace ID``: an event's journey (``sinks.journey``), printed as the edge's
``GET /api/v2/events/{uuid}`` answers it, for any workspace (the admin's view)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from eventpipe.event import from_ms
from sinks.store import Store


def _at(ms: int | None) -> str:
    return "" if ms is None else from_ms(ms).isoformat(timespec="milliseconds")


def find(
    store: Store, ident: str, *, product: str | None, external: bool, idempotency_key: bool
) -> list[dict[str, Any]]:
    if idempotency_key:
        return store.journeys(product, (), [ident], f"{ident}:")
    if external:
        return store.journeys(product, (), [ident])
    return store.journeys(product, [ident])


def show(console: Console, journeys: list[dict[str, Any]]) -> None:
    for j in journeys:
        table = Table(title=f"{j['uuid']}: {j['state']}", show_header=False)
        table.add_column("what")
        table.add_column("")
        table.add_row("workspace", j["product"])
        if j["external_id"] is not None:
            table.add_row("external id", j["external_id"])
        if j["accepted"]:
            table.add_row("accepted", _at(j["accepted"]["received_at"]))
        if j["stored"]:
            s = j["stored"]
            table.add_row("stored", f"{s['canonical_name']}, person {s['person_id']!r}")
            table.add_row("occurred", _at(s["occurred_at"]))
        for r in j["rejections"]:
            redrive = r["redrive"]
            after = f" (redriven: {redrive['outcome']} {redrive['detail']})" if redrive else ""
            table.add_row(f"rejected at {r['stage']}", f"{r['reason']}{after}")
        for d in j["duplicates"]:
            table.add_row("dropped as a duplicate", f"copy received {_at(d['received_at'])}")
        console.print(table)

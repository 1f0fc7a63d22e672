"""``eventpipe rejected``: the rejections that need attention, grouped by stage and reason (or
one line each), from ``rejected_events_status`` (dedupe notices live apart, in
``dedupe_notices``: a dropped retry needs none)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from eventpipe.event import from_ms
from sinks.store import RejectedFilter, Store


def _at(ms: int) -> str:
    return from_ms(ms).isoformat(timespec="seconds").replace("+00:00", "Z")


def groups_table(groups: list[dict[str, Any]]) -> Table:
    table = Table(title="rejected events by stage and reason")
    for column in ("stage", "reason", "rejections", "events", "redriven", "first", "last"):
        table.add_column(column, justify="right" if column in ("rejections", "events") else "left")
    for g in groups:
        table.add_row(
            g["stage"],
            g["reason"][:100],
            f"{g['rejections']:,}",
            f"{g['events']:,}",
            f"{g['redriven']:,}",
            _at(g["first"]),
            _at(g["last"]),
        )
    return table


def rows_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="rejected events")
    columns = ("received_at", "event_id", "product", "dialect", "stage", "field", "reason")
    for column in (*columns, "source", "redriven"):
        table.add_column(column)
    for r in rows:
        where = f"{r['source_topic']}[{r['source_partition']}]@{r['source_offset']}"
        table.add_row(
            _at(r["received_at"]),
            r["event_id"],
            r["product"],
            r["dialect"],
            r["stage"],
            r["field"] or "",
            r["reason"][:100],
            where if r["source_topic"] else "",
            r["redrive_outcome"] or "",
        )
    return table


def listing(store: Store, f: RejectedFilter, *, one_per_line: bool, limit: int) -> Table:
    if one_per_line:
        return rows_table(store.rejected_rows(f, limit))
    return groups_table(store.rejected_groups(f))

"""``eventpipe redrive``: send chosen rejected events through today's rules again, after a fix or
a schema change, and record what each came to.

A rejection keeps the raw record it was made of (payload, dialect, product, source, external id,
receive time, event id: ``streams.codec.rejected``), so the raw record is rebuilt from it and
planned exactly as a replay plans a record read from ``events.raw`` (``replay.rules``: the
worker's rules, ClickHouse as the state). An accepted event gets its one row under its own event
id, so redriving twice (or a redrive racing a replay) makes no second row; a rejected-again one
is not stored as a new rejection when stage and reason are the same.

Each redriven rejection gets a ``RedriveOutcome`` (``redrives`` table; the rejection row itself
is never deleted: ``rejected_events_status`` marks it with its latest outcome). Both travel
through Kafka and the sink like everything else. By default only rejections not yet accepted by a
redrive are chosen (``--again`` takes them all). Not redrivable: rejections with no raw record
behind them (stage ``decode`` or ``sink``: bytes that were no raw record) and those stored
without their payload (too large to store whole).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from eventpipe.codec import REDRIVE_OUTCOME
from eventpipe.drain import Offsets
from eventpipe.registry import codec_for
from eventpipe.settings import Settings
from eventpipe.suppression import STAGE as SUPPRESSED_STAGE
from replay.rules import Rules
from replay.run import Writer, delete_superseded, wait_for_sink
from sinks.store import RejectedFilter, Store

NOT_REDRIVABLE_STAGES = frozenset({"decode", "sink", SUPPRESSED_STAGE})
BATCH = 500


@dataclass
class RedriveResult:
    dry_run: bool
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    """Per rejection: event_id, product, stage, reason (of the rejection), outcome, detail."""
    stored: bool | None = None

    def counts(self) -> Counter[str]:
        return Counter(o["outcome"] for o in self.outcomes)


def _raw(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": row["event_id"],
        "dialect": row["dialect"],
        "product": row["product"],
        "source": row["source"],
        "external_id": row["external_id"],
        "received_at": row["received_at"],
        "payload": row["payload"],
        "source_topic": row["source_topic"],
        "source_partition": row["source_partition"],
        "source_offset": row["source_offset"],
    }


def _outcome(row: dict[str, Any], outcome: str, detail: str, at_ms: int) -> dict[str, Any]:
    return {
        "event_id": row["event_id"],
        "product": row["product"],
        "stage": row["stage"],
        "reason": row["reason"],
        "outcome": outcome,
        "detail": detail,
        "redriven_at": at_ms,
    }


def redrive(
    settings: Settings,
    store: Store,
    chosen: RejectedFilter,
    *,
    dry_run: bool | None,
    limit: int,
    wait_s: float = 120.0,
    console: Console | None = None,
) -> RedriveResult:
    console = console or Console(stderr=True)
    rows = store.rejected_rows(chosen, limit)
    if dry_run is None:  # as a replay: above the limit only with --execute
        dry_run = len(rows) > settings.replay_confirm_above
        if dry_run:
            console.print(f"{len(rows):,} rejections chosen: a dry run (pass --execute)")
    result = RedriveResult(dry_run)
    rules = Rules(store, settings.dedupe_window_seconds * 1000)
    writer = None if dry_run else Writer(settings, codec_for(settings))
    changed: dict[str, list[str]] = {}
    since_ms = store.now_ms()
    try:
        for i in range(0, len(rows), BATCH):
            batch = rows[i : i + BATCH]
            now_ms = int(time.time() * 1000)
            redrivable = [
                r for r in batch if r["stage"] not in NOT_REDRIVABLE_STAGES and r["payload"]
            ]
            plan = rules.plan([_raw(r) for r in redrivable])
            planned = {
                id(r): (o, d) for r, (_, o, d) in zip(redrivable, plan.outcomes, strict=True)
            }
            outcomes = []
            for row in batch:
                if id(row) in planned:
                    outcome, detail = planned[id(row)]
                else:
                    why = "no payload" if not row["payload"] else "no raw record behind it"
                    outcome, detail = "not_redrivable", why
                outcomes.append(_outcome(row, outcome, detail, now_ms))
            result.outcomes += outcomes
            if writer is not None:
                writer.write(plan, [(REDRIVE_OUTCOME, o) for o in outcomes])
                for product, ids in plan.changed.items():
                    changed.setdefault(product, []).extend(ids)
        if writer is not None and rows:
            offsets = Offsets(settings.bootstrap)
            try:
                result.stored = wait_for_sink(settings, offsets, wait_s, threading.Event(), console)
            finally:
                offsets.close()
            if result.stored:
                delete_superseded(store, changed, since_ms)
    finally:
        if writer is not None:
            writer.close()
    return result


def outcome_table(result: RedriveResult, shown: int = 50) -> Table:
    title = "redrive: dry run, nothing written" if result.dry_run else "redrive"
    counts = ", ".join(f"{k} {v}" for k, v in sorted(result.counts().items())) or "nothing chosen"
    table = Table(title=f"{title} ({counts})")
    for column in ("event_id", "stage", "reason", "outcome", "detail"):
        table.add_column(column)
    for o in result.outcomes[:shown]:
        table.add_row(o["event_id"], o["stage"], o["reason"][:60], o["outcome"], o["detail"][:60])
    if len(result.outcomes) > shown:
        table.caption = f"{len(result.outcomes) - shown} more not shown"
    return table

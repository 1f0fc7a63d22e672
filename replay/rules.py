"""Today's rules applied to raw records again: what a replay (or a redrive) would change.

The rules are the worker's own code, called the same way: ``streams.agents.process`` (the
dialect's parse and naming, the dedupe decision, the clean record) and
``eventpipe.identity.resolve`` (linking), with the suppressions in force (a forgotten
person's events are rejected, stage ``suppressed``, as live). What differs is where the state
comes from. The worker keeps it in Faust tables; a replay runs beside it, in its own process,
and asks ClickHouse (``sinks.store``), layered under what this replay itself decided so far:

* **dedupe**: a keyed record's "first seen" is the ``received_at`` of the event's stored row.
  The same ``received_at`` is this very record (``Decision.REDELIVERY``): it is processed again,
  never dropped as a duplicate of itself. A stored row of another copy (a client retry) makes
  it a duplicate, as live. No stored row: it is written, whatever the live dedupe table holds,
  so rows that never reached ClickHouse are filled in (OpenMeter #4902), and nothing is claimed
  before the write (#5118: a replay writes no dedupe entry at all);
* **identity**: the first link stored for (product, anonymous id) wins, as ``identity_resolved``
  says; a replay publishes a link only where none is stored, and a conflict row otherwise (which
  collapses with the one stored live). A link never moves;
* **rows**: each clean record is compared with its stored copies: *new* (none), *identical*
  (one, equal in every column: nothing is written) or *changed* (written; the copies stored
  before go once the new one is in, ``EventStore.delete_superseded``).

Rejections are published only when not already stored for the same event, stage and reason;
duplicates dropped are counted, not reported again (live did that).

One record is given a new id: a Segment message the edge could not parse was published without
its external id and with a random event id (``producers/segment.py``), so an SDK's retry of it
is another event. When today's rules parse it, it gets the id the edge would have given it
(derived from its ``messageId``), so its copies collapse into one event and the retries are
duplicates, whether it comes back through a replay or a redrive.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from eventpipe import dialects
from eventpipe.errors import InvalidEvent
from eventpipe.event import to_ms
from eventpipe.identity import identity_key, resolve, valid_id
from eventpipe.ids import event_id_for
from eventpipe.suppression import STAGE as SUPPRESSED_STAGE
from eventpipe.suppression import Suppressions
from sinks.store import ROW_COLUMNS, Store
from streams.agents import SUPPRESSED, Drop, Forward, Outcome, Reject, process
from streams.codec import rejected
from streams.dedupe import table_key

log = structlog.get_logger(__name__)


@dataclass
class Summary:
    """What a replay read and what it changed (or would change, in a dry run)."""

    read: int = 0
    skipped: int = 0
    """Read but outside the selection (another product, outside the time range)."""
    new: int = 0
    identical: int = 0
    changed: int = 0
    changed_columns: Counter[str] = field(default_factory=Counter)
    links_new: int = 0
    conflicts: int = 0
    duplicates: int = 0
    rejected: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(stage, reason) -> records."""
    rejections_new: int = 0
    """Of those, rejections not stored before (the ones written)."""
    written: int = 0
    superseded: int = 0
    """Events whose older copies were deleted after their new row was stored."""

    @property
    def processed(self) -> int:
        return self.read - self.skipped


@dataclass
class Plan:
    """One batch's outputs, in the order the worker would queue them."""

    links: list[tuple[bytes, dict[str, Any], Mapping[str, Any]]] = field(default_factory=list)
    """(identity key, link, raw record)."""
    clean: list[tuple[dict[str, Any], Mapping[str, Any]]] = field(default_factory=list)
    """(clean record, raw record): new and changed rows only."""
    rejections: list[dict[str, Any]] = field(default_factory=list)
    changed: dict[str, list[str]] = field(default_factory=dict)
    """product -> event ids whose stored copies a written row supersedes."""
    outcomes: list[tuple[str, str, str]] = field(default_factory=list)
    """(event id, outcome, detail) per raw record, in order: ``accepted`` (detail ``new``,
    ``identical`` or ``changed``), ``rejected`` (``stage: reason``), ``duplicate``."""


def _ids_by_product(raws: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for raw in raws:
        out.setdefault(raw["product"], []).append(raw["event_id"])
    return out


UNKEYED_REFUSALS = frozenset({"segment"})
"""Dialects whose edge publishes messages it refused, without their external id."""


def rekeyed(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """``raw`` with the external id and event id the edge would give it today (docstring)."""
    if raw["external_id"] is not None or raw["dialect"] not in UNKEYED_REFUSALS:
        return raw
    try:
        parsed = dialects.parse(raw["dialect"], raw["payload"], to_ms(raw["received_at"]))
    except InvalidEvent:
        return raw  # still refused: rejected as it was, under its id
    if parsed.external_id is None:
        return raw
    event_id = event_id_for(raw["product"], raw["source"], parsed.external_id)
    return {**raw, "external_id": parsed.external_id, "event_id": event_id}


def _process(
    raw: Mapping[str, Any], seen: Any, window_ms: int, suppressions: Suppressions
) -> Outcome:
    try:
        return process(raw, seen, window_ms, suppressions)
    except Exception as exc:  # one bad record must not stop the replay (the worker's rule too)
        log.warning("raw event failed", event_id=raw.get("event_id"), error=repr(exc))
        return Reject(rejected(raw, "normalize", f"internal error: {exc!r}"))


def compare(record: Mapping[str, Any], stored: Sequence[Mapping[str, Any]]) -> list[str] | None:
    """The columns in which ``record`` differs from its stored copies; None when there are none
    stored. Two copies or more count as changed (the extra ones must go) even if one is equal."""
    if not stored:
        return None
    first = stored[0]
    diff = [c for c in ROW_COLUMNS if record.get(c) != first.get(c)]
    if not diff and len(stored) > 1:
        return ["copies"]
    return diff


class Rules:
    """Plans batches of decoded raw records; keeps what this replay decided across batches."""

    def __init__(self, store: Store, window_ms: int, summary: Summary | None = None) -> None:
        self._store = store
        self._window_ms = window_ms
        self.summary = summary or Summary()
        self._seen: dict[bytes, int] = {}
        """Dedupe keys first seen by this replay -> their received_at (the worker's table)."""
        self._links: dict[bytes, str] = {}
        """Identity keys linked by this replay (not stored yet) -> user id."""
        self._rejected: set[tuple[str, str, str]] = set()
        self._suppressions = Suppressions(store.suppressions())
        """The people forgotten when this replay started: their events are rejected as the
        worker rejects them (stage ``suppressed``), so a replay never brings them back."""

    def plan(
        self, raws: Sequence[Mapping[str, Any]], undecodable: Sequence[dict[str, Any]] = ()
    ) -> Plan:
        """What the batch becomes; counts it in :attr:`summary`. ``undecodable`` are the
        rejections of records that were no raw record at all (stage ``decode``)."""
        s, out = self.summary, Plan()
        raws = [rekeyed(raw) for raw in raws]
        stored = self._store.rows(_ids_by_product(raws))
        first_seen: dict[bytes, int] = {}
        for copies in stored.values():
            for row in copies:
                if row["external_id"] is not None:
                    key = table_key(row["product"], row["source"], row["external_id"])
                    first_seen[key] = row["received_at"]

        def seen(key: bytes) -> int | None:
            return self._seen.get(key, first_seen.get(key))

        outcomes: list[tuple[Mapping[str, Any], Outcome]] = []
        for raw in raws:
            outcome = _process(raw, seen, self._window_ms, self._suppressions)
            if isinstance(outcome, Reject) and outcome.record["stage"] == SUPPRESSED_STAGE:
                SUPPRESSED.labels("replay").inc()
            if isinstance(outcome, Forward) and outcome.mark is not None:
                key, received_ms = outcome.mark
                self._seen[key] = received_ms
            outcomes.append((raw, outcome))

        anonymous = {
            (o.record["product"], a)
            for _, o in outcomes
            if isinstance(o, Forward) and (a := valid_id(o.record["anonymous_id"])) is not None
        }
        links = self._store.links(anonymous)
        rejects = [*undecodable, *(o.record for _, o in outcomes if isinstance(o, Reject))]
        known_rejections = self._store.rejections(_ids_by_product(rejects)) if rejects else set()

        for record in undecodable:
            self._reject(record, known_rejections, out)
        for raw, outcome in outcomes:
            if isinstance(outcome, Drop):
                s.duplicates += 1
                out.outcomes.append((raw["event_id"], "duplicate", "of the stored copy"))
            elif isinstance(outcome, Reject):
                self._reject(outcome.record, known_rejections, out)
                detail = f"{outcome.record['stage']}: {outcome.record['reason']}"
                out.outcomes.append((raw["event_id"], "rejected", detail))
            else:
                kind = self._forward(
                    outcome.record, raw, links, stored.get(raw["event_id"], []), out
                )
                out.outcomes.append((raw["event_id"], "accepted", kind))
        return out

    def _reject(self, record: dict[str, Any], known: set[tuple[str, str, str]], out: Plan) -> None:
        what = (record["event_id"], record["stage"], record["reason"])
        self.summary.rejected[(record["stage"], record["reason"])] += 1
        if what in known or what in self._rejected:
            return
        self._rejected.add(what)
        self.summary.rejections_new += 1
        out.rejections.append(record)

    def _forward(
        self,
        record: dict[str, Any],
        raw: Mapping[str, Any],
        links: Mapping[tuple[str, str], str],
        stored: Sequence[Mapping[str, Any]],
        out: Plan,
    ) -> str:
        """Link and compare one forwarded record; return ``new``, ``identical`` or ``changed``."""
        s = self.summary
        product, anonymous = record["product"], record["anonymous_id"]
        key = identity_key(product, anonymous, record["person_id"], record["event_id"])
        valid = valid_id(anonymous)
        known = self._links.get(key) or (links.get((product, valid)) if valid else None)
        linked = resolve(record, known)
        record["person_id"] = linked.person_id
        if linked.link is not None:
            out.links.append((key, linked.link, raw))
            if linked.link["status"] == "conflict":
                s.conflicts += 1
            else:
                s.links_new += 1
        if linked.store is not None:
            self._links[key] = linked.store
        diff = compare(record, stored)
        if diff is not None and not diff:
            s.identical += 1
            return "identical"
        out.clean.append((record, raw))
        if diff is None:
            s.new += 1
            return "new"
        s.changed += 1
        s.changed_columns.update(diff)
        out.changed.setdefault(product, []).append(record["event_id"])
        return "changed"

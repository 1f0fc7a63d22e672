"""Where is my event: what ClickHouse knows of one event, as the journey it took.

An event is found by its id, or by its external id (the body's ``external_id``, Segment's
``messageId``, or an ``Idempotency-Key``: a single event's key is its external id, a batch's
events are ``<key>:<index>``), always within one workspace. Its journey, from three tables:

* ``events``: **stored**, with its canonical name, person and times;
* ``rejected_events_status``: **rejected** at a stage, with the reason (and the latest redrive's
  outcome: a rejection redriven into a stored event is both);
* ``dedupe_notices``: copies **dropped as duplicates** of it (a retry shares its event id), with
  when each copy was received.

``state`` sums it up: ``stored`` when a row exists, else ``rejected``, else ``dropped`` (only
copies were seen: the accepted one is not stored, which a replay would fill in). Nothing found
is an event never accepted, or one **in flight**: accepted, and not through the worker and the
sink yet (about a second); ClickHouse cannot tell those two apart, Kafka is not read here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Query = Callable[..., list[tuple[Any, ...]]]
"""``EventStore.query``: SQL with ``%(name)s`` parameters -> rows."""

LIMIT = 1000


def _ms(column: str) -> str:
    return f"toUnixTimestamp64Milli({column})"


def journeys(
    query: Query,
    product: str | None,
    *,
    event_ids: Sequence[str] = (),
    external_ids: Sequence[str] = (),
    external_prefix: str | None = None,
) -> list[dict[str, Any]]:
    """One journey per event found, by event id or external id (``product`` None: any)."""
    match: list[str] = []
    params: dict[str, Any] = {"limit": LIMIT}
    if event_ids:
        match.append("event_id IN %(ids)s")
        params["ids"] = list(event_ids)
    if external_ids:
        match.append("external_id IN %(ext)s")
        params["ext"] = list(external_ids)
    if external_prefix is not None:
        match.append("startsWith(external_id, %(prefix)s)")
        params["prefix"] = external_prefix
    if not match:
        return []
    where = "(" + " OR ".join(match) + ")"
    if product is not None:
        where += " AND product = %(product)s"
        params["product"] = product
    found: dict[str, dict[str, Any]] = {}

    def journey(event_id: str, product: str, external_id: str | None) -> dict[str, Any]:
        j = found.get(event_id)
        if j is None:
            j = found[event_id] = {
                "uuid": event_id,
                "product": product,
                "external_id": external_id,
                "accepted": None,
                "stored": None,
                "rejections": [],
                "duplicates": [],
            }
        return j

    for e, p, x, name, person, occurred, received in query(
        f"SELECT event_id, product, external_id, canonical_name, person_id, {_ms('occurred_at')}, "
        f"{_ms('received_at')} FROM events FINAL WHERE {where} LIMIT %(limit)s",
        **params,
    ):
        j = journey(e, p, x)
        j["stored"] = {"canonical_name": name, "person_id": person, "occurred_at": occurred}
        j["accepted"] = {"received_at": received}
    for e, p, x, stage, field, reason, received, outcome, detail in query(
        "SELECT event_id, product, external_id, stage, field, reason, "
        f"{_ms('received_at')}, redrive_outcome, redrive_detail FROM rejected_events_status "
        f"WHERE {where} ORDER BY received_at LIMIT 1 BY event_id, stage, reason LIMIT %(limit)s",
        **params,
    ):
        j = journey(e, p, x)
        j["rejections"].append(
            {
                "stage": stage,
                "field": field,
                "reason": reason,
                "received_at": received,
                "redrive": {"outcome": outcome, "detail": detail} if outcome else None,
            }
        )
        j["accepted"] = j["accepted"] or {"received_at": received}
    for e, p, x, received, first in query(
        f"SELECT event_id, product, external_id, {_ms('received_at')}, {_ms('first_received_at')} "
        f"FROM dedupe_notices FINAL WHERE {where} ORDER BY received_at LIMIT %(limit)s",
        **params,
    ):
        j = journey(e, p, x)
        j["duplicates"].append({"received_at": received, "duplicate_of": e, "accepted_at": first})
        j["accepted"] = j["accepted"] or {"received_at": first}
    for j in found.values():
        j["state"] = "stored" if j["stored"] else "rejected" if j["rejections"] else "dropped"
    return sorted(found.values(), key=lambda j: (j["external_id"] or "", j["uuid"]))

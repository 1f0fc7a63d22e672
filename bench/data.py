"""The events every stage sends: v2 events of ~250 B, one in ten linking an anonymous id.

Deterministic in ``i``, so a child process can rebuild exactly the rows its parent produced.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from eventpipe import dialects
from eventpipe.identity import identity_key
from eventpipe.ids import event_id_for

PRODUCT = "bench"
SOURCE = "api"
OCCURRED_AT = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def v2_event(i: int, external_id: str | None = None) -> dict[str, Any]:
    """One v2 event; every tenth carries ``properties.anonymous_id`` (an identity link)."""
    properties: dict[str, Any] = {"path": f"/docs/page-{i % 200}", "plan": "pro", "seq": i}
    if i % 10 == 0:
        properties["anonymous_id"] = f"anon_{i}"
    event: dict[str, Any] = {
        "event_type": "page",
        "action": "viewed",
        "subject_type": "user",
        "subject_id": f"user_{i % 5000}",
        "occurred_at": OCCURRED_AT,
        "properties": properties,
    }
    if external_id is not None:
        event["external_id"] = external_id
    return event


def v2_payload(i: int, external_id: str | None = None) -> bytes:
    return orjson.dumps(v2_event(i, external_id))


def batch_body(start: int, size: int, id_prefix: str | None = None) -> bytes:
    """A ``/api/v2/events/batch`` body; with ``id_prefix`` each event gets ``{prefix}{i}``."""
    events = [
        v2_event(i, None if id_prefix is None else f"{id_prefix}{i}")
        for i in range(start, start + size)
    ]
    return orjson.dumps({"events": events})


def raw_record(
    i: int, received_at_ms: int, payload: bytes | None = None, external_id: str | None = None
) -> tuple[bytes, dict[str, Any]]:
    """(Kafka key, RawEvent record) as the edge's ``Ingest.stage`` builds them."""
    ext = f"ext-{i}" if external_id is None else external_id
    event_id = event_id_for(PRODUCT, SOURCE, ext)
    payload = payload if payload is not None else v2_payload(i, ext)
    parsed = dialects.parse("v2", payload, received_at_ms)
    key = identity_key(PRODUCT, parsed.anonymous_id, parsed.actor_id, event_id)
    return key, {
        "event_id": event_id,
        "dialect": "v2",
        "product": PRODUCT,
        "source": SOURCE,
        "external_id": ext,
        "received_at": received_at_ms,
        "payload": payload,
    }


def clean_record(i: int, received_at_ms: int) -> dict[str, Any]:
    """The CleanEvent the agents make of ``raw_record(i)``, built by the agents' own code."""
    from streams.agents import Forward, process  # imports Faust: only where needed

    _, raw = raw_record(i, received_at_ms)
    nothing_seen: dict[bytes, int] = {}
    out = process(raw, nothing_seen.get, 86_400_000)
    assert isinstance(out, Forward), out
    return out.record


DISTINCT_CLEAN = 10_000
"""Clean records built by the agents' code; past these, :func:`clean_records` copies them under
new ids (the agents' ``process`` costs ~100 us a record: 2M would take minutes of setup)."""


def clean_records(n: int, received_at_ms: int) -> Iterator[dict[str, Any]]:
    """``n`` clean records with distinct event ids, deterministic in ``n``: the first
    ``DISTINCT_CLEAN`` from :func:`clean_record`, the rest copies of them with the id (and external
    id) that ``raw_record(i)`` would have had."""
    made = [clean_record(i, received_at_ms) for i in range(min(n, DISTINCT_CLEAN))]
    yield from made
    for i in range(len(made), n):
        ext = f"ext-{i}"
        yield {
            **made[i % len(made)],
            "event_id": event_id_for(PRODUCT, SOURCE, ext),
            "external_id": ext,
        }

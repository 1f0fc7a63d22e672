"""HTTP endpoints of dialect v2: ``POST /api/v2/events`` and ``POST /api/v2/events/batch``.

Legacy flat names are answered with ``Deprecation``/``Sunset`` headers; a batch lists each
accepted event with its index, and each rejected one with index, field and reason.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from eventpipe.dialects import v2
from eventpipe.dialects.common import iso_ms, split_events
from eventpipe.event import ParsedEvent
from eventpipe.naming import SUNSET
from producers.auth import Principal
from producers.ingest import Ingest, body_external_id, json_response

DIALECT = "v2"
DEPRECATION = {"Deprecation": "true", "Sunset": SUNSET}


def describe(
    event_id: str, p: ParsedEvent, principal: Principal, index: int | None = None
) -> dict[str, Any]:
    """The response's ``data`` object, in document 000's shape; a batch's items lead with their
    ``index`` (one dict per event, not one merged into another)."""
    item = {
        "index": index,
        "uuid": event_id,
        "event_type": p.name.event_type,
        "action": p.name.action,
        "canonical_name": p.name.canonical,
        "source": principal.source,
        "subject_type": p.subject_type,
        "subject_id": p.subject_id,
        "occurred_at": iso_ms(p.occurred_at_ms),
        "external_id": p.external_id,
    }
    if index is None:
        del item["index"]
    return item


async def single(ingest: Ingest, request: Request) -> Response:
    principal, body, received = await ingest.admit(request)
    ok = await ingest.one(principal, DIALECT, v2.parse, body, received, body_external_id)
    headers = DEPRECATION if ok.parsed.name.deprecated else None
    return json_response({"data": describe(ok.event_id, ok.parsed, principal)}, 202, headers)


async def batch(ingest: Ingest, request: Request, max_events: int) -> Response:
    principal, body, received = await ingest.admit(request)
    payloads = split_events(body)
    out = await ingest.many(
        principal, DIALECT, v2.parse, payloads, received, body_external_id, max_events
    )
    data = [describe(a.event_id, a.parsed, principal, a.index) for a in out.accepted]
    body_out: dict[str, Any] = {
        "data": data,
        "accepted": len(data),
        "rejected": len(out.errors),
        "errors": out.errors,
    }
    if not data:
        body_out.update(error="validation_error", message="no event in the batch was valid")
        return json_response(body_out, 400)
    headers: dict[str, str] = {}
    if any(a.parsed.name.deprecated for a in out.accepted):
        headers.update(DEPRECATION)
    if out.retryable:
        headers["Retry-After"] = str(ingest.retry_after_seconds)
    return json_response(body_out, 202, headers or None)

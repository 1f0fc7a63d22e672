"""HTTP endpoints of dialect v1: ``POST /v1/events`` and ``POST /v1/batch/events``.

``Idempotency-Key`` gives a single event its external id, and each event of a batch
``"<key>:<index>"`` (see ``eventpipe.dialects.v1.idempotency_external_id``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from eventpipe.dialects import v1
from eventpipe.dialects.common import split_events
from eventpipe.event import ParsedEvent
from producers.ingest import BatchOutcome, ExternalId, Ingest, json_response

DIALECT = "v1"


def _from_header(request: Request) -> ExternalId:
    """Validate the header once (400 before anything is published), then derive per event."""
    key = v1.idempotency_external_id(request.headers.get("idempotency-key"), None)

    def external_id(index: int | None, _parsed: ParsedEvent) -> str | None:
        return v1.idempotency_external_id(key, index)

    return external_id


async def single(ingest: Ingest, request: Request) -> Response:
    principal, body, received = await ingest.admit(request)
    ok = await ingest.one(principal, DIALECT, v1.parse, body, received, _from_header(request))
    return json_response({"status": "ok", "event_id": ok.event_id}, 202)


async def batch(ingest: Ingest, request: Request, max_events: int) -> Response:
    principal, body, received = await ingest.admit(request)
    external_id = _from_header(request)
    payloads = split_events(body)
    out = await ingest.many(
        principal, DIALECT, v1.parse, payloads, received, external_id, max_events
    )
    return batch_response(ingest, out)


def batch_response(ingest: Ingest, out: BatchOutcome) -> Response:
    """Document 003's batch body: accepted events still count when others are rejected."""
    body: dict[str, Any] = {
        "status": "ok" if out.accepted else "error",
        "accepted": len(out.accepted),
        "rejected": len(out.errors),
        "event_ids": [a.event_id for a in out.accepted],
        "errors": [{"index": e["index"], "reason": _reason(e)} for e in out.errors],
    }
    if not out.accepted:
        body.update(error="validation_error", message="no event in the batch was valid")
        return json_response(body, 400)
    headers = {"Retry-After": str(ingest.retry_after_seconds)} if out.retryable else None
    return json_response(body, 202, headers)


def _reason(error: dict[str, Any]) -> str:
    field = error.get("field")
    return f"{field}: {error['reason']}" if field else str(error["reason"])

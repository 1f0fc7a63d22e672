"""HTTP endpoints of dialect named (document 001): ``POST /named/events`` and
``POST /named/events/batch`` take ``{name, data, user?, v?, ts?}`` (a batch: ``{"events": […]}``).

The document gives no response shape, so these answer like v1: ``{"status", "event_id"}`` and
``{"status", "accepted", "rejected", "event_ids", "errors"}``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from eventpipe.dialects import named
from eventpipe.dialects.common import split_events
from producers import v1
from producers.ingest import Ingest, body_external_id, json_response

DIALECT = "named"


async def single(ingest: Ingest, request: Request) -> Response:
    principal, body, received = await ingest.admit(request)
    ok = await ingest.one(principal, DIALECT, named.parse, body, received, body_external_id)
    return json_response({"status": "ok", "event_id": ok.event_id}, 202)


async def batch(ingest: Ingest, request: Request, max_events: int) -> Response:
    principal, body, received = await ingest.admit(request)
    payloads = split_events(body)
    out = await ingest.many(
        principal, DIALECT, named.parse, payloads, received, body_external_id, max_events
    )
    return v1.batch_response(ingest, out)

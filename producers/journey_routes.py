"""Where is my event: ``GET /api/v2/events/{uuid}``, and ``GET /api/v2/events?external_id=`` or
``?idempotency_key=``, answered with each event's journey (``sinks.journey``).

Auth is the ingestion keys': a key sees its own workspace's events only, and another's is a 404
like an unknown one. Served where this process can read ClickHouse (``eventpipe dev``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eventpipe.errors import InvalidEvent, NotFound
from producers.auth import KeyStore
from sinks.store import EventStore

Handler = Callable[[Request], Awaitable[Response]]
NOT_FOUND = (
    "no trace of it in this workspace: never accepted, or accepted and still in flight "
    "(not through the worker and the sink yet: about a second)"
)


def _json(body: object) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def journey_routes(
    store: EventStore, keys: KeyStore, guard: Callable[[Handler], Handler]
) -> list[Route]:
    async def one(request: Request) -> Response:
        product = keys.authenticate(request.headers.get("authorization")).product
        uuid = request.path_params["uuid"]
        found = await run_in_threadpool(store.journeys, product, [uuid])
        if not found:
            raise NotFound(f"event {uuid[:80]!r}: {NOT_FOUND}")
        return _json(found[0])

    async def by_key(request: Request) -> Response:
        product = keys.authenticate(request.headers.get("authorization")).product
        q = request.query_params
        unknown = sorted(set(q) - {"external_id", "idempotency_key"})
        if unknown:
            raise InvalidEvent(f"unknown query parameter {unknown[0]!r}", field=unknown[0])
        external, key = q.get("external_id"), q.get("idempotency_key")
        if (external is None) == (key is None):
            raise InvalidEvent(
                "give one of 'external_id' or 'idempotency_key'", field="external_id"
            )
        if external is not None:
            found = await run_in_threadpool(store.journeys, product, (), [external])
        else:
            assert key is not None
            # A single event's key is its external id; a batch's events are "<key>:<index>".
            found = await run_in_threadpool(store.journeys, product, (), [key], f"{key}:")
        if not found:
            raise NotFound(
                f"{'external_id' if external is not None else 'idempotency_key'}: {NOT_FOUND}"
            )
        return _json({"data": found})

    return [
        Route("/api/v2/events/{uuid}", guard(one), methods=["GET"]),
        Route("/api/v2/events", guard(by_key), methods=["GET"]),
    ]

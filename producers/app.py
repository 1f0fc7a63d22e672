"""The HTTP edge: ``create_app(...)`` receives every dependency; there are no module globals.

Routes: the three dialects, health, Prometheus metrics and the OpenAPI document. The admin
routes (``producers/admin.py``) are added only when the caller passes them in: ``eventpipe dev``
does, on its loopback port; ``eventpipe edge`` serves them on a listener of their own, so its
public app never has them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from eventpipe.catalog import Catalog
from eventpipe.codec import AvroCodec
from eventpipe.dashboard import Dashboard
from eventpipe.errors import EventpipeError
from eventpipe.publisher import Publisher
from eventpipe.registry import codec_for
from eventpipe.settings import Settings
from eventpipe.topics import TopicNames
from producers import named, openapi, segment, v1, v2
from producers.auth import KeyStore, RateLimiter
from producers.catalog import catalog_routes
from producers.dashboard import dashboard_routes
from producers.ingest import Ingest, error_response, json_response
from producers.journey_routes import journey_routes
from producers.metrics import RequestMetrics
from producers.store_routes import store_routes
from sinks.store import EventStore

log = structlog.get_logger(__name__)

Handler = Callable[[Request], Awaitable[Response]]


def guard(handler: Handler) -> Handler:
    """Map errors to statuses in one place; anything unexpected is a logged 500, never a crash."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except EventpipeError as exc:
            return error_response(exc)
        except Exception:
            log.exception("unhandled error", path=request.url.path)
            return json_response({"error": "internal_error", "message": "internal error"}, 500)

    return wrapped


def create_app(
    settings: Settings,
    publisher: Publisher,
    keys: KeyStore,
    *,
    clock: Callable[[], float] = time.time,
    codec: AvroCodec | None = None,
    catalog: Catalog | None = None,
    admin: Sequence[BaseRoute] = (),
    store: EventStore | None = None,
    dashboard: Dashboard | None = None,
) -> Starlette:
    topics = TopicNames.from_settings(settings)
    ingest = Ingest(
        keys=keys,
        limiter=RateLimiter(time.monotonic),
        publisher=publisher,
        codec=codec or codec_for(settings),
        raw_topic=topics.raw,
        clock_ms=lambda: int(clock() * 1000),
        max_body_bytes=settings.max_body_bytes,
        max_event_bytes=settings.max_event_bytes,
        retry_after_seconds=settings.retry_after_seconds,
    )

    async def v2_single(request: Request) -> Response:
        return await v2.single(ingest, request)

    async def v2_batch(request: Request) -> Response:
        return await v2.batch(ingest, request, settings.max_batch_events)

    async def v1_single(request: Request) -> Response:
        return await v1.single(ingest, request)

    async def v1_batch(request: Request) -> Response:
        return await v1.batch(ingest, request, settings.max_batch_events)

    async def named_single(request: Request) -> Response:
        return await named.single(ingest, request)

    async def named_batch(request: Request) -> Response:
        return await named.batch(ingest, request, settings.max_batch_events)

    async def health(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    routes: list[BaseRoute] = [
        Route("/api/v2/events", guard(v2_single), methods=["POST"]),
        Route("/api/v2/events/batch", guard(v2_batch), methods=["POST"]),
        Route("/v1/events", guard(v1_single), methods=["POST"]),
        Route("/v1/batch/events", guard(v1_batch), methods=["POST"]),
        Route("/named/events", guard(named_single), methods=["POST"]),
        Route("/named/events/batch", guard(named_batch), methods=["POST"]),
        *segment.routes(ingest, settings.max_batch_events),
        Route("/healthz", health, methods=["GET"]),
        Route("/openapi.json", openapi.endpoint(settings.max_batch_events), methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *admin,
        *dashboard_routes(settings, keys, dashboard, guard),
    ]
    if catalog is not None:
        routes += catalog_routes(catalog, keys, guard)
    if store is not None:  # replay's reads and its one delete, where this process owns chDB
        routes += journey_routes(store, keys, guard)
        routes += store_routes(settings.admin_token, store, guard)
    return Starlette(routes=routes, middleware=[Middleware(RequestMetrics)])

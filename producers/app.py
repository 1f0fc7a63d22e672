"""The HTTP edge: ``create_app(...)`` receives every dependency; there are no module globals.

Routes: the three dialects, health, Prometheus metrics, the OpenAPI document, and (only when an
admin token is configured) ``/admin/keys`` to mint (POST) and revoke (DELETE) workspace keys and
``/admin/query`` for read-only SQL. The query route exists because one process owns a chDB
directory: ``eventpipe query`` reaches the embedded ClickHouse through the process that owns it.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eventpipe.catalog import Catalog
from eventpipe.codec import AvroCodec
from eventpipe.dashboard import Dashboard
from eventpipe.errors import EventpipeError, InvalidEvent, Unauthorized
from eventpipe.publisher import Publisher
from eventpipe.settings import Settings
from eventpipe.topics import TopicNames
from producers import named, openapi, segment, v1, v2
from producers.auth import KeyStore, RateLimiter, new_key
from producers.catalog import catalog_routes
from producers.dashboard import dashboard_routes
from producers.ingest import Ingest, error_response, json_response
from producers.metrics import RequestMetrics

log = structlog.get_logger(__name__)

Handler = Callable[[Request], Awaitable[Response]]
QueryFn = Callable[[str], tuple[list[str], list[list[Any]]]]


def _guard(handler: Handler) -> Handler:
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
    query: QueryFn | None = None,
    codec: AvroCodec | None = None,
    catalog: Catalog | None = None,
    dashboard: Dashboard | None = None,
) -> Starlette:
    topics = TopicNames.from_settings(settings)
    ingest = Ingest(
        keys=keys,
        limiter=RateLimiter(time.monotonic),
        publisher=publisher,
        codec=codec or AvroCodec(settings.schema_registry_url),
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

    def admin_only(request: Request) -> None:
        token = settings.admin_token or ""
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not token or not hmac.compare_digest(given.encode(), token.encode()):
            raise Unauthorized("admin token required")

    async def json_body(request: Request) -> dict[str, Any]:
        try:
            body = orjson.loads(await request.body() or b"{}")
        except orjson.JSONDecodeError as exc:
            raise InvalidEvent(f"malformed JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidEvent("the body must be a JSON object")
        return body

    async def admin_keys(request: Request) -> Response:
        admin_only(request)
        body = await json_body(request)
        if request.method == "DELETE":
            key = body.get("key")
            if not isinstance(key, str) or not keys.revoke(key):
                raise InvalidEvent("'key' is not a known API key", field="key")
            log.info("api key revoked")
            return json_response({"revoked": True})
        product = body.get("product")
        if not isinstance(product, str) or not product:
            raise InvalidEvent("'product' is required", field="product")
        source = body.get("source", "api")
        rate = body.get("rate_limit_per_minute")
        key = new_key()
        keys.add(key, product, source, rate)
        log.info("api key created", product=product, source=source)
        return json_response({"key": key, "product": product, "source": source}, 201)

    async def admin_query(request: Request) -> Response:
        admin_only(request)
        if query is None:
            raise InvalidEvent("this process owns no ClickHouse client", field="sql")
        body = await json_body(request)
        sql = body.get("sql")
        if not isinstance(sql, str) or not sql.strip():
            raise InvalidEvent("'sql' is required", field="sql")
        try:
            columns, rows = await run_in_threadpool(query, sql)
        except Exception as exc:
            raise InvalidEvent(f"query failed: {exc}", field="sql") from None
        return Response(
            orjson.dumps({"columns": columns, "rows": rows}, default=str),
            media_type="application/json",
        )

    routes = [
        Route("/api/v2/events", _guard(v2_single), methods=["POST"]),
        Route("/api/v2/events/batch", _guard(v2_batch), methods=["POST"]),
        Route("/v1/events", _guard(v1_single), methods=["POST"]),
        Route("/v1/batch/events", _guard(v1_batch), methods=["POST"]),
        Route("/named/events", _guard(named_single), methods=["POST"]),
        Route("/named/events/batch", _guard(named_batch), methods=["POST"]),
        *segment.routes(ingest, settings.max_batch_events),
        Route("/healthz", health, methods=["GET"]),
        Route("/openapi.json", openapi.endpoint(settings.max_batch_events), methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *dashboard_routes(settings, keys, dashboard, _guard),
    ]
    if catalog is not None:
        routes += catalog_routes(catalog, keys, _guard)
    if settings.admin_token:
        routes += [
            Route("/admin/keys", _guard(admin_keys), methods=["POST", "DELETE"]),
            Route("/admin/query", _guard(admin_query), methods=["POST"]),
        ]
    return Starlette(routes=routes, middleware=[Middleware(RequestMetrics)])

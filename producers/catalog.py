"""HTTP routes of the event catalog (document 002), plus what it adds: anomalies and versions.

Auth is the ingestion keys': the key's workspace (product) scopes every read and write, so an id
of another workspace is a 404. The two deprecated endpoints answer as before, with
``Deprecation: true`` and a ``Link`` to the List Resources query that replaces them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import msgspec
import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eventpipe.catalog import Catalog
from eventpipe.catalog.filters import compile_filter, compile_sort, parse_json
from eventpipe.catalog.model import EVENT, EVENT_CATEGORY, EVENT_PROPERTY, Create, Patch, decode
from eventpipe.catalog.paging import Page, envelope
from eventpipe.errors import InvalidEvent
from producers.auth import KeyStore

Handler = Callable[[Request], Awaitable[Response]]
RESOURCES_PATH = "/api/v1/resource/catalog"
PAGING = {"page", "page_size"}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(msgspec.json.encode(body), status, headers, media_type="application/json")


def _successor(tree: dict[str, Any]) -> dict[str, str]:
    link = f"{RESOURCES_PATH}?filter={quote(orjson.dumps(tree).decode(), safe='')}"
    return {"Deprecation": "true", "Link": f'<{link}>; rel="successor-version"'}


def _only(query: Mapping[str, str], allowed: set[str]) -> None:
    for name in query:
        if name not in allowed:
            known = ", ".join(sorted(allowed))
            raise InvalidEvent(f"unknown query parameter {name!r} (known: {known})", field=name)


def catalog_routes(
    catalog: Catalog, keys: KeyStore, guard: Callable[[Handler], Handler]
) -> list[Route]:
    def product_of(request: Request) -> str:
        return keys.authenticate(request.headers.get("authorization")).product

    async def listing(request: Request, tree: Any, sort: Any) -> dict[str, Any]:
        product = product_of(request)
        page = Page.from_query(request.query_params)
        where = compile_filter(tree) if tree is not None else None
        order_by = compile_sort(sort)
        count, results = await run_in_threadpool(catalog.search, product, where, order_by, page)
        query = dict(request.query_params)
        return envelope(str(request.url), query, page, count, results)

    def typed_list(entity_type: str, filters: tuple[str, ...], deprecated: bool = False) -> Handler:
        async def handler(request: Request) -> Response:
            query = request.query_params
            _only(query, PAGING | set(filters))
            kind = {"operator": "exact", "field": "type", "value": entity_type}
            operands = [kind] + [
                {"operator": "exact", "field": f, "value": query[f]} for f in filters if f in query
            ]
            body = await listing(request, {"operator": "and", "operands": operands}, None)
            return _json(body, headers=_successor(kind) if deprecated else None)

        return handler

    def typed_get(entity_type: str, param: str, deprecated: bool = False) -> Handler:
        async def handler(request: Request) -> Response:
            product = product_of(request)
            rid = request.path_params[param]
            found = await run_in_threadpool(catalog.get, product, rid, entity_type)
            tree = {"operator": "exact", "field": "id", "value": rid}
            return _json(found, headers=_successor(tree) if deprecated else None)

        return handler

    def create(entity_type: str) -> Handler:
        async def handler(request: Request) -> Response:
            product = product_of(request)
            body = decode(await request.body(), Create)
            return _json(await run_in_threadpool(catalog.create, product, entity_type, body))

        return handler

    def patch(entity_type: str, param: str) -> Handler:
        async def handler(request: Request) -> Response:
            product = product_of(request)
            body = decode(await request.body(), Patch)
            rid = request.path_params[param]
            return _json(await run_in_threadpool(catalog.patch, product, rid, entity_type, body))

        return handler

    def delete(entity_type: str, param: str) -> Handler:
        async def handler(request: Request) -> Response:
            product = product_of(request)
            rid = request.path_params[param]
            await run_in_threadpool(catalog.delete, product, rid, entity_type)
            return _json({"id": rid, "deleted": True})

        return handler

    async def resources(request: Request) -> Response:
        query = request.query_params
        _only(query, PAGING | {"filter", "sort"})
        tree = parse_json(query.get("filter"), "filter")
        sort = parse_json(query.get("sort"), "sort")
        return _json(await listing(request, tree, sort))

    async def anomalies(request: Request) -> Response:
        product = product_of(request)
        rid = request.path_params["event_id"]
        event = await run_in_threadpool(catalog.get, product, rid, EVENT)
        rows = await run_in_threadpool(catalog.anomalies, product, event)
        return _json(
            {
                "event_id": event.id,
                "typical_share": catalog.typical_share,
                "window_days": catalog.window_days,
                "count": sum(int(r["events"]) for r in rows),
                "results": rows,
            }
        )

    async def versions(request: Request) -> Response:
        product = product_of(request)
        event = None
        if "event_id" in request.path_params:
            rid = request.path_params["event_id"]
            event = await run_in_threadpool(catalog.get, product, rid, EVENT)
        rows = await run_in_threadpool(catalog.versions, product, event)
        return _json({"count": len(rows), "results": rows})

    base = "/api/v1/event"
    cat, ev, prop = f"{base}/category", f"{base}/events", f"{base}/event_properties"
    ev_id, prop_id = f"{ev}/{{event_id}}", f"{prop}/{{event_property_id}}"
    plain: list[tuple[str, Handler, str]] = [
        (cat, typed_list(EVENT_CATEGORY, ("title",)), "GET"),
        (cat, create(EVENT_CATEGORY), "POST"),
        (f"{cat}/{{event_category_id}}", typed_get(EVENT_CATEGORY, "event_category_id"), "GET"),
        (ev, typed_list(EVENT, ("integration_id", "parent_id", "title"), True), "GET"),
        (ev, create(EVENT), "POST"),
        (ev_id, typed_get(EVENT, "event_id", True), "GET"),
        (ev_id, delete(EVENT, "event_id"), "DELETE"),
        (ev_id, patch(EVENT, "event_id"), "PATCH"),
        (f"{ev_id}/anomalies", anomalies, "GET"),
        (f"{ev_id}/versions", versions, "GET"),
        (f"{base}/versions", versions, "GET"),
        (prop, typed_list(EVENT_PROPERTY, ("integration_id", "parent_id", "title")), "GET"),
        (prop, create(EVENT_PROPERTY), "POST"),
        (prop_id, typed_get(EVENT_PROPERTY, "event_property_id"), "GET"),
        (prop_id, delete(EVENT_PROPERTY, "event_property_id"), "DELETE"),
        (prop_id, patch(EVENT_PROPERTY, "event_property_id"), "PATCH"),
        (RESOURCES_PATH, resources, "GET"),
    ]
    by_path: dict[str, dict[str, Handler]] = {}
    for path, handler, method in plain:
        by_path.setdefault(path, {})[method] = handler
    return [_route(path, methods, guard) for path, methods in by_path.items()]


def _route(path: str, methods: dict[str, Handler], guard: Callable[[Handler], Handler]) -> Route:
    """One route per path, dispatching on the method (Starlette matches the first route by path
    and answers 405 rather than trying the next one)."""

    async def dispatch(request: Request) -> Response:
        handler = methods.get(request.method) or methods["GET"]  # HEAD is a GET
        return await handler(request)

    return Route(path, guard(dispatch), methods=list(methods))

"""``/admin/store/{call}``: ``sinks.store.EventStore`` served to other processes by the one that
owns the chDB directory (``eventpipe dev``), for ``eventpipe replay`` (``launch/reach.py`` is the
client). Each call is one fixed, parameterised statement of that module, never SQL from the
request; admin token only. Against a ClickHouse server the commands use ``EventStore`` directly.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eventpipe.errors import InvalidEvent, Unauthorized
from sinks.store import EventStore, RejectedFilter

Handler = Callable[[Request], Awaitable[Response]]


def _strings(value: Any, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidEvent(f"'{field}' must be a list of strings", field=field)
    return value


def _ids(body: dict[str, Any]) -> dict[str, list[str]]:
    ids = body.get("ids")
    if not isinstance(ids, dict):
        raise InvalidEvent("'ids' must be an object of product -> event ids", field="ids")
    return {str(p): _strings(v, f"ids.{p}") for p, v in ids.items()}


def _call(store: EventStore, call: str, body: dict[str, Any]) -> Any:
    if call == "now":
        return {"ms": store.now_ms()}
    if call == "rows":
        return {"rows": store.rows(_ids(body))}
    if call == "links":
        keys = body.get("keys")
        if not isinstance(keys, list) or not all(
            isinstance(k, list) and len(k) == 2 and all(isinstance(x, str) for x in k) for k in keys
        ):
            raise InvalidEvent("'keys' must be a list of [product, anonymous_id]", field="keys")
        found = store.links((p, a) for p, a in keys)
        return {"links": [[p, a, u] for (p, a), u in found.items()]}
    if call == "rejections":
        return {"rejections": sorted(store.rejections(_ids(body)))}
    if call == "superseded":
        product, since = body.get("product"), body.get("since_ms")
        if not isinstance(product, str) or not isinstance(since, int):
            raise InvalidEvent("'product' (string) and 'since_ms' (integer) are required")
        ids = _strings(body.get("ids"), "ids")
        return {"deleted": store.delete_superseded(product, ids, since)}
    if call == "delete_events":
        product = body.get("product")
        if not isinstance(product, str):
            raise InvalidEvent("'product' (string) is required", field="product")
        return {"deleted": store.delete_events(product, _strings(body.get("ids"), "ids"))}
    if call in ("rejected_groups", "rejected_rows"):
        try:
            f = RejectedFilter.from_json(body.get("filter") or {})
        except TypeError as exc:
            raise InvalidEvent(f"bad filter: {exc}", field="filter") from None
        if call == "rejected_groups":
            return {"groups": store.rejected_groups(f)}
        limit = body.get("limit")
        if not isinstance(limit, int) or limit < 1:
            raise InvalidEvent("'limit' must be a positive integer", field="limit")
        rows = store.rejected_rows(f, limit)
        for row in rows:  # JSON has no bytes
            row["payload"] = base64.b64encode(row["payload"]).decode()
        return {"rows": rows}
    if call == "suppressions":  # digests only (eventpipe.suppression): no id in clear
        return {"suppressions": [orjson.loads(s.to_json()) for s in store.suppressions()]}
    if call == "journeys":
        product, prefix = body.get("product"), body.get("external_prefix")
        if product is not None and not isinstance(product, str):
            raise InvalidEvent("'product' must be a string", field="product")
        if prefix is not None and not isinstance(prefix, str):
            raise InvalidEvent("'external_prefix' must be a string", field="external_prefix")
        ids = _strings(body.get("event_ids", []), "event_ids")
        external = _strings(body.get("external_ids", []), "external_ids")
        return {"journeys": store.journeys(product, ids, external, prefix)}
    raise InvalidEvent(f"unknown call {call!r}", field="call")


def store_routes(
    admin_token: str | None, store: EventStore, guard: Callable[[Handler], Handler]
) -> list[Route]:
    if not admin_token:
        return []
    token = admin_token

    async def endpoint(request: Request) -> Response:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise Unauthorized("admin token required")
        try:
            body = orjson.loads(await request.body() or b"{}")
        except orjson.JSONDecodeError as exc:
            raise InvalidEvent(f"malformed JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidEvent("the body must be a JSON object")
        answer = await run_in_threadpool(_call, store, request.path_params["call"], body)
        return Response(orjson.dumps(answer), media_type="application/json")

    return [Route("/admin/store/{call}", guard(endpoint), methods=["POST"])]

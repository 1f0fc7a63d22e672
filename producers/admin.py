"""The admin routes: mint (POST) and revoke (DELETE) workspace keys, read-only SQL, and forget
(POST) a person or lift (DELETE) their suppression (``replay.forget``).

They exist only when an admin token is configured, and only where the process that builds the
app puts them: ``eventpipe edge`` serves them on a listener of their own
(``EVENTPIPE_ADMIN_LISTEN``, loopback unless ``EVENTPIPE_ADMIN_ALLOW_REMOTE``), never on its
public one; ``eventpipe dev`` on its main loopback port, so ``eventpipe query`` finds them.
``/admin/query`` exists because one process owns a chDB directory: ``eventpipe query`` reaches
the embedded ClickHouse through the process that owns it (see ``producers/query.py`` for what a
statement may do there). Keys minted here live in this process's ``KeyStore`` only.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any, Protocol

import orjson
import structlog
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eventpipe.errors import InvalidRequest, NotSupported, Unauthorized
from eventpipe.identity import valid_id
from eventpipe.settings import ApiKeyConfig, Settings
from producers.app import guard
from producers.auth import KeyStore, hash_key, new_key
from producers.ingest import json_response

log = structlog.get_logger(__name__)

QueryFn = Callable[[str], tuple[list[str], list[list[Any]]]]


class Forgetting(Protocol):
    """What ``/admin/forget`` calls (``replay.forget.Forgetter``)."""

    def forget(self, product: str, person_id: str) -> dict[str, Any]: ...

    def lift(self, product: str, person_id: str) -> dict[str, Any]: ...


KEY_FIELDS = ("product", "source", "rate_limit_per_minute")


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.body() or b"{}")
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"malformed JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    return body


def _key_config(body: dict[str, Any], key: str) -> ApiKeyConfig:
    """The new key's settings, checked by the model that checks ``EVENTPIPE_API_KEYS``."""
    unknown = sorted(set(body) - set(KEY_FIELDS))
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r}", field=unknown[0])
    if "product" not in body:
        raise InvalidRequest("'product' is required", field="product")
    try:
        return ApiKeyConfig(sha256=hash_key(key), **body)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else None
        value = body.get(field) if field else None
        if field == "rate_limit_per_minute":
            reason = "must be a positive integer"
        elif field in ("product", "source"):
            reason = "must match ^[a-z][a-z0-9_-]{0,63}$ (a lower-case name, at most 64 chars)"
        else:
            reason = err["msg"]
        raise InvalidRequest(f"'{field}' {reason}, got {value!r:.80}", field=field) from None


def _person(body: dict[str, Any]) -> tuple[str, str]:
    """(product, person id) of a forget or lift request."""
    unknown = sorted(set(body) - {"product", "person_id"})
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r}", field=unknown[0])
    out = []
    for name in ("product", "person_id"):
        value = body.get(name)
        if not isinstance(value, str) or not value.strip():
            raise InvalidRequest(f"'{name}' is required (a non-empty string)", field=name)
        out.append(value)
    if valid_id(out[1]) is None:
        # Placeholders are nobody's (eventpipe.identity): forgetting "null" would erase everyone.
        raise InvalidRequest(
            f"'person_id' {out[1]!r} is a placeholder, not a person", field="person_id"
        )
    return out[0], out[1]


def admin_routes(
    settings: Settings,
    keys: KeyStore,
    query: QueryFn | None,
    forget: Forgetting | None = None,
) -> list[Route]:
    """The /admin routes for ``settings.admin_token`` holders; none without a token.
    ``forget``: what serves ``/admin/forget`` (only where this process owns a ClickHouse
    writer: ``eventpipe dev``)."""
    token = settings.admin_token
    if not token:
        return []

    def admin_only(request: Request) -> None:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise Unauthorized("admin token required")

    async def admin_keys(request: Request) -> Response:
        admin_only(request)
        body = await _json_body(request)
        if request.method == "DELETE":
            key = body.get("key")
            if not isinstance(key, str) or not keys.revoke(key):
                raise InvalidRequest("'key' is not a known API key", field="key")
            log.info("api key revoked")
            return json_response({"revoked": True})
        key = new_key()
        cfg = _key_config(body, key)
        keys.add_digest(cfg)
        log.info("api key created", product=cfg.product, source=cfg.source)
        return json_response({"key": key, "product": cfg.product, "source": cfg.source}, 201)

    async def admin_query(request: Request) -> Response:
        admin_only(request)
        if query is None:
            raise NotSupported(
                "this process owns no ClickHouse client: query ClickHouse directly "
                "(or through the `eventpipe dev` that owns the chDB directory)"
            )
        sql = (await _json_body(request)).get("sql")
        if not isinstance(sql, str) or not sql.strip():
            raise InvalidRequest("'sql' is required", field="sql")
        columns, rows = await run_in_threadpool(query, sql)
        return Response(
            orjson.dumps({"columns": columns, "rows": rows}, default=str),
            media_type="application/json",
        )

    async def admin_forget(request: Request) -> Response:
        """POST forgets a person (their rows deleted, their events suppressed); DELETE lifts
        the suppression. Both answer once done (a forget waits for the pipeline to pass it)."""
        admin_only(request)
        if forget is None:
            raise NotSupported(
                "this process owns no ClickHouse writer: run `eventpipe forget` with "
                "EVENTPIPE_CLICKHOUSE_URL and EVENTPIPE_KAFKA_BOOTSTRAP"
            )
        product, person_id = _person(await _json_body(request))
        if request.method == "DELETE":
            return json_response(await run_in_threadpool(forget.lift, product, person_id))
        return json_response(await run_in_threadpool(forget.forget, product, person_id))

    return [
        Route("/admin/keys", guard(admin_keys), methods=["POST", "DELETE"]),
        Route("/admin/query", guard(admin_query), methods=["POST"]),
        Route("/admin/forget", guard(admin_forget), methods=["POST", "DELETE"]),
    ]


def create_admin_app(settings: Settings, keys: KeyStore, query: QueryFn | None = None) -> Starlette:
    """The admin routes alone, for a listener of their own."""
    return Starlette(routes=admin_routes(settings, keys, query))

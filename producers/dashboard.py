"""``GET /dashboard``: a page of live charts of one workspace and of the pipeline's health.

The page (``producers/static/``) is static and public; its data comes from
``GET /dashboard/data?range=hour|day`` with ``Authorization: Bearer <key>``: a workspace key sees
its own workspace, the admin token every workspace. The page takes the key from its URL fragment
(``/dashboard#key=ep_…``: a fragment is never sent to a server nor logged) or asks for it.

Everything the page loads ships in the package (Chart.js is vendored with its license in
``producers/static/``), and its Content-Security-Policy allows this origin only: the page works
offline and loads no external URL.

Pipeline health is read from Prometheus metrics, the same figures Prometheus scrapes: this
process's own registry (the edge; in ``eventpipe dev`` the sink too) and the ``/metrics`` of the
processes in ``EVENTPIPE_DASHBOARD_METRICS_URLS`` (the worker's, the standalone sink's).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, Iterator
from importlib import resources
from typing import Any

import httpx
import structlog
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eventpipe.dashboard import RANGES, Dashboard, health
from eventpipe.errors import InvalidEvent
from eventpipe.settings import Settings
from producers.auth import KeyStore
from producers.ingest import json_response

log = structlog.get_logger(__name__)

Handler = Callable[[Request], Awaitable[Response]]
STATIC = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "chart.umd.min.js": "text/javascript",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
METRICS_TIMEOUT_S = 2.0


def _static(name: str) -> bytes:
    return resources.files("producers").joinpath("static", name).read_bytes()


def dashboard_routes(
    settings: Settings,
    keys: KeyStore,
    dashboard: Dashboard | None,
    guard: Callable[[Handler], Handler],
) -> list[Route]:
    page = _static("dashboard.html")
    files = {name: _static(name) for name in STATIC}

    def scope_of(request: Request) -> str | None:
        """The workspace the caller may see; ``None`` for the admin token (all of them)."""
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ").strip()
        admin = settings.admin_token
        if admin and token and hmac.compare_digest(token.encode(), admin.encode()):
            return None
        return keys.authenticate(auth).product

    async def show(request: Request) -> Response:
        return Response(page, media_type="text/html", headers={"Content-Security-Policy": CSP})

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in files:
            return json_response({"error": "not_found", "message": "no such file"}, 404)
        return Response(
            files[name], media_type=STATIC[name], headers={"Cache-Control": "max-age=300"}
        )

    async def data(request: Request) -> Response:
        product = scope_of(request)
        range_name = request.query_params.get("range", "hour")
        if range_name not in RANGES:
            raise InvalidEvent(f"range must be one of {sorted(RANGES)}", field="range")
        families = await _families(settings.dashboard_metrics_urls)
        body: dict[str, Any] = {"health": health(families.metrics), "sources": families.sources}
        if dashboard is None:
            body["rollups"] = None
            body["message"] = "no ClickHouse server configured for this edge"
        else:
            body["rollups"] = await run_in_threadpool(dashboard.data, product, range_name)
        body["scope"] = product
        return json_response(body)

    return [
        Route("/dashboard", show, methods=["GET"]),
        Route("/dashboard/static/{name}", static, methods=["GET"]),
        Route("/dashboard/data", guard(data), methods=["GET"]),
    ]


class _Families:
    def __init__(self) -> None:
        self.metrics: list[Metric] = list(REGISTRY.collect())
        self.sources: list[dict[str, Any]] = [{"url": "self", "ok": True}]


async def _families(urls: list[str]) -> _Families:
    """This process's metrics, and those of ``urls`` (one unreachable is reported, not fatal)."""
    out = _Families()
    if not urls:
        return out
    async with httpx.AsyncClient(timeout=METRICS_TIMEOUT_S) as http:
        answers = await asyncio.gather(*(http.get(u) for u in urls), return_exceptions=True)
    for url, answer in zip(urls, answers, strict=True):
        if isinstance(answer, BaseException):
            log.warning("dashboard: metrics unreachable", url=url, error=repr(answer))
            out.sources.append({"url": url, "ok": False, "error": type(answer).__name__})
            continue
        if answer.status_code != 200:
            out.sources.append({"url": url, "ok": False, "error": f"HTTP {answer.status_code}"})
            continue
        out.metrics.extend(_parse(answer.text))
        out.sources.append({"url": url, "ok": True})
    return out


def _parse(text: str) -> Iterator[Metric]:
    try:
        yield from text_string_to_metric_families(text)
    except ValueError as exc:
        log.warning("dashboard: unreadable metrics", error=str(exc))

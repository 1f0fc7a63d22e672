"""The edge's HTTP metrics: requests by route and status, and their latency.

A pure ASGI middleware (no per-request task or body wrapping). The ``route`` label is the matched
route's template (``/api/v1/event/events/{event_id}``), never the path itself, so an id in a URL
never becomes a label value; a request no route matched is ``unmatched``.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventpipe.metrics import labelled

REQUESTS = Counter(
    "eventpipe_edge_requests_total", "HTTP requests answered", ["route", "method", "status"]
)
REQUEST_SECONDS = Histogram(
    "eventpipe_edge_request_seconds",
    "From a request's arrival to the end of its answer (2xx: after Kafka's acknowledgement)",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RATE_LIMITED = Counter(
    "eventpipe_edge_rate_limited_total", "Requests refused with 429 by a workspace's rate limit"
)


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route: Any = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            labelled(REQUESTS, name, scope["method"], str(status[0])).inc()
            labelled(REQUEST_SECONDS, name).observe(time.perf_counter() - started)

"""The dashboard's pure parts: the page ships everything it loads (no external URL, a CSP of
this origin only, the vendored library with its license in the package), and the per-minute
series it charts are zero-filled with the largest names first."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from importlib import resources

import httpx
from starlette.applications import Starlette

from eventpipe.dashboard import TOP_SERIES, per_minute
from eventpipe.settings import Settings
from producers.auth import KeyStore
from producers.dashboard import STATIC, dashboard_routes

STATIC_DIR = resources.files("producers").joinpath("static")
URL = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url\(([^)]+)\)""")


def test_the_page_loads_only_files_it_ships() -> None:
    html = STATIC_DIR.joinpath("dashboard.html").read_text()
    css = STATIC_DIR.joinpath("dashboard.css").read_text()
    refs = [a or b for a, b in URL.findall(html + css)]
    assert refs, "the pattern found the page's own files"
    for ref in refs:
        assert ref.startswith("/dashboard/static/") or ref.startswith("data:"), ref
        if ref.startswith("/dashboard/static/"):
            assert ref.removeprefix("/dashboard/static/") in STATIC
    js = STATIC_DIR.joinpath("dashboard.js").read_text()
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", js)
    fetches = re.findall(r"fetch\(\s*`([^`]+)`", js)
    assert fetches and all(f.startswith("/dashboard/") for f in fetches)
    license_text = STATIC_DIR.joinpath("LICENSE.chart.js.md").read_text()
    assert "MIT License" in license_text
    assert "sourceMappingURL" not in STATIC_DIR.joinpath("chart.umd.min.js").read_text()


def get(app: Starlette, *paths: str) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://edge") as http:
            return [await http.get(p) for p in paths]

    return asyncio.run(run())


def test_the_page_is_served_with_a_same_origin_policy() -> None:
    app = Starlette(routes=dashboard_routes(Settings(), KeyStore([], 100), None, lambda h: h))
    page, lib, escape = get(
        app, "/dashboard", "/dashboard/static/chart.umd.min.js", "/dashboard/static/..%2Fapp.py"
    )
    assert page.status_code == 200 and "<canvas" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert lib.status_code == 200 and lib.headers["content-type"].startswith("text/javascript")
    assert escape.status_code == 404


def test_per_minute_fills_zeros_and_sums_the_smaller_names_as_other() -> None:
    since = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    rows = [(since + timedelta(minutes=2), "p", f"n{i}", i + 1) for i in range(TOP_SERIES + 2)]
    rows.append((since - timedelta(minutes=5), "p", "n0", 100))  # outside the window
    out = per_minute([(m.replace(tzinfo=None), p, n, c) for m, p, n, c in rows], since, 10, True)
    assert len(out["minutes"]) == 11
    names = [s["name"] for s in out["series"]]
    assert names[0] == f"n{TOP_SERIES + 1}" and names[-1] == "other"
    other = out["series"][-1]["counts"]
    assert other[2] == 1 + 2 and sum(other) == 3, "n0 and n1, the two smallest"
    assert out["total"] == sum(range(1, TOP_SERIES + 3))
    labelled = per_minute([(since, "p", "a", 1)], since, 1, scoped=False)
    assert labelled["top"] == [{"name": "p/a", "events": 1}]

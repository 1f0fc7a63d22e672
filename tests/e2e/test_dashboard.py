"""The dashboard end to end: traffic through the real pipeline lands in the rollups of migration
007, ``/dashboard/data`` shows a workspace only its own and the admin all, and the page, opened
in a real headless Chromium (Debian's ``chromium``, which ``make test`` installs), charts it and
loads nothing from anywhere but the edge. The screenshot is kept under ``test-artifacts/``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack, Workspace
from tests.e2e.traffic import send_traffic, wait_for_rollups

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("EVENTPIPE_TEST_ARTIFACTS", ROOT / "test-artifacts"))
CHROMIUM = os.environ.get("EVENTPIPE_TEST_CHROMIUM", "/usr/bin/chromium")


def data(stack: Stack, token: str, range_name: str = "hour") -> dict[str, Any]:
    r = stack.http.get(
        "/dashboard/data",
        params={"range": range_name},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_rollups_count_each_event_once_and_a_key_sees_its_workspace_only(
    stack: Stack, ws: Workspace
) -> None:
    sent = send_traffic(ws)
    wait_for_rollups(stack, ws, sent)
    p = ws.product
    rows = stack.query(
        "SELECT canonical_name AS name, uniqCombinedMerge(14)(events) AS n FROM events_hourly "
        f"WHERE product = '{p}' GROUP BY name"
    )
    assert {r["name"]: r["n"] for r in rows} == sent.events
    persons = stack.query(f"SELECT persons FROM active_persons_daily WHERE product = '{p}'")
    assert [r["persons"] for r in persons] == [sent.persons], "a1 resolves to u1"

    mine = data(stack, ws.key)["rollups"]
    assert {t["name"]: t["events"] for t in mine["events"]["top"]} == sent.events
    assert mine["duplicates"] == sent.duplicates
    assert mine["rejections"]["by_stage"]["dedupe"] == sent.duplicates
    assert sum(mine["rejections"]["by_stage"].values()) == sent.duplicates + sent.rejected_segment
    assert sum(link["links"] for link in mine["identity_links"]) == sent.links
    assert mine["active_persons"][-1]["persons"] == sent.persons
    assert mine["product"] == p

    other = data(stack, stack.workspace().key)["rollups"]
    assert other["events"]["top"] == [] and other["rejections"]["groups"] == []

    everyone = data(stack, stack.admin_token, "day")
    assert everyone["scope"] is None
    names = {t["name"] for t in everyone["rollups"]["events"]["top"]}
    # The admin's top list spans workspaces (each name carries its own); in a full session it
    # holds other tests' events, so this workspace's may be below its cut.
    assert names and all("/" in n for n in names)

    health = everyone["health"]
    assert health["edge_events"] >= sum(sent.events.values())
    assert health["worker_lag"] is not None, "the worker's /metrics was read"
    assert all(s["ok"] for s in everyone["sources"]), everyone["sources"]


def test_data_needs_a_key_and_a_known_range(stack: Stack, ws: Workspace) -> None:
    assert stack.http.get("/dashboard/data").status_code == 401
    r = stack.http.get(
        "/dashboard/data", params={"range": "week"}, headers={"Authorization": f"Bearer {ws.key}"}
    )
    assert (r.status_code, r.json()["field"]) == (400, "range")


def test_the_page_charts_the_traffic_in_a_real_browser(stack: Stack, ws: Workspace) -> None:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.fail("chromium is missing: `make test` installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    sent = send_traffic(ws)
    wait_for_rollups(stack, ws, sent)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    requested: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1400})
            page.on("request", lambda req: requested.append(req.url))
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{stack.url}/dashboard#key={ws.key}")
            # The charts hold the traffic: every name sent is a series of the per-minute chart
            # with a bar above zero, and the top-events chart lists them with their counts.
            page.wait_for_function(
                """(want) => {
                  const d = window.__dashboard;
                  if (!d || !d.charts.events) return false;
                  const got = {};
                  d.charts.events.data.datasets.forEach((s) => {
                    got[s.label] = s.data.reduce((a, b) => a + b, 0); });
                  return Object.entries(want).every(([k, n]) => got[k] === n);
                }""",
                arg=sent.events,
                timeout=30_000,
            )
            top = page.evaluate(
                "() => { const c = window.__dashboard.charts.top.data;"
                " return Object.fromEntries(c.labels.map((l, i) => [l, c.datasets[0].data[i]])); }"
            )
            assert top == sent.events
            # Two refreshes, so the health charts have a rate to draw.
            page.wait_for_function("() => window.__dashboard.health.length >= 2", timeout=20_000)
            assert page.text_content("#t-dupes") == str(sent.duplicates)
            assert page.text_content("#scope") == f"workspace {ws.product}"
            assert "#key=" not in page.url, "the key is taken out of the address bar"
            page.screenshot(path=str(shot), full_page=True)
            assert errors == []
        finally:
            browser.close()
    external = [u for u in requested if not u.startswith(stack.url) and not u.startswith("data:")]
    assert external == [], "the page must work offline"
    assert shot.stat().st_size > 10_000

"""The catalog fed by traffic: events of the three dialects discovered with their figures, curated
fields kept, anomalies of a version, new versions with their diff, persistence across a restart."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.conftest import ROWS_TIMEOUT_S, Stack, Workspace, start_stack
from tests.e2e.test_catalog import INTEGRATION, call

V1, V2 = "2021-09-15.01", "2021-10-01.01"


def wait_catalog(
    ws: Workspace,
    tree: dict[str, Any],
    until: Callable[[list[dict[str, Any]]], bool],
    timeout_s: float = ROWS_TIMEOUT_S,
) -> list[dict[str, Any]]:
    """Poll the List Resources endpoint until ``until(results)`` holds."""
    deadline = time.monotonic() + timeout_s
    results: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        r = call(ws, "GET", "/api/v1/resource/catalog", params={"filter": json.dumps(tree)})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        if until(results):
            return results
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting on the catalog for {tree}; last: {results}")


def of_type(entity_type: str) -> dict[str, Any]:
    return {"operator": "exact", "field": "type", "value": entity_type}


def by(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["title"]: r for r in results}


def named_batch(ws: Workspace, events: list[dict[str, Any]]) -> list[str]:
    r = ws.post("/named/events/batch", {"events": events})
    assert r.status_code == 202 and r.json()["rejected"] == 0, r.text
    return list(r.json()["event_ids"])


def test_events_of_the_three_dialects_are_discovered_with_figures(
    stack: Stack, ws: Workspace
) -> None:
    now = datetime.now(UTC).isoformat()
    v2 = {"event_type": "checkout", "action": "started", "properties": {"cart": 3, "coupon": None}}
    assert ws.post("/api/v2/events", v2).status_code == 202
    v1 = {"event": "checkout_paid", "user_id": "u1", "timestamp": now, "properties": {"total": 9.5}}
    assert ws.post("/v1/events", v1).status_code == 202
    named_batch(
        ws,
        [
            {"name": "ticket.updated", "data": {"ticket_id": 1, "status": "open"}, "v": V1},
            {"name": "ticket.updated", "data": {"ticket_id": 2, "tags": ["a"]}, "v": V1},
        ],
    )
    events = by(wait_catalog(ws, of_type("event"), lambda rs: len(rs) == 3))
    assert set(events) == {"checkout_started", "checkout_paid", "ticket_updated"}
    for ev in events.values():
        assert ev["discovered"] is True
        assert ev["observed"]["first_seen_at"] and ev["observed"]["last_seen_at"]
        assert ev["integration_id"] == ev["observed"]["integrations"][0]
    ticket = events["ticket_updated"]["observed"]
    assert ticket["volume_24h"] == ticket["volume_30d"] == 2
    assert ticket["versions"] == [V1]
    assert events["checkout_paid"]["observed"]["versions"] == []

    cats = by(wait_catalog(ws, of_type("event_category"), lambda rs: len(rs) == 2))
    assert set(cats) == {"checkout", "ticket"}
    assert cats["checkout"]["observed"]["volume_24h"] == 2, "both checkout events"
    assert events["checkout_paid"]["parent_id"] == cats["checkout"]["id"]

    props = wait_catalog(ws, of_type("event_property"), lambda rs: len(rs) == 6)
    seen = {(p["parent_id"], p["title"]): p["observed"] for p in props}
    tid = events["ticket_updated"]["id"]
    assert seen[(tid, "ticket_id")]["json_types"] == ["integer"]
    assert seen[(tid, "ticket_id")]["share"] == 1.0
    assert seen[(tid, "status")]["share"] == 0.5
    assert seen[(tid, "tags")]["json_types"] == ["array"]
    assert seen[(tid, "status")]["versions"] == [V1]
    started = events["checkout_started"]["id"]
    assert seen[(started, "coupon")]["json_types"] == ["null"]
    assert seen[(events["checkout_paid"]["id"], "total")]["json_types"] == ["number"]
    r = call(ws, "GET", "/api/v1/event/event_properties", params={"parent_id": tid})
    assert {p["title"] for p in r.json()["results"]} == {"ticket_id", "status", "tags"}


def test_curated_fields_win_and_a_hand_made_entry_is_the_discovered_one(
    stack: Stack, ws: Workspace
) -> None:
    body = {"title": "signup", "integration": "api", "description": "made by hand"}
    made = call(ws, "POST", "/api/v1/event/category", json=body).json()
    assert made["discovered"] is False
    named_batch(ws, [{"name": "signup.completed", "data": {"plan": "pro"}}])
    [cat] = wait_catalog(ws, of_type("event_category"), lambda rs: bool(rs and rs[0]["discovered"]))
    assert cat["id"] == made["id"] and cat["description"] == "made by hand"
    [ev] = wait_catalog(ws, of_type("event"), lambda rs: len(rs) == 1)
    assert ev["parent_id"] == made["id"]
    patched = call(ws, "PATCH", f"/api/v1/event/events/{ev['id']}", json={"verified": True})
    assert patched.json()["verified"] is True and patched.json()["discovered"] is True
    named_batch(ws, [{"name": "signup.completed", "data": {"plan": "free"}}])
    [ev] = wait_catalog(
        ws, of_type("event"), lambda rs: bool(rs) and rs[0]["observed"]["volume_24h"] == 2
    )
    assert ev["verified"] is True, "traffic never overwrites a curated field"

    # A deleted discovered event comes back with new traffic, without its curated fields.
    assert call(ws, "DELETE", f"/api/v1/event/events/{ev['id']}").status_code == 200
    assert call(ws, "GET", f"/api/v1/event/events/{ev['id']}").status_code == 404
    named_batch(ws, [{"name": "signup.completed", "data": {"plan": "pro"}}])
    [back] = wait_catalog(ws, of_type("event"), lambda rs: len(rs) == 1)
    assert back["id"] == ev["id"] and back["verified"] is False


def test_an_event_missing_a_property_its_version_always_had_is_an_anomaly(
    stack: Stack, ws: Workspace
) -> None:
    typical = [
        {"name": "ticket.updated", "data": {"ticket_id": i, "status": "open"}, "v": V1}
        for i in range(30)
    ]
    ids = named_batch(ws, typical)
    [missing] = named_batch(ws, [{"name": "ticket.updated", "data": {"ticket_id": 1}, "v": V1}])
    [extra] = named_batch(
        ws,
        [{"name": "ticket.updated", "data": {"ticket_id": 1, "status": "x", "oops": 1}, "v": V1}],
    )
    [ev] = wait_catalog(
        ws, of_type("event"), lambda rs: bool(rs) and rs[0]["observed"]["volume_24h"] == 32
    )
    r = call(ws, "GET", f"/api/v1/event/events/{ev['id']}/anomalies")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["typical_share"] == 0.95 and body["count"] == 2
    found = {(a["kind"], a["property"]): a for a in body["results"]}
    assert set(found) == {("missing", "status"), ("unexpected", "oops")}
    assert found[("missing", "status")]["example_event_ids"] == [missing]
    assert found[("unexpected", "oops")]["example_event_ids"] == [extra]
    today = datetime.now(UTC).date().isoformat()
    assert found[("missing", "status")]["day"] == today
    assert found[("missing", "status")]["version"] == V1 and missing not in ids
    rows = stack.query(
        "SELECT kind, property, events FROM catalog_anomalies(share = 0.95, days = 30) "
        f"WHERE product = '{ws.product}' ORDER BY kind"
    )
    assert rows == [
        {"kind": "missing", "property": "status", "events": 1},
        {"kind": "unexpected", "property": "oops", "events": 1},
    ]
    other = stack.workspace()
    assert call(other, "GET", f"/api/v1/event/events/{ev['id']}/anomalies").status_code == 404


def test_a_new_version_is_reported_once_with_its_diff(stack: Stack, ws: Workspace) -> None:
    named_batch(ws, [{"name": "ticket.updated", "data": {"ticket_id": 1, "status": "o"}, "v": V1}])
    named_batch(
        ws, [{"name": "ticket.updated", "data": {"ticket_id": "t", "priority": 2}, "v": V2}]
    )
    named_batch(
        ws, [{"name": "ticket.updated", "data": {"ticket_id": "u", "priority": 1}, "v": V2}]
    )
    [ev] = wait_catalog(
        ws, of_type("event"), lambda rs: bool(rs) and rs[0]["observed"]["volume_24h"] == 3
    )
    r = call(ws, "GET", f"/api/v1/event/events/{ev['id']}/versions")
    assert r.status_code == 200, r.text
    versions = {v["version"]: v for v in r.json()["results"]}
    assert r.json()["count"] == 2, "each version once"
    new = versions[V2]
    assert new["previous_version"] == V1 and new["events"] == 2
    assert new["added"] == ["priority"] and new["removed"] == ["status"]
    assert new["changed"] == ["ticket_id"], "integer in the first version, string now"
    first = versions[V1]
    assert first["previous_version"] is None and first["added"] == ["status", "ticket_id"]
    feed = call(ws, "GET", "/api/v1/event/versions").json()
    assert [v["version"] for v in feed["results"]] == [V2, V1]


@pytest.mark.stack_env({"EVENTPIPE_DEV_API_KEY": "ep_catalog_persistence_key"})
def test_the_catalog_persists_across_a_dev_restart(own_stack: Stack) -> None:
    ws = Workspace("dev", "ep_catalog_persistence_key", own_stack.http)
    cat = call(
        ws, "POST", "/api/v1/event/category", json={"title": "billing", "integration": INTEGRATION}
    )
    assert cat.status_code == 200, cat.text
    named_batch(ws, [{"name": "billing.charged", "data": {"amount": 5}, "v": V1}])
    [ev] = wait_catalog(ws, of_type("event"), lambda rs: len(rs) == 1)
    call(ws, "PATCH", f"/api/v1/event/events/{ev['id']}", json={"description": "money"})
    own_stack.stop()
    again = start_stack(own_stack.data_dir, {"EVENTPIPE_DEV_API_KEY": ws.key})
    try:
        ws = Workspace("dev", ws.key, again.http)
        after = call(ws, "GET", f"/api/v1/event/events/{ev['id']}")
        assert after.status_code == 200, after.text
        assert after.json()["description"] == "money"
        assert after.json()["observed"]["versions"] == [V1]
        got = call(ws, "GET", f"/api/v1/event/category/{cat.json()['id']}").json()
        assert got["integration_id"] == INTEGRATION and got["discovered"] is True
    finally:
        again.stop()

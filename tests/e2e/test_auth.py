"""Keys: revocation, workspace isolation, and secrets that never leak into logs or metrics."""

from __future__ import annotations

from tests.conftest import Stack

EVENT = {"event": "user.signed_up"}


def test_a_revoked_key_is_refused(stack: Stack) -> None:
    ws = stack.workspace()
    assert ws.post("/api/v2/events", EVENT).status_code == 202
    admin = {"Authorization": f"Bearer {stack.admin_token}"}
    r = stack.http.request("DELETE", "/admin/keys", json={"key": ws.key}, headers=admin)
    assert r.status_code == 200, r.text
    for path, body in (("/api/v2/events", EVENT), ("/v1/events", {"event": "a_b"})):
        r = ws.post(path, body)
        assert r.status_code == 401
        assert ws.key not in r.text
    r = stack.http.request("DELETE", "/admin/keys", json={"key": ws.key}, headers=admin)
    assert r.status_code == 400, "revoking twice names the unknown key"


def test_a_workspace_key_writes_only_its_own_workspace(stack: Stack) -> None:
    a, b = stack.workspace(), stack.workspace()
    r = b.post("/api/v2/events", {**EVENT, "product": a.product})
    assert r.status_code == 400 and r.json()["field"] == "product", "no body field picks it"
    ida = a.post("/api/v2/events", EVENT).json()["data"]["uuid"]
    idb = b.post("/api/v2/events", EVENT).json()["data"]["uuid"]
    rows = stack.wait_for(
        f"SELECT event_id, product FROM events FINAL WHERE product IN ('{a.product}', "
        f"'{b.product}') ORDER BY product",
        lambda rs: len(rs) == 2,
    )
    assert {(r["product"], r["event_id"]) for r in rows} == {(a.product, ida), (b.product, idb)}


def test_a_workspace_key_cannot_use_the_admin_routes(stack: Stack) -> None:
    ws = stack.workspace()
    auth = {"Authorization": f"Bearer {ws.key}"}
    r = stack.http.post("/admin/query", json={"sql": "SELECT * FROM events"}, headers=auth)
    assert r.status_code == 401
    r = stack.http.post("/admin/keys", json={"product": ws.product}, headers=auth)
    assert r.status_code == 401


def test_keys_never_appear_in_logs_metrics_or_error_bodies(stack: Stack) -> None:
    ws = stack.workspace()
    assert ws.post("/api/v2/events", EVENT).status_code == 202
    assert ws.post("/api/v2/events", {"event": "Bad"}).status_code == 400
    wrong = ws.key + "x"
    r = stack.http.post("/api/v2/events", json=EVENT, headers={"Authorization": f"Bearer {wrong}"})
    assert r.status_code == 401 and wrong not in r.text
    metrics = stack.http.get("/metrics").text
    assert "eventpipe_edge_events_total" in metrics
    log = stack.log_path.read_text(errors="replace")
    for secret in (ws.key, wrong):
        assert secret not in metrics
        assert secret not in log

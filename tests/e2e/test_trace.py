"""Where is my event: the edge's lookups and ``eventpipe trace`` answer each journey state."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import Stack, Workspace


def test_each_journey_state_is_answered_within_the_workspace(stack: Stack, ws: Workspace) -> None:
    invite = {"event": "invite.sent", "subject_type": "user", "subject_id": "u7"}
    r = ws.post("/api/v2/events", {**invite, "external_id": "inv-1"})
    assert r.status_code == 202, r.text
    uuid = r.json()["data"]["uuid"]
    assert ws.post("/api/v2/events", {**invite, "external_id": "inv-1"}).status_code == 202
    bad = {"type": "track", "event": "Signed Up", "messageId": "s1"}  # no userId: rejected
    body = json.dumps({"writeKey": ws.key, "batch": [bad]}).encode()
    assert ws.http.post("/v1/batch", content=body).status_code == 200
    keyed = [{"event": "page_viewed", "user_id": "u8", "timestamp": "2026-03-01T10:00:00Z"}] * 2
    r = ws.post("/v1/batch/events", {"events": keyed}, headers={"Idempotency-Key": "batch-9"})
    assert r.status_code == 202, r.text
    p = ws.product
    stack.wait_for(f"SELECT 1 FROM dedupe_notices WHERE product = '{p}'", lambda rs: len(rs) == 1)
    stack.wait_for(f"SELECT 1 FROM rejected_events WHERE product = '{p}'", lambda rs: len(rs) == 1)
    stack.wait_for(f"SELECT 1 FROM events WHERE product = '{p}'", lambda rs: len(rs) == 3)
    auth = {"Authorization": f"Bearer {ws.key}"}

    stored = ws.http.get(f"/api/v2/events/{uuid}", headers=auth)
    assert stored.status_code == 200, stored.text
    j = stored.json()
    assert (j["state"], j["external_id"]) == ("stored", "inv-1")
    assert j["stored"]["canonical_name"] == "invite_sent" and j["stored"]["person_id"] == "u7"
    assert j["accepted"]["received_at"] > 0
    assert [d["duplicate_of"] for d in j["duplicates"]] == [uuid], "the retry, dropped"

    rejected_id = stack.query(f"SELECT event_id FROM rejected_events WHERE product = '{p}'")[0]
    rejected = ws.http.get(f"/api/v2/events/{rejected_id['event_id']}", headers=auth).json()
    assert rejected["state"] == "rejected" and rejected["stored"] is None
    assert rejected["rejections"][0]["stage"] == "normalize"
    assert "userId" in rejected["rejections"][0]["reason"]

    by_external = ws.http.get("/api/v2/events", params={"external_id": "inv-1"}, headers=auth)
    assert [x["uuid"] for x in by_external.json()["data"]] == [uuid]
    by_key = ws.http.get("/api/v2/events", params={"idempotency_key": "batch-9"}, headers=auth)
    assert [x["external_id"] for x in by_key.json()["data"]] == ["batch-9:0", "batch-9:1"]
    assert {x["state"] for x in by_key.json()["data"]} == {"stored"}

    unknown = ws.http.get("/api/v2/events/evt_nothing_like_it", headers=auth)
    assert unknown.status_code == 404 and "in flight" in unknown.json()["message"]
    other = stack.workspace()
    theirs = other.http.get(
        f"/api/v2/events/{uuid}", headers={"Authorization": f"Bearer {other.key}"}
    )
    assert theirs.status_code == 404, "another workspace sees nothing of it"
    assert ws.http.get(f"/api/v2/events/{uuid}").status_code == 401
    both = ws.http.get(
        "/api/v2/events", params={"external_id": "a", "idempotency_key": "b"}, headers=auth
    )
    assert both.status_code == 400

    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
    env["COLUMNS"] = "200"
    command = [sys.executable, "-m", "launch", "trace", uuid, "--data-dir", str(stack.data_dir)]
    done = subprocess.run(command, env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode()
    assert "stored" in out and "invite_sent" in out and "dropped as a duplicate" in out

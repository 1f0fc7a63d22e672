"""Dialects v1 and named end to end: idempotency, limits, auth and rate limits, versions."""

from __future__ import annotations

import json

from tests.conftest import Stack, Workspace

TS = "2024-03-15T14:20:00Z"


def test_idempotency_key_returns_the_same_id_and_one_row(stack: Stack, ws: Workspace) -> None:
    body = {"event": "subscription_started", "user_id": "u1", "timestamp": TS}
    first = ws.post("/v1/events", body, headers={"Idempotency-Key": "req-1"})
    again = ws.post("/v1/events", body, headers={"Idempotency-Key": "req-1"})
    other = ws.post("/v1/events", body, headers={"Idempotency-Key": "req-2"})
    assert first.status_code == again.status_code == other.status_code == 202
    assert first.json()["event_id"] == again.json()["event_id"] != other.json()["event_id"]
    stack.wait_for(
        f"SELECT 1 FROM dedupe_notices WHERE product = '{ws.product}'",
        lambda rs: len(rs) == 1,
    )
    rows = stack.wait_for(
        f"SELECT event_id, external_id FROM events WHERE product = '{ws.product}'",
        lambda rs: len(rs) == 2,
    )
    assert {r["external_id"] for r in rows} == {"req-1", "req-2"}


def test_idempotency_key_on_a_batch_derives_one_key_per_event(stack: Stack, ws: Workspace) -> None:
    batch = {
        "events": [
            {"event": "paywall_viewed", "user_id": "u1", "timestamp": TS},
            {"event": "paywall_viewed", "user_id": "u1", "timestamp": TS},
        ]
    }
    a = ws.post("/v1/batch/events", batch, headers={"Idempotency-Key": "b-1"}).json()
    b = ws.post("/v1/batch/events", batch, headers={"Idempotency-Key": "b-1"}).json()
    assert a["event_ids"] == b["event_ids"]
    assert len(set(a["event_ids"])) == 2, "two identical events in one batch stay two events"
    rows = stack.wait_for(
        f"SELECT event_id, external_id FROM events FINAL WHERE product = '{ws.product}'",
        lambda rs: len(rs) == 2,
    )
    assert sorted(r["external_id"] for r in rows) == ["b-1:0", "b-1:1"]


def test_v1_requires_an_identity_and_a_timestamp(stack: Stack, ws: Workspace) -> None:
    r = ws.post("/v1/events", {"event": "paywall_viewed", "timestamp": TS})
    assert r.status_code == 400
    assert r.json()["field"] == "user_id"
    assert r.json()["error"] and r.json()["message"]
    r = ws.post("/v1/events", {"event": "paywall_viewed", "user_id": "u"})
    assert r.status_code == 400
    assert r.json()["field"] == "timestamp"


def test_v1_batch_limit_is_1000_events(stack: Stack, ws: Workspace) -> None:
    one = {"event": "item_viewed", "anonymous_id": "a1", "timestamp": TS}
    r = ws.post("/v1/batch/events", {"events": [one] * 1001})
    assert r.status_code == 400
    assert r.json()["field"] == "events"
    r = ws.post("/v1/batch/events", {"events": [one] * 1000})
    assert r.status_code == 202
    assert r.json()["accepted"] == 1000
    ids = set(r.json()["event_ids"])
    rows = stack.wait_for(
        f"SELECT event_id FROM events FINAL WHERE product = '{ws.product}'",
        lambda rs: len(rs) >= 1000,
    )
    assert {x["event_id"] for x in rows} == ids, "the 1001-event batch published nothing"


def test_unknown_key_is_401_with_error_and_message(stack: Stack) -> None:
    for headers in ({}, {"Authorization": "Bearer ep_unknown"}, {"Authorization": "Basic x"}):
        r = stack.http.post("/v1/events", json={"event": "a_b"}, headers=headers)
        assert r.status_code == 401
        assert set(r.json()) >= {"error", "message"}


def test_rate_limit_is_429_with_retry_after(stack: Stack) -> None:
    ws = stack.workspace(rate_limit_per_minute=3)
    body = {"event": "paywall_viewed", "user_id": "u1", "timestamp": TS}
    codes = [ws.post("/v1/events", body).status_code for _ in range(3)]
    assert codes == [202, 202, 202]
    r = ws.post("/v1/events", body)
    assert r.status_code == 429
    assert 1 <= int(r.headers["Retry-After"]) <= 20
    assert r.json()["error"] == "rate_limited"
    other = stack.workspace(rate_limit_per_minute=3)
    assert other.post("/v1/events", body).status_code == 202, "limits are per workspace"


def test_named_event_keeps_version_user_and_time(stack: Stack, ws: Workspace) -> None:
    r = ws.post(
        "/named/events",
        {
            "name": "ticket.updated",
            "data": {"ticket_id": 189325, "status": "open"},
            "user": {"external_id": 83561, "email": "a@example.com"},
            "v": "2021-09-15.01",
            "ts": 1632232002369,
        },
    )
    assert r.status_code == 202, r.text
    rows = stack.wait_for(
        "SELECT event_id, canonical_name, version, user_id, person_id, traits, properties, "
        f"toUnixTimestamp64Milli(occurred_at) AS ts FROM events WHERE product = '{ws.product}'",
        lambda rs: len(rs) == 1,
    )
    row = rows[0]
    assert row["event_id"] == r.json()["event_id"]
    assert (row["canonical_name"], row["version"]) == ("ticket_updated", "2021-09-15.01")
    assert row["user_id"] == row["person_id"] == "83561"
    assert row["ts"] == 1632232002369
    assert json.loads(row["traits"]) == {"email": "a@example.com"}
    assert json.loads(row["properties"]) == {"ticket_id": 189325, "status": "open"}


def test_named_rules(stack: Stack, ws: Workspace) -> None:
    cases = [
        ({"name": "ticket.updated"}, "data"),
        ({"name": "ticket.updated", "data": []}, "data"),
        ({"name": "ticket", "data": {}}, "name"),
        ({"name": "ticket.updated", "data": {}, "v": "v2"}, "v"),
        ({"name": "ticket.updated", "data": {}, "ts": "yesterday"}, "ts"),
        ({"name": "ticket.updated", "data": {}, "user": {"external_id": True}}, "user.external_id"),
    ]
    for body, field in cases:
        r = ws.post("/named/events", body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["field"] == field, (body, r.json())

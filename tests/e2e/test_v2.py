"""The documents' examples (golden files, every dialect), and dialect v2 end to end:
HTTP in, rows out of ClickHouse, through the real broker and agents."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack, Workspace

GOLDEN_DIR = Path(__file__).parent / "golden"
GOLDEN = sorted(GOLDEN_DIR.glob("*/*.json"))
EVT = re.compile(r"^evt_[a-z2-7]{24}$")


def matches(expected: Any, actual: Any) -> bool:
    """Deep equality where the string ``<evt>`` stands for any event id."""
    if expected == "<evt>":
        return isinstance(actual, str) and bool(EVT.match(actual))
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and expected.keys() == actual.keys()
            and all(matches(v, actual[k]) for k, v in expected.items())
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(matches(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return bool(expected == actual)


def accepted_ids(body: dict[str, Any]) -> set[str]:
    """The event ids a 2xx body reports, whatever the dialect's shape."""
    if "event_ids" in body:
        return set(body["event_ids"])
    if "event_id" in body:
        return {body["event_id"]}
    data = body["data"]
    return {d["uuid"] for d in (data if isinstance(data, list) else [data])}


def rows_of(stack: Stack, product: str, final: bool = True) -> list[dict[str, Any]]:
    return stack.query(
        f"SELECT event_id, canonical_name, event_type, action, source, subject_id, "
        f"toString(occurred_at) AS occurred_at, external_id, properties, name_format "
        f"FROM events {'FINAL' if final else ''} WHERE product = '{product}' ORDER BY occurred_at"
    )


@pytest.mark.parametrize("golden", GOLDEN, ids=[f"{g.parent.name}-{g.stem}" for g in GOLDEN])
def test_document_examples_answer_in_the_documented_shape(
    stack: Stack, ws: Workspace, golden: Path
) -> None:
    case = json.loads(golden.read_text())
    r = ws.post(case["path"], case["body"])
    assert r.status_code == case["status"], r.text
    assert matches(case["response"], r.json()), json.dumps(r.json(), indent=1)
    for name, value in case.get("headers", {}).items():
        assert r.headers.get(name) == value
    for name in case.get("headers_absent", []):
        assert name not in r.headers
    ids = accepted_ids(r.json())
    rows = stack.wait_for(
        f"SELECT event_id FROM events FINAL WHERE product = '{ws.product}'",
        lambda rs: {x["event_id"] for x in rs} == ids,
    )
    assert len(rows) == len(ids)


def test_preferred_event_lands_with_its_fields(stack: Stack, ws: Workspace) -> None:
    r = ws.post(
        "/api/v2/events",
        {
            "event_type": "project",
            "action": "created",
            "subject_type": "user",
            "subject_id": "user_123",
            "occurred_at": "2026-02-10T12:00:00Z",
            "metadata": {"workspace_id": "ws_1", "template": "kanban"},
        },
    )
    assert r.status_code == 202, r.text
    uuid = r.json()["data"]["uuid"]
    rows = stack.wait_for(
        f"SELECT event_id FROM events WHERE product = '{ws.product}'", lambda rs: len(rs) == 1
    )
    row = rows_of(stack, ws.product)[0]
    assert rows[0]["event_id"] == uuid == row["event_id"]
    assert row["canonical_name"] == "project_created"
    assert row["subject_id"] == "user_123"
    assert row["occurred_at"].startswith("2026-02-10 12:00:00")
    assert row["name_format"] == "preferred"
    assert json.loads(row["properties"]) == {"workspace_id": "ws_1", "template": "kanban"}


def test_batch_sent_twice_leaves_exactly_two_rows(stack: Stack, ws: Workspace) -> None:
    case = json.loads((GOLDEN_DIR / "v2" / "batch.json").read_text())
    first = ws.post("/api/v2/events/batch", case["body"])
    second = ws.post("/api/v2/events/batch", case["body"])
    assert first.status_code == second.status_code == 202
    ids = [d["uuid"] for d in first.json()["data"]]
    assert ids == [d["uuid"] for d in second.json()["data"]], "a retry must get the same ids"
    # The agents report each dropped retry as a DedupeNotice (dedupe_notices): once both are
    # there, the retries have been processed, so the row count below is final.
    stack.wait_for(
        f"SELECT event_id FROM dedupe_notices WHERE product = '{ws.product}'",
        lambda rs: len(rs) == 2,
    )
    rows = stack.wait_for(
        f"SELECT event_id FROM events WHERE product = '{ws.product}'", lambda rs: len(rs) >= 2
    )
    assert sorted(r["event_id"] for r in rows) == sorted(ids)
    assert len(rows_of(stack, ws.product, final=True)) == 2


def test_retry_with_same_external_id_keeps_the_first_event(stack: Stack, ws: Workspace) -> None:
    body = {"event": "order.paid", "external_id": "order-7", "properties": {"attempt": 1}}
    a = ws.post("/api/v2/events", body)
    b = ws.post("/api/v2/events", {**body, "properties": {"attempt": 2}})
    assert a.status_code == b.status_code == 202
    assert a.json()["data"]["uuid"] == b.json()["data"]["uuid"]
    stack.wait_for(
        f"SELECT 1 FROM dedupe_notices WHERE product = '{ws.product}'",
        lambda rs: len(rs) == 1,
    )
    rows = stack.wait_for(
        f"SELECT properties FROM events WHERE product = '{ws.product}'", lambda rs: len(rs) == 1
    )
    assert json.loads(rows[0]["properties"]) == {"attempt": 1}


def test_one_external_id_twice_in_one_batch_keeps_the_first(stack: Stack, ws: Workspace) -> None:
    """The copy shares the first one's id and outcome and is not published again: ClickHouse
    keeps the first one's properties (a published copy would replace them: newest insert)."""
    copy = {"event": "order.paid", "external_id": "order-8"}
    events = [{**copy, "properties": {"n": 1}}, {"event": "x.y"}, {**copy, "properties": {"n": 2}}]
    r = ws.post("/api/v2/events/batch", {"events": events})
    assert r.status_code == 202, r.text
    first, other, second = (d["uuid"] for d in r.json()["data"])
    assert first == second != other
    rows = stack.wait_for(
        f"SELECT event_id, properties FROM events FINAL WHERE product = '{ws.product}'",
        lambda rs: len(rs) == 2,
    )
    assert {row["event_id"]: json.loads(row["properties"]) for row in rows}[first] == {"n": 1}
    stack.prove_nothing_else_landed(ws, rows_before=2)


def test_events_without_external_id_are_never_deduplicated(stack: Stack, ws: Workspace) -> None:
    body = {"event": "page.viewed", "occurred_at": "2026-02-10T12:00:00Z"}
    ids = {ws.post("/api/v2/events", body).json()["data"]["uuid"] for _ in range(3)}
    assert len(ids) == 3
    stack.wait_for(
        f"SELECT event_id FROM events FINAL WHERE product = '{ws.product}'",
        lambda rs: {r["event_id"] for r in rs} == ids,
    )


def test_same_external_id_in_two_workspaces_is_two_events(stack: Stack) -> None:
    a, b = stack.workspace(), stack.workspace()
    body = {"event": "invite.sent", "external_id": "shared-1"}
    ida = a.post("/api/v2/events", body).json()["data"]["uuid"]
    idb = b.post("/api/v2/events", body).json()["data"]["uuid"]
    assert ida != idb
    for ws, eid in ((a, ida), (b, idb)):
        stack.wait_for(
            f"SELECT event_id FROM events FINAL WHERE product = '{ws.product}'",
            lambda rs, eid=eid: [r["event_id"] for r in rs] == [eid],
        )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"event_type": "project"}, "action"),
        ({"event": "signup"}, "event"),
        ({"event": "user.signed_up", "action": "x"}, "action"),
        ({"event_type": 5, "action": "created"}, "event_type"),
        ({"event": "user.signed_up", "evnt": "typo"}, "evnt"),
        ({"event": "user.signed_up", "subject_type": "team"}, "subject_type"),
        ({"event": "user.signed_up", "occurred_at": "yesterday"}, "occurred_at"),
        ({"event": "user.signed_up", "properties": [1, 2]}, "properties"),
        ({"event": "user.signed_up", "properties": {}, "metadata": {}}, "metadata"),
        ({}, "event"),
    ],
)
def test_invalid_event_is_400_naming_the_field(
    stack: Stack, ws: Workspace, body: dict[str, Any], field: str
) -> None:
    r = ws.post("/api/v2/events", body)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "validation_error"
    assert r.json()["field"] == field
    assert r.json()["message"]


def test_malformed_json_and_oversize_bodies_are_rejected(stack: Stack, ws: Workspace) -> None:
    r = ws.post(
        "/api/v2/events", content=b'{"event": "a.b",', headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert "malformed JSON" in r.json()["message"]
    r = ws.post("/api/v2/events", content=b"x" * (5 * 1024 * 1024 + 1))
    assert r.status_code == 413
    assert r.json()["error"] == "payload_too_large"
    r = ws.post(
        "/api/v2/events",
        content=b"event=a.b",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 400
    assert r.json()["field"] == "Content-Type"


def test_batch_limits(stack: Stack, ws: Workspace) -> None:
    too_many = {"events": [{"event": "a.b"}] * 1001}
    r = ws.post("/api/v2/events/batch", too_many)
    assert r.status_code == 400
    assert r.json()["field"] == "events"
    r = ws.post("/api/v2/events/batch", {"events": [{"event": "Bad"}, {"event": "x"}]})
    assert r.status_code == 400
    assert [e["index"] for e in r.json()["errors"]] == [0, 1]
    stack.prove_nothing_else_landed(ws)


def test_missing_or_unknown_key_is_401(stack: Stack) -> None:
    body = {"event": "user.signed_up"}
    assert stack.http.post("/api/v2/events", json=body).status_code == 401
    r = stack.http.post("/api/v2/events", json=body, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized"
    assert "nope" not in r.text

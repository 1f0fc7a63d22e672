"""Identity linking and user attribute history, end to end through the agents and ClickHouse."""

from __future__ import annotations

import json

from tests.conftest import Stack, Workspace

T1 = "2026-03-01T10:00:00Z"
T2 = "2026-03-01T10:05:00Z"
T3 = "2026-03-01T10:10:00Z"


def _v1(ws: Workspace, **event: str) -> str:
    r = ws.post("/v1/events", {"event": "page_viewed", **event})
    assert r.status_code == 202, r.text
    return str(r.json()["event_id"])


def test_anonymous_events_resolve_to_the_user_once_linked(stack: Stack, ws: Workspace) -> None:
    before = _v1(ws, anonymous_id="visitor-1", timestamp=T1)
    rows = stack.wait_for(
        f"SELECT person_id FROM events WHERE product = '{ws.product}'", lambda rs: len(rs) == 1
    )
    assert rows[0]["person_id"] == "visitor-1", "not linked yet: its own anonymous id"

    login = _v1(ws, anonymous_id="visitor-1", user_id="user-9", timestamp=T2)
    links = stack.wait_for(
        f"SELECT anonymous_id, user_id, status, event_id FROM identity_links FINAL "
        f"WHERE product = '{ws.product}'",
        lambda rs: len(rs) == 1,
    )
    assert links == [
        {"anonymous_id": "visitor-1", "user_id": "user-9", "status": "linked", "event_id": login}
    ]
    after = _v1(ws, anonymous_id="visitor-1", timestamp=T3)
    rows = stack.wait_for(
        f"SELECT event_id, person_id FROM events FINAL WHERE product = '{ws.product}'",
        lambda rs: len(rs) == 3,
    )
    person = {r["event_id"]: r["person_id"] for r in rows}
    assert person[after] == "user-9", "linked at processing time"
    assert person[before] == "visitor-1", "stored before the link: resolved at query time"
    resolved = stack.query(
        f"SELECT event_id FROM events_resolved WHERE product = '{ws.product}' "
        "AND resolved_person_id = 'user-9' ORDER BY occurred_at"
    )
    assert [r["event_id"] for r in resolved] == [before, login, after]


def test_a_linked_anonymous_id_is_never_repointed(stack: Stack, ws: Workspace) -> None:
    _v1(ws, anonymous_id="device-1", user_id="alice", timestamp=T1)
    stack.wait_for(
        f"SELECT 1 FROM identity_links WHERE product = '{ws.product}'", lambda rs: len(rs) == 1
    )
    _v1(ws, anonymous_id="device-1", user_id="mallory", timestamp=T2)
    links = stack.wait_for(
        f"SELECT user_id, status FROM identity_links FINAL WHERE product = '{ws.product}' "
        "ORDER BY linked_at",
        lambda rs: len(rs) == 2,
    )
    assert links == [
        {"user_id": "alice", "status": "linked"},
        {"user_id": "mallory", "status": "conflict"},
    ]
    resolved = stack.query(
        f"SELECT linked_user_id FROM identity_resolved WHERE product = '{ws.product}'"
    )
    assert resolved == [{"linked_user_id": "alice"}]


def test_two_links_in_one_batch_give_one_link_and_one_conflict(stack: Stack, ws: Workspace) -> None:
    """One request, so one agent batch: the second link must see the first one, made in the same
    batch, and become a conflict. Which one is first is not fixed: the edge spreads unkeyed
    events over the raw partitions, so their order within a request is not kept."""
    events = [
        {"event": "page_viewed", "anonymous_id": "device-2", "user_id": "alice", "timestamp": T1},
        {"event": "page_viewed", "anonymous_id": "device-2", "user_id": "mallory", "timestamp": T2},
    ]
    r = ws.post("/v1/batch/events", {"events": events})
    assert r.status_code == 202, r.text
    links = stack.wait_for(
        f"SELECT user_id, status FROM identity_links FINAL WHERE product = '{ws.product}'",
        lambda rs: len(rs) == 2,
    )
    status = {row["status"]: row["user_id"] for row in links}
    assert sorted(status) == ["conflict", "linked"], links
    resolved = stack.query(
        f"SELECT linked_user_id FROM identity_resolved WHERE product = '{ws.product}'"
    )
    assert resolved == [{"linked_user_id": status["linked"]}]
    rows = stack.wait_for(
        f"SELECT user_id, person_id FROM events FINAL WHERE product = '{ws.product}'",
        lambda rs: len(rs) == 2,
    )
    assert all(row["person_id"] == row["user_id"] for row in rows), "each is its own user's"


def test_placeholder_ids_do_not_link(stack: Stack, ws: Workspace) -> None:
    _v1(ws, anonymous_id="undefined", user_id="bob", timestamp=T1)
    _v1(ws, anonymous_id="real-anon", user_id="null", timestamp=T2)
    rows = stack.wait_for(
        f"SELECT person_id FROM events FINAL WHERE product = '{ws.product}' ORDER BY occurred_at",
        lambda rs: len(rs) == 2,
    )
    assert [r["person_id"] for r in rows] == ["bob", "real-anon"]
    assert stack.query(f"SELECT * FROM identity_links WHERE product = '{ws.product}'") == []


def test_v2_and_named_carry_links_too(stack: Stack, ws: Workspace) -> None:
    r = ws.post(
        "/api/v2/events",
        {
            "event": "user.logged_in",
            "subject_type": "user",
            "subject_id": "u-v2",
            "properties": {"anonymous_id": "anon-v2"},
        },
    )
    assert r.status_code == 202, r.text
    r = ws.post(
        "/named/events",
        {"name": "user.logged_in", "data": {}, "user": {"external_id": 7, "anonymous_id": "an-n"}},
    )
    assert r.status_code == 202, r.text
    links = stack.wait_for(
        f"SELECT anonymous_id, user_id FROM identity_links FINAL WHERE product = '{ws.product}' "
        "ORDER BY anonymous_id",
        lambda rs: len(rs) == 2,
    )
    assert links == [
        {"anonymous_id": "an-n", "user_id": "7"},
        {"anonymous_id": "anon-v2", "user_id": "u-v2"},
    ]


def test_a_late_attribute_does_not_overwrite_a_newer_one(stack: Stack, ws: Workspace) -> None:
    newer, older = 1_772_000_000_000, 1_771_000_000_000
    for ts, plan in ((newer, "pro"), (older, "free")):  # the older one arrives last (backfill)
        r = ws.post(
            "/named/events",
            {
                "name": "plan.changed",
                "data": {},
                "user": {"external_id": "u1", "plan": plan},
                "ts": ts,
            },
        )
        assert r.status_code == 202, r.text
    stack.wait_for(
        f"SELECT 1 FROM user_traits FINAL WHERE product = '{ws.product}'", lambda rs: len(rs) == 2
    )
    current = stack.query(
        "SELECT current_value, toUnixTimestamp64Milli(valid_since) AS since "
        f"FROM user_traits_current WHERE product = '{ws.product}' AND user_id = 'u1' "
        "AND trait = 'plan'"
    )
    assert [(json.loads(c["current_value"]), c["since"]) for c in current] == [("pro", newer)]
    history = stack.query(
        f"SELECT value FROM user_traits FINAL WHERE product = '{ws.product}' ORDER BY valid_from"
    )
    assert [json.loads(h["value"]) for h in history] == ["free", "pro"]

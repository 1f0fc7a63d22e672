"""The suppression rules (whose event is it), the worker's rule path with them, and the forget's
SQL on chDB: what is deleted is what the rules call theirs, and nothing of anyone else."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client

from eventpipe.ids import event_id_for
from eventpipe.suppression import Suppression, Suppressions, digest
from sinks.clickhouse import EVENTS, IDENTITY_LINKS, REJECTED, EventWriter, connect, migrate
from sinks.forget import PersonEraser
from sinks.store import EventStore, RejectedFilter
from streams.agents import Forward, Reject, process
from tests.records import CLEAN_AT, clean_record

T0_MS = 1_777_000_000_000
WINDOW = 3_600_000


def record(**over: Any) -> dict[str, Any]:
    return clean_record("e", "shop", **over)


def test_an_event_is_theirs_by_user_id_linked_anonymous_id_or_user_subject() -> None:
    s = Suppressions([Suppression.of("shop", "u1", ["a1"], T0_MS)])
    assert s.matches(record(user_id="u1"))
    assert s.matches(record(anonymous_id="a1"))
    assert s.matches(record(subject_type="user", subject_id="u1"))
    assert not s.matches(record(user_id="u2", anonymous_id="a2"))
    assert not s.matches(record(subject_type="account", subject_id="u1")), "not a person"
    assert not s.matches(clean_record("e", "other", user_id="u1")), "another workspace"


def test_placeholder_ids_never_make_anyone_suppressed() -> None:
    s = Suppression.of("shop", "u1", ["null", "anonymous", ""], T0_MS)
    assert s.ids == {digest("shop", "u1")}
    assert not Suppressions([s]).matches(record(anonymous_id="null"))


def test_ids_are_kept_as_digests_and_survive_the_topic() -> None:
    s = Suppression.of("shop", "alice@example.com", ["device-1"], T0_MS)
    value = s.to_json()
    assert b"alice" not in value and b"device-1" not in value
    assert Suppression.from_json(value) == s


def test_lifting_one_person_keeps_another_who_shares_an_anonymous_id() -> None:
    s = Suppressions()
    one, two = (Suppression.of("shop", u, ["shared"], T0_MS) for u in ("u1", "u2"))
    s.apply("shop", one.person, one)
    s.apply("shop", two.person, two)
    s.apply("shop", one.person, None)
    assert not s.matches(record(user_id="u1"))
    assert s.matches(record(anonymous_id="shared"))
    s.apply("shop", two.person, None)
    assert len(s) == 0 and not s.matches(record(anonymous_id="shared"))


def test_republishing_a_suppression_with_more_ids_replaces_it() -> None:
    s = Suppressions([Suppression.of("shop", "u1", [], T0_MS)])
    wider = Suppression.of("shop", "u1", ["a9"], T0_MS)
    s.apply("shop", wider.person, wider)
    assert len(s) == 1 and s.matches(record(anonymous_id="a9"))


def raw(body: dict[str, Any], external_id: str | None = None) -> dict[str, Any]:
    return {
        "event_id": event_id_for("shop", "api", external_id),
        "dialect": "v1",
        "product": "shop",
        "source": "api",
        "external_id": external_id,
        "received_at": T0_MS,
        "payload": orjson.dumps({"timestamp": "2026-05-01T12:00:00Z", **body}),
    }


def test_the_worker_rules_reject_a_suppressed_event_without_its_payload_or_dedupe_key() -> None:
    s = Suppressions([Suppression.of("shop", "u1", [], T0_MS)])
    event = raw({"event": "page_viewed", "user_id": "u1", "anonymous_id": "new-device"}, "k1")
    out = process(event, {}.get, WINDOW, s)
    assert isinstance(out, Reject)
    assert out.record["stage"] == "suppressed"
    assert out.record["payload"] == b"" and out.record["field"] is None
    assert out.record["external_id"] is None
    assert "u1" not in out.record["reason"]
    other = process(raw({"event": "page_viewed", "user_id": "u2"}, "k2"), {}.get, WINDOW, s)
    assert isinstance(other, Forward) and other.mark is not None


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    c = connect(f"chdb://{tmp_path_factory.mktemp('chdb') / 'data'}")
    migrate(c)
    yield c
    c.close()


def test_erase_deletes_their_rows_in_every_table_and_counts_them(client: Client) -> None:
    w = EventWriter(client)
    traits = orjson.dumps({"plan": "pro"}).decode()
    rows = [
        clean_record("e1", "p1", user_id="u1", person_id="u1", traits=traits),
        clean_record("e1", "p1", user_id="u1", person_id="u1", traits=traits),  # a copy
        clean_record("e2", "p1", anonymous_id="a1", person_id="a1"),
        clean_record("e3", "p1", subject_type="user", subject_id="u1", person_id="u1"),
        clean_record("e4", "p1", user_id="u2", person_id="u2", traits=traits),
        clean_record("e5", "p1", subject_type="account", subject_id="u1", person_id="u1x"),
        clean_record("e6", "p2", user_id="u1", person_id="u1"),  # another workspace
    ]
    w.insert_rows(EVENTS, [EVENTS.row(r) for r in rows])
    link = {"linked_at": CLEAN_AT, "event_id": "e1", "status": "linked"}
    links = [
        {**link, "product": "p1", "anonymous_id": "a1", "user_id": "u1"},
        {**link, "product": "p1", "anonymous_id": "a2", "user_id": "u2"},
        {**link, "product": "p2", "anonymous_id": "a1", "user_id": "u1"},
    ]
    w.insert_rows(IDENTITY_LINKS, [IDENTITY_LINKS.row(r) for r in links])
    rejection = {
        "product": "p1",
        "source": "api",
        "dialect": "v1",
        "stage": "normalize",
        "field": "timestamp",
        "reason": "bad",
        "received_at": CLEAN_AT,
    }
    rejections = [
        {**rejection, "event_id": "r1", "payload": b'{"user_id": "u1", "timestamp": 1}'},
        {**rejection, "event_id": "r2", "payload": b'{"user_id": "u2", "timestamp": 1}'},
    ]
    w.insert_rows(REJECTED, [REJECTED.row(r) for r in rejections])

    eraser = PersonEraser(client)
    assert eraser.anonymous_ids("p1", "u1") == ["a1"]
    counts = eraser.erase("p1", ["u1", "a1"])
    assert counts == {
        "user_traits": 1,
        "identity_links": 1,
        "persons_daily": 2,  # u1 and a1 on one day
        "dedupe_notices": 0,
        "rejected_events": 1,
        "events": 3,
    }

    def ids(sql: str) -> list[tuple[Any, ...]]:
        return sorted(tuple(r) for r in client.query(sql).result_rows)

    assert ids("SELECT product, event_id FROM events FINAL") == [
        ("p1", "e4"),
        ("p1", "e5"),
        ("p2", "e6"),
    ]
    assert ids("SELECT product, anonymous_id FROM identity_links FINAL") == [
        ("p1", "a2"),
        ("p2", "a1"),
    ]
    assert ids("SELECT product, user_id FROM user_traits FINAL") == [("p1", "u2")]
    assert ids("SELECT event_id FROM rejected_events") == [("r2",)]
    assert eraser.erase("p1", ["u1", "a1"]) == dict.fromkeys(counts, 0), "nothing left"


def test_a_suppression_is_recorded_and_lifted(client: Client) -> None:
    eraser = PersonEraser(client)
    s = Suppression.of("p9", "u1", ["a1"], T0_MS)
    eraser.record(s, {"events": 3})
    assert eraser.suppression("p9", s.person) == s
    assert eraser.active("other") == []
    assert eraser.lift("p9", "u1", T0_MS + 1)
    assert eraser.suppression("p9", s.person) is None
    assert not eraser.lift("p9", "u1", T0_MS + 2), "nothing left to lift"


def test_suppressed_rejections_are_listed_only_when_their_stage_is_asked_for(
    client: Client,
) -> None:
    base = {
        "product": "p5",
        "source": "api",
        "dialect": "v1",
        "field": None,
        "received_at": CLEAN_AT,
        "payload": b"",
    }
    rows = [
        {**base, "event_id": "s1", "stage": "suppressed", "reason": "forgotten"},
        {**base, "event_id": "n1", "stage": "normalize", "reason": "bad", "payload": b"{}"},
    ]
    EventWriter(client).insert_rows(REJECTED, [REJECTED.row(r) for r in rows])
    store = EventStore(client)
    listed = store.rejected_rows(RejectedFilter(product="p5"), 10)
    assert [r["event_id"] for r in listed] == ["n1"], "needs attention: not the suppressed one"
    asked = store.rejected_rows(RejectedFilter(product="p5", stage="suppressed"), 10)
    assert [r["event_id"] for r in asked] == ["s1"]

"""producers.ingest: an event is refused at the edge when any Kafka record it becomes would be
over the limit, and a publish failure is answered by whether a retry can help."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest

from eventpipe.codec import CLEAN_EVENT, AvroCodec
from eventpipe.dialects import parse
from eventpipe.event import clean_record
from eventpipe.publisher import Failure
from eventpipe.settings import Settings
from producers.app import create_app
from producers.auth import KeyStore
from producers.ingest import CLEAN_GROWTH, CLEAN_SLACK
from tests.fakes import ScriptedPublisher

KEY = "ep_unit_ingest"
AUTH = {"Authorization": f"Bearer {KEY}"}
TS = "2026-03-15T14:20:00Z"
CODEC = AvroCodec()
LIMIT = Settings(kafka_bootstrap="unused:9092").max_event_bytes


def post(publisher: ScriptedPublisher, path: str, body: Any) -> httpx.Response:
    """One request to the edge's ASGI app (no server, no broker: ``publisher`` answers)."""
    keys = KeyStore([], 10**9)
    keys.add(KEY, "p", "api", 10**9)
    app = create_app(Settings(kafka_bootstrap="unused:9092"), publisher, keys)

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://edge") as c:
            content = body if isinstance(body, bytes) else orjson.dumps(body)
            headers = {**AUTH, "Content-Type": "application/json"}
            return await c.post(path, content=content, headers=headers)

    return asyncio.run(call())


def v1(properties: dict[str, Any]) -> dict[str, Any]:
    return {"event": "profile.updated", "user_id": "u1", "timestamp": TS, "properties": properties}


def pill() -> dict[str, Any]:
    return v1({"traits": {f"t{i}": "x" * 60_000 for i in range(10)}})


def floats(n: int, literal: bytes = b"1e15") -> bytes:
    return b"[" + b",".join([literal] * n) + b"]"


FLOATS = b'{"name": "model.scored", "data": {"scores": %s}}' % floats(60_000)
"""A named event of ~300 KB whose clean record is ~1.1 MB: ``1e15`` is stored as
``1000000000000000.0``."""


def sizes(dialect: str, payload: bytes) -> tuple[int, int]:
    """(raw record, clean record) bytes of one event, as the edge and the worker build them."""
    eid = "evt_" + "a" * 32
    raw = {"event_id": eid, "product": "p", "source": "api", "dialect": dialect}
    raw |= {"external_id": None, "received_at": 1_773_584_400_000, "payload": payload}
    parsed = parse(dialect, payload, 1_773_584_400_000)
    clean = CODEC.encode(CLEAN_EVENT, clean_record(raw, parsed, person_id=parsed.actor_id))
    raw_value = CODEC.raw_encoder(dialect, "p", "api", raw["received_at"])(eid, None, payload)
    return len(raw_value), len(eid) + len(clean)


@pytest.mark.parametrize(
    ("dialect", "payload"),
    [
        ("v1", orjson.dumps(pill())),
        ("named", FLOATS),
        ("v1", b'{"event":"a.b","user_id":"u","timestamp":"%s","properties":{"traits":{"x":%s}}}'
         % (TS.encode(), floats(20_000))),
        ("v2", b'{"event":"a.b","properties":{"traits":{"x":%s,"y":%s}}}'
         % (floats(5_000, b"1e9"), floats(5_000, b"1E2"))),
    ],
)  # fmt: skip
def test_the_clean_record_stays_within_the_bound_the_edge_relies_on(
    dialect: str, payload: bytes
) -> None:
    raw, clean = sizes(dialect, payload)
    assert clean > raw, "these events grow when normalized"
    assert clean <= raw * CLEAN_GROWTH + CLEAN_SLACK


def test_the_pill_is_a_413_naming_the_traits_and_nothing_is_published() -> None:
    publisher = ScriptedPublisher()
    raw, clean = sizes("v1", orjson.dumps(pill()))
    assert raw < LIMIT < clean, "within the raw limit, over it once normalized"
    r = post(publisher, "/v1/events", pill())
    assert r.status_code == 413, r.text[:300]
    assert r.json()["field"] == "properties.traits"
    assert "bytes as a normalized Kafka record" in r.json()["message"]
    assert "stored twice" in r.json()["message"]
    assert publisher.sent == []


def test_an_event_that_grows_past_the_limit_without_traits_names_its_data() -> None:
    r = post(ScriptedPublisher(), "/named/events", FLOATS)
    assert r.status_code == 413, r.text[:300]
    assert r.json()["field"] == "data" and "stored twice" not in r.json()["message"]


def test_a_big_event_whose_clean_record_fits_is_accepted() -> None:
    publisher = ScriptedPublisher()
    event = v1({"note": "x" * 60_000, "traits": {"plan": "pro"}})  # measured, and it fits
    r = post(publisher, "/v1/events", event)
    assert r.status_code == 202, r.text[:300]
    assert len(publisher.sent) == 1


def test_in_a_batch_the_pill_is_that_entrys_error() -> None:
    publisher = ScriptedPublisher()
    small = v1({"plan": "pro"})
    r = post(publisher, "/v1/batch/events", {"events": [small, pill()]})
    assert r.status_code == 202, r.text[:300]
    assert r.json()["accepted"] == 1 and r.json()["errors"][0]["index"] == 1
    assert r.json()["errors"][0]["reason"].startswith("properties.traits: ")
    assert len(publisher.sent) == 1


REFUSED = Failure("INVALID_RECORD: Broker: Invalid record", retryable=False)


@pytest.mark.parametrize(
    ("publisher", "status", "error"),
    [
        (ScriptedPublisher(failures=1), 503, "unavailable"),
        (ScriptedPublisher(max_bytes=10), 413, "payload_too_large"),
        (
            ScriptedPublisher(refuse_topics=frozenset({"events.raw"}), refusal=REFUSED),
            422,
            "refused",
        ),
    ],
)
def test_a_publish_failure_is_503_only_when_a_retry_can_help(
    publisher: ScriptedPublisher, status: int, error: str
) -> None:
    r = post(publisher, "/v1/events", v1({}))
    assert (r.status_code, r.json()["error"]) == (status, error), r.text
    assert ("Retry-After" in r.headers) == (status == 503)
    if status != 503:
        assert "refused the event for good" in r.json()["message"]


def test_a_batch_reports_refused_events_as_not_retryable() -> None:
    events = [{"event": "a.b", "properties": {"n": "x" * 300}}, {"event": "a.b"}]
    publisher = ScriptedPublisher(max_bytes=400)  # the first is refused, the second stored
    r = post(publisher, "/api/v2/events/batch", {"events": events})
    assert r.status_code == 202 and "Retry-After" not in r.headers, r.text
    (entry,) = r.json()["errors"]
    assert entry["index"] == 0 and entry["retryable"] is False
    assert "refused the event for good" in entry["reason"]
    everything = ScriptedPublisher(max_bytes=10)
    r = post(everything, "/api/v2/events/batch", {"events": events})
    assert r.status_code == 400 and r.json()["rejected"] == 2, "no 503: a retry cannot help"


def test_a_batch_answers_in_index_order_with_copies_invalid_and_refused_events_mixed() -> None:
    """Copies of an earlier event's external id are answered after the published ones, and
    refusals after the invalid ones: the answer still lists each in index order."""
    big = {"event": "a.b", "external_id": "big", "properties": {"n": "x" * 300}}
    events = [
        {"event": "a.b", "external_id": "e1"},
        big,
        {"event": "not a name"},
        {"event": "a.b", "external_id": "e1"},  # a copy of index 0
        {"event": "a.b", "external_id": "e2"},
        {**big},  # a copy of index 1: refused as it was
    ]
    r = post(ScriptedPublisher(max_bytes=400), "/api/v2/events/batch", {"events": events})
    assert r.status_code == 202, r.text
    assert [d["index"] for d in r.json()["data"]] == [0, 3, 4]
    assert [e["index"] for e in r.json()["errors"]] == [1, 2, 5]
    assert r.json()["data"][1]["uuid"] == r.json()["data"][0]["uuid"]
    assert list(r.json()["data"][0])[:2] == ["index", "uuid"]

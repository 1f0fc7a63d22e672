"""Bad input on every ingestion endpoint: a 4xx naming the problem, never a 5xx, nothing published.

Each limit of ``eventpipe.dialects.common`` is sent to each endpoint (a batch carries the bad
event as its only event, or breaks the envelope itself). Then the proof: the same workspace sends
``tests.conftest.MARKERS`` good events, and once their rows are in ClickHouse the workspace must
hold exactly them, and nothing in ``rejected_events`` (an invalid event the edge had let through
would be rejected there by the agents). Markers get random Kafka keys: 32 of them cover the 4 raw
partitions (all but surely), and each partition is processed in order, so a bad event published
before its partition's marker would show up before the marker's row does.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass

import httpx
import pytest

from eventpipe.dialects.common import MAX_DEPTH, MAX_KEYS, MAX_STRING_LENGTH
from tests.conftest import Stack, Workspace

TS = "2026-02-10T12:00:00Z"
JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Endpoint:
    path: str
    batch: bool
    template: bytes  # a valid event with FREE where its free-form object goes
    free: str  # that object's field name
    names: bytes  # the event with its name given twice


V2 = b'{"event":"a.b","properties":FREE}'
V1 = b'{"event":"a_b","user_id":"u","timestamp":"' + TS.encode() + b'","properties":FREE}'
NAMED = b'{"name":"a.b","data":FREE}'
V1_TWICE = V1.replace(b'"user_id"', b'"user_id":"v","user_id"').replace(b"FREE", b"{}")
V2_TWICE = b'{"event":"a.b","event":"x.y"}'
NAMED_TWICE = b'{"name":"a.b","name":"x.y","data":{}}'
ENDPOINTS = [
    Endpoint("/api/v2/events", False, V2, "properties", V2_TWICE),
    Endpoint("/api/v2/events/batch", True, V2, "properties", V2_TWICE),
    Endpoint("/v1/events", False, V1, "properties", V1_TWICE),
    Endpoint("/v1/batch/events", True, V1, "properties", V1_TWICE),
    Endpoint("/named/events", False, NAMED, "data", NAMED_TWICE),
    Endpoint("/named/events/batch", True, NAMED, "data", NAMED_TWICE),
]
BATCHES = [e for e in ENDPOINTS if e.batch]
IDS = [e.path for e in ENDPOINTS]

DEEP = b'{"x":' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}"  # properties is level 1
# (fragment for the free-form object, the field the 400 names, relative to that object)
LIMITS: list[tuple[str, bytes, str | None]] = [
    ("depth", DEEP, ".x" + "[0]" * (MAX_DEPTH - 1)),
    ("keys", b"{" + b",".join(b'"k%d":0' % i for i in range(MAX_KEYS + 1)) + b"}", ""),
    ("string", b'{"x":"' + b"a" * (MAX_STRING_LENGTH + 1) + b'"}', ".x"),
    ("key length", b'{"' + b"k" * (MAX_STRING_LENGTH + 1) + b'":1}', None),
    ("int64", b'{"x":{"y":9223372036854775808}}', ".x.y"),
    ("negative int64", b'{"x":-9223372036854775809}', ".x"),
    ("huge float", b'{"x":1e400}', ".x"),
    ("NaN", b'{"x":NaN}', ".x"),
    ("Infinity", b'{"x":[1,-Infinity]}', ".x[1]"),
    ("duplicate key", b'{"x":1,"x":2}', ".x"),
    ("escaped duplicate", b'{"x":"\\u003a","\\u0078":":"}', ".x"),
    ("lone surrogate", b'{"x":"\\ud800"}', ".x"),
    ("very deep", b'{"x":' + b"[" * 5000 + b"]" * 5000 + b"}", "-"),
    ("non-UTF-8", b'{"x":"\xff\xfe"}', "-"),
]


def _event(ep: Endpoint, fragment: bytes) -> bytes:
    return ep.template.replace(b"FREE", fragment)


def _body(ep: Endpoint, event: bytes) -> bytes:
    return b'{"events":[' + event + b"]}" if ep.batch else event


def _field(ep: Endpoint, relative: str | None) -> str | None:
    """The field a 400 must name; None: any field under the free-form one; '-': whole body."""
    if relative == "-":
        return None
    return None if relative is None else ep.free + relative


def _check(ep: Endpoint, r: httpx.Response, field: str | None, case: str) -> str | None:
    """Assert a 400 in the right shape; return the field it names.

    A batch reports a bad event in ``errors`` (v1/named: ``"<field>: <reason>"``), unless the
    envelope itself could not be read (e.g. NaN or extreme nesting): then it is the whole body's
    400, naming ``events[0].<field>``.
    """
    where = f"{ep.path} {case}: {r.status_code} {r.text[:300]}"
    assert r.status_code == 400, where
    body = r.json()
    assert body["error"] == "validation_error" and body["message"], where
    assert len(r.content) < 4096, f"{where}: a 400 must not echo the input"
    if not ep.batch or "errors" not in body:
        got = body.get("field")
        if ep.batch and field is not None:
            field = f"events[0].{field}"
    else:
        assert body["rejected"] == 1 and body["accepted"] == 0, where
        error = body["errors"][0]
        got = error.get("field") if "field" in error else error["reason"].partition(": ")[0]
        if "field" not in error and ": " not in error["reason"]:
            got = None
    if field is not None:
        assert got == field, where
    return got


@pytest.mark.parametrize("ep", ENDPOINTS, ids=IDS)
def test_limits_are_400_naming_the_field_and_nothing_is_published(
    stack: Stack, ws: Workspace, ep: Endpoint
) -> None:
    for case, fragment, relative in LIMITS:
        r = ws.post(ep.path, content=_body(ep, _event(ep, fragment)), headers=JSON)
        got = _check(ep, r, _field(ep, relative), case)
        if relative == "-":
            assert got is None, (ep.path, case, r.text[:300])
        if relative is None:
            assert str(got).startswith(ep.free), (ep.path, case, r.text[:300])
    r = ws.post(ep.path, content=_body(ep, ep.names), headers=JSON)
    top = "name" if "named" in ep.path else "user_id" if "v1" in ep.path else "event"
    _check(ep, r, top, "name given twice")
    assert "duplicate" in r.text
    stack.prove_nothing_else_landed(ws)


@pytest.mark.parametrize("ep", BATCHES, ids=[e.path for e in BATCHES])
def test_broken_batch_envelopes_are_400(stack: Stack, ws: Workspace, ep: Endpoint) -> None:
    good = _event(ep, b"{}")
    cases: list[tuple[bytes, str | None]] = [
        (b'{"events":[' + good + b'],"events":[' + good + b"]}", "events"),
        (b'{"events":[' + good + b"]," + b'"ev\\u0065nts":[]}', "events"),
        (b'{"events":[' + good + b'],"x":1}', "x"),
        (b'{"events":[' + b"[" * 5000 + b"]" * 5000 + b"]}", None),
        (b'{"events":[' + good + b"]\xff}", None),
        (b'{"events":[' + _event(ep, b'{"n":NaN}') + b"]}", f"events[0].{ep.free}.n"),
        (b'{"events":' + good + b"}", "events"),
        (b'{"events":[]}', "events"),
        (b"[]", None),
        (b"", None),
    ]
    for body, field in cases:
        r = ws.post(ep.path, content=body, headers=JSON)
        assert r.status_code == 400, (body[:80], r.text[:300])
        assert r.json()["error"] and r.json()["message"], r.text[:300]
        if field is not None:
            assert r.json().get("field") == field, (body[:80], r.text[:300])
    r = ws.post(ep.path, {"events": [{"event": "a.b"}] * 1001})
    assert r.status_code == 400 and r.json()["field"] == "events", r.text[:300]
    stack.prove_nothing_else_landed(ws)


@pytest.mark.parametrize("ep", ENDPOINTS, ids=IDS)
def test_transport_level_refusals(stack: Stack, ws: Workspace, ep: Endpoint) -> None:
    body = _body(ep, _event(ep, b"{}"))
    for headers, field in [
        ({"Content-Type": "text/plain"}, "Content-Type"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, "Content-Type"),
        ({"Content-Type": "application/json; charset=latin-1"}, "Content-Type"),
        ({"Content-Type": "application/json", "Content-Encoding": "gzip"}, "Content-Encoding"),
    ]:
        content = gzip.compress(body) if "Content-Encoding" in headers else body
        r = ws.post(ep.path, content=content, headers=headers)
        assert r.status_code == 400, (headers, r.text)
        assert r.json()["field"] == field and r.json()["message"], r.text
    r = ws.post(ep.path, content=b" " * (5 * 1024 * 1024 + 1), headers=JSON)
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large", r.text
    ok = ws.post(ep.path, content=body, headers={"Content-Type": "application/json; charset=UTF-8"})
    assert ok.status_code == 202, ok.text
    stack.prove_nothing_else_landed(ws, rows_before=1)


@pytest.mark.parametrize("ep", ENDPOINTS, ids=IDS)
def test_an_event_kafka_would_refuse_is_413_not_a_503_forever(
    stack: Stack, ws: Workspace, ep: Endpoint
) -> None:
    """~1.5 MB: within the body limit (5 MiB) and every per-value limit, but over one Kafka
    record (``Settings.max_event_bytes``). Published, Kafka would refuse it on every retry."""
    fields = b",".join(b'"k%d":"%s"' % (i, b"x" * 60_000) for i in range(25))
    r = ws.post(ep.path, content=_body(ep, _event(ep, b"{" + fields + b"}")), headers=JSON)
    where = f"{ep.path}: {r.status_code} {r.text[:300]}"
    if ep.batch:
        assert r.status_code == 400 and r.json()["rejected"] == 1, where
    else:
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large", where
    assert "bytes as a Kafka record" in r.text, where
    assert len(r.content) < 4096, f"{where}: must not echo the input"
    stack.prove_nothing_else_landed(ws)

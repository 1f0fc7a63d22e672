"""Segment's Tracking API at the edge, for what the SDKs never send on purpose: per-message errors
(to ``rejected_events``), retries, clock skew, and the statuses of auth, limits and bad bodies.
The SDKs themselves are in ``test_segment_sdk.py``."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from eventpipe.dialects.segment import MAX_BATCH_BYTES, MAX_MESSAGE_BYTES
from tests.conftest import Stack, Workspace


def _basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def _post(ws: Workspace, path: str, body: Any, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return ws.http.post(path, content=content, headers={**_basic(ws.key), **headers})


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_a_batch_merges_context_corrects_skew_and_reports_bad_messages(
    stack: Stack, ws: Workspace
) -> None:
    p = ws.product
    now = datetime.now(UTC)
    batch = {
        "writeKey": ws.key,  # auth in the body only: no header
        "sentAt": _iso(now - timedelta(hours=1)),  # the client's clock is an hour behind
        "context": {"ip": "10.0.0.1", "library": {"name": "batch-level"}},
        "batch": [
            {
                "type": "track",
                "event": "Order Completed",
                "userId": "u1",
                "messageId": f"{p}-ok",
                "timestamp": "2024-06-01T00:00:00.000Z",
                "context": {"library": {"name": "item-level"}},
                "writeKey": ws.key,
            },
            {"type": "track", "event": "Order Completed", "messageId": f"{p}-nouser"},
            {"type": "purchase", "userId": "u1", "messageId": f"{p}-type"},
        ],
    }
    r = ws.http.post("/v1/batch", content=json.dumps(batch).encode())
    assert (r.status_code, r.json()) == (200, {"success": True})
    rejected = stack.wait_for(
        f"SELECT field, reason, payload FROM rejected_events WHERE product = '{p}'",
        lambda rs: len(rs) >= 2,
    )
    assert sorted(r["field"] for r in rejected) == ["type", "userId"]
    rows = stack.wait_for(
        f"SELECT properties, occurred_at FROM events WHERE product = '{p}'", lambda rs: len(rs) == 1
    )
    props = json.loads(rows[0]["properties"])
    assert props["$segment"]["event"] == "Order Completed"
    assert props["$segment"]["context"] == {"ip": "10.0.0.1", "library": {"name": "item-level"}}
    occurred = datetime.fromisoformat(rows[0]["occurred_at"]).replace(tzinfo=UTC)
    skew = occurred - datetime(2024, 6, 1, 1, 0, tzinfo=UTC)  # timestamp + (received - sentAt)
    assert abs(skew) < timedelta(minutes=2), occurred
    assert all(ws.key not in r["payload"] for r in rejected), "the write key is never stored"
    assert ws.key not in rows[0]["properties"]


def test_a_retried_batch_lands_once(stack: Stack, ws: Workspace) -> None:
    p = ws.product
    batch = {
        "batch": [
            {"type": "track", "event": "Item Added", "anonymousId": f"a{i}", "messageId": f"m{i}"}
            for i in range(3)
        ]
    }
    for _ in range(2):
        assert _post(ws, "/v1/batch", batch).status_code == 200
    stack.wait_for(
        f"SELECT 1 FROM dedupe_notices WHERE product = '{p}'",
        lambda rs: len(rs) == 3,
    )
    rows = stack.query(f"SELECT external_id FROM events FINAL WHERE product = '{p}'")
    assert sorted(r["external_id"] for r in rows) == ["m0", "m1", "m2"]


def test_single_calls_and_import_take_basic_bearer_and_gzip(stack: Stack, ws: Workspace) -> None:
    p = ws.product
    track = {"event": "Signed Up", "userId": "u1", "messageId": f"{p}-1"}
    assert _post(ws, "/v1/track", track).status_code == 200
    zipped = gzip.compress(json.dumps({"userId": "u1", "traits": {"plan": "pro"}}).encode())
    assert _post(ws, "/v1/identify", zipped, **{"Content-Encoding": "gzip"}).status_code == 200
    bearer = {"Authorization": f"Bearer {ws.key}"}
    body = json.dumps({"batch": [{"type": "page", "userId": "u1", "name": "Home"}]}).encode()
    assert ws.http.post("/v1/import", content=body, headers=bearer).status_code == 200
    rows = stack.wait_for(
        f"SELECT canonical_name FROM events WHERE product = '{p}' ORDER BY canonical_name",
        lambda rs: len(rs) == 3,
    )
    assert [r["canonical_name"] for r in rows] == ["page_viewed", "signed_up", "user_identified"]


def test_bad_bodies_limits_and_keys_get_the_statuses_sdks_expect(
    stack: Stack, ws: Workspace
) -> None:
    ok = {"type": "track", "event": "a b", "userId": "u"}
    big = {**ok, "properties": {"x": "a" * MAX_MESSAGE_BYTES}}
    bomb = gzip.compress(b'{"batch": [' + b" " * (MAX_BATCH_BYTES * 4) + b"]}")
    cases: list[tuple[str, bytes | dict[str, Any], dict[str, str], int]] = [
        ("/v1/batch", b'{"batch": [', {}, 400),
        ("/v1/track", b"[1, 2]", {}, 400),
        ("/v1/track", big, {}, 400),
        ("/v1/batch", {"batch": [big]}, {}, 400),
        ("/v1/batch", {"batch": [ok] * (MAX_BATCH_BYTES // 40)}, {}, 400),
        ("/v1/batch", bomb, {"Content-Encoding": "gzip"}, 400),
        ("/v1/batch", b"not gzip", {"Content-Encoding": "gzip"}, 400),
        ("/v1/batch", {"batch": [ok]}, {"Content-Encoding": "br"}, 400),
        ("/v1/batch", {"batch": [ok]}, _basic("ep_unknown"), 401),
    ]
    for path, body, headers, status in cases:
        r = _post(ws, path, body, **headers)
        assert r.status_code == status, (path, headers, r.text)
        answer = r.json()
        assert answer["success"] is False and answer["code"] and answer["message"]
    r = ws.http.post("/v1/batch", content=json.dumps({"batch": [ok]}).encode())
    assert r.status_code == 401, "no header and no writeKey"
    stack.prove_nothing_else_landed(ws)


def test_over_the_rate_limit_is_a_429_with_retry_after(stack: Stack) -> None:
    ws = stack.workspace(rate_limit_per_minute=1)
    body = {"batch": [{"type": "track", "event": "a b", "userId": "u"}]}
    assert _post(ws, "/v1/batch", body).status_code == 200
    r = _post(ws, "/v1/batch", body)
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1
    assert r.json()["code"] == "rate_limited"


def test_a_message_at_the_sdk_limit_fits_in_a_batch(stack: Stack, ws: Workspace) -> None:
    message = {"type": "track", "event": "a b", "userId": "u", "properties": {"x": ""}}
    pad = MAX_MESSAGE_BYTES - len(json.dumps(message))
    message["properties"] = {"x": "a" * pad}
    assert len(json.dumps(message)) == MAX_MESSAGE_BYTES
    body = {"batch": [message], "sentAt": _iso(datetime.now(UTC)), "writeKey": ws.key}
    assert _post(ws, "/v1/batch", body).status_code == 200
    stack.wait_for(f"SELECT 1 FROM events WHERE product = '{ws.product}'", lambda rs: len(rs) == 1)

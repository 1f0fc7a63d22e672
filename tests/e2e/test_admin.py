"""The admin surface: /admin/query reads ClickHouse and nothing else, /admin/keys checks what it
mints, and ``eventpipe edge`` serves both only on its loopback admin listener."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventpipe.embedded import free_ports, wait_for_port
from tests.conftest import Stack

EVENT = {"event": "user.signed_up"}


def admin_post(stack: Stack, path: str, body: Any) -> httpx.Response:
    return stack.http.post(
        path, json=body, headers={"Authorization": f"Bearer {stack.admin_token}"}
    )


def escapes(stack: Stack, tmp: Path) -> dict[str, tuple[str, str]]:
    """Statements that must never run: name -> (sql, a word the refusal must give as reason)."""
    state = stack.data_dir.resolve() / "dev.json"
    url = f"{stack.url}/healthz"
    return {
        "file scalar, environment": ("SELECT file('/proc/self/environ')", "file()"),
        "file scalar, secrets": (f"SELECT file('{state}')", "file()"),
        "file scalar, upper case": (f"SELECT FILE('{state}')", "FILE()"),
        "file table function": (f"SELECT * FROM file('{state}', 'LineAsString')", "file()"),
        "file as a table": (f"SELECT * FROM '{state}'", "table"),
        "file inside a CTE": (f"WITH s AS (SELECT file('{state}') AS f) SELECT f FROM s", "file()"),
        "url table function": (f"SELECT * FROM url('{url}', 'LineAsString')", "url()"),
        "remote in IN": ("SELECT 1 WHERE 1 IN remote('127.0.0.1', system.one)", "remote()"),
        "python objects": ("SELECT * FROM python(settings)", "python()"),
        "eval": ("SELECT * FROM eval('SELECT 1')", "eval()"),
        "insert": ("INSERT INTO events SELECT * FROM events LIMIT 0", "SELECT"),
        "drop": ("DROP TABLE events", "SELECT"),
        "create": ("CREATE TABLE admin_test (a Int8) ENGINE = Memory", "SELECT"),
        "second statement": ("SELECT 1; SELECT 2", "Multi-statements"),
        "second statement writes": ("SELECT 1; DROP TABLE events", "Multi-statements"),
        "settings suffix": ("SELECT 1 SETTINGS readonly = 0", "SETTINGS"),
        "settings lifts a limit": ("SELECT 1 SETTINGS max_execution_time = 0", "SETTINGS"),
        "into outfile": (f"SELECT 1 INTO OUTFILE '{tmp / 'out.txt'}'", "OUTFILE"),
        "rows to read": ("SELECT count() FROM numbers(10000000000)", "max_rows_to_read"),
        "result rows": ("SELECT number FROM numbers(1000000)", "Limit for result"),
    }


def test_admin_query_refuses_every_escape_with_a_reason(stack: Stack, tmp_path: Path) -> None:
    ran = {}
    for name, (sql, reason) in escapes(stack, tmp_path).items():
        r = admin_post(stack, "/admin/query", {"sql": sql})
        body = r.json()
        if r.status_code != 400 or body.get("error") not in ("query_refused", "query_failed"):
            ran[name] = (r.status_code, r.text[:200])
            continue
        assert body["field"] == "sql", (name, body)
        assert reason in body["message"], (name, body)
        assert stack.admin_token not in r.text and "EVENTPIPE" not in r.text, name
    assert ran == {}, "these ran or failed without a query error"
    assert not (tmp_path / "out.txt").exists()
    tables = stack.query(
        "SELECT name FROM system.tables "
        "WHERE database = currentDatabase() AND name IN ('events', 'admin_test')"
    )
    assert tables == [{"name": "events"}], "the writes did not happen"


def test_dashboard_queries_still_work(stack: Stack) -> None:
    ws = stack.workspace()
    assert ws.post("/api/v2/events", EVENT).status_code == 202
    p = ws.product
    rows = stack.wait_for(
        f"SELECT canonical_name, count() AS n FROM events FINAL WHERE product = '{p}' GROUP BY 1",
        lambda rs: len(rs) == 1,
    )
    assert rows == [{"canonical_name": "user_signed_up", "n": 1}]
    resolved = f"SELECT count() AS n FROM events_resolved WHERE product = '{p}'"
    assert stack.query(resolved) == [{"n": 1}]
    union = stack.query(
        "WITH t AS (SELECT name FROM system.tables WHERE database = currentDatabase()) "
        "SELECT name FROM t WHERE name = 'events' UNION ALL SELECT 'x' AS name"
    )  # UNION ALL keeps no order across its parts
    assert sorted(r["name"] for r in union) == ["events", "x"]
    assert stack.query("SELECT toUInt8(getSetting('readonly')) AS r") == [{"r": 1}]
    assert stack.query("SELECT count() AS n FROM numbers(1000) -- a trailing comment") == [
        {"n": 1000}
    ]


def test_admin_keys_checks_what_it_mints(stack: Stack) -> None:
    bad: list[tuple[dict[str, Any], str]] = [
        ({"product": "p_ok", "rate_limit_per_minute": 0}, "rate_limit_per_minute"),
        ({"product": "p_ok", "rate_limit_per_minute": -5}, "rate_limit_per_minute"),
        ({"product": "p_ok", "rate_limit_per_minute": "100"}, "rate_limit_per_minute"),
        ({"product": "p_ok", "rate_limit_per_minute": 1.5}, "rate_limit_per_minute"),
        ({"product": "p_ok", "rate_limit_per_minute": True}, "rate_limit_per_minute"),
        ({}, "product"),
        ({"product": ""}, "product"),
        ({"product": "Shop"}, "product"),
        ({"product": "has space"}, "product"),
        ({"product": "x" * 65}, "product"),
        ({"product": 7}, "product"),
        ({"product": ["a"]}, "product"),
        ({"product": "p_ok", "source": "API"}, "source"),
        ({"product": "p_ok", "source": None}, "source"),
        ({"product": "p_ok", "sorce": "web"}, "sorce"),
    ]
    for body, field in bad:
        r = admin_post(stack, "/admin/keys", body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"] == "invalid_request" and r.json()["field"] == field, (body, r.text)
    r = admin_post(stack, "/admin/keys", {"product": "a-b_c1", "source": "web"})
    assert r.status_code == 201, r.text
    key = r.json()["key"]
    r = stack.http.post("/api/v2/events", json=EVENT, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 202, r.text
    auth = {"Authorization": f"Bearer {stack.admin_token}"}
    r = stack.http.post("/admin/keys", content=b"not json", headers=auth)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


@dataclass
class Edge:
    public: httpx.Client
    admin: httpx.Client
    token: str
    configured_key: str


@pytest.fixture
def edge(stack: Stack, backend_env: dict[str, str], tmp_path: Path) -> Iterator[Edge]:
    """``eventpipe edge`` against the stack's Kafka, with a configured key and an admin token."""
    state = json.loads((stack.data_dir / "dev.json").read_text())
    port, admin_port = free_ports(2)
    configured = "ep_configured_admin_test_key"
    token = "admin-token-for-the-edge-test"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
    env.update(
        {k: v for k, v in backend_env.items() if k == "EVENTPIPE_TOPIC_PREFIX"},
        EVENTPIPE_KAFKA_BOOTSTRAP=state["kafka_bootstrap"],
        EVENTPIPE_ADMIN_TOKEN=token,
        EVENTPIPE_ADMIN_LISTEN=f"127.0.0.1:{admin_port}",
        EVENTPIPE_API_KEYS=json.dumps(
            [{"sha256": hashlib.sha256(configured.encode()).hexdigest(), "product": "configured"}]
        ),
    )
    log = (tmp_path / "edge.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "launch", "edge", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port, 60, proc)
        wait_for_port("127.0.0.1", admin_port, 60, proc)
        with (
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as public,
            httpx.Client(base_url=f"http://127.0.0.1:{admin_port}", timeout=30) as admin,
        ):
            yield Edge(public, admin, token, configured)
    finally:
        proc.terminate()
        assert proc.wait(30) == 0, "SIGTERM stops both listeners and the edge exits cleanly"


def test_edge_serves_admin_routes_only_on_its_admin_listener(stack: Stack, edge: Edge) -> None:
    auth = {"Authorization": f"Bearer {edge.token}"}
    product = f"t_edge_{os.getpid()}"
    for path, body in (
        ("/admin/keys", {"product": product}),
        ("/admin/query", {"sql": "SELECT 1"}),
    ):
        assert edge.public.post(path, json=body, headers=auth).status_code == 404, path
    assert edge.admin.post("/api/v2/events", json=EVENT, headers=auth).status_code == 404

    r = edge.admin.post("/admin/keys", json={"product": product}, headers=auth)
    assert r.status_code == 201, r.text
    key = r.json()["key"]
    r = edge.public.post("/api/v2/events", json=EVENT, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 202, "a key minted on the admin listener works on the public one"
    stack.wait_for(f"SELECT 1 FROM events WHERE product = '{product}'", lambda rs: len(rs) == 1)

    r = edge.admin.post("/admin/query", json={"sql": "SELECT 1"}, headers=auth)
    assert r.status_code == 501 and r.json()["error"] == "not_supported", r.text

    r = edge.admin.request("DELETE", "/admin/keys", json={"key": edge.configured_key}, headers=auth)
    assert r.status_code == 409, r.text
    assert r.json()["field"] == "key" and "EVENTPIPE_API_KEYS" in r.json()["message"]
    configured = {"Authorization": f"Bearer {edge.configured_key}"}
    assert edge.public.post("/api/v2/events", json=EVENT, headers=configured).status_code == 202

    r = edge.admin.request("DELETE", "/admin/keys", json={"key": key}, headers=auth)
    assert r.status_code == 200, r.text
    r = edge.public.post("/api/v2/events", json=EVENT, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 401


def test_edge_refuses_a_non_loopback_admin_listener(tmp_path: Path) -> None:
    port, admin_port = free_ports(2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
    env.update(
        EVENTPIPE_KAFKA_BOOTSTRAP="127.0.0.1:1",
        EVENTPIPE_ADMIN_TOKEN="t",
        EVENTPIPE_ADMIN_LISTEN=f"0.0.0.0:{admin_port}",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "launch", "edge", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("eventpipe edge served a non-loopback admin listener") from None
    assert proc.returncode != 0
    assert b"EVENTPIPE_ADMIN_ALLOW_REMOTE" in out

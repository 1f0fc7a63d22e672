"""Forgetting a person end to end: HTTP in, ClickHouse rows out, the live worker suppressing.

One test walks the whole life of a suppression on its own workspaces (the session's stack is
shared): the forget removes the person's rows (by user id, by an anonymous id linked to them,
by user subject) and reports the counts, leaves another person and another workspace alone; the
person's new events are dropped with a payload-less rejection while others land; a replay of the
range while suppressed brings nothing back; after the lift (through the command) new events land.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from rich.console import Console

from eventpipe.settings import Settings
from launch.reach import pipeline
from replay.run import Options, replay
from replay.select import Selection
from tests.conftest import Stack, Workspace
from tests.e2e.test_worker_faults import worker_pid
from tests.load import wait_until

T1, T2, T3 = "2026-03-01T10:00:00Z", "2026-03-01T10:05:00Z", "2026-03-01T10:10:00Z"


def _v1(ws: Workspace, **event: Any) -> str:
    r = ws.post("/v1/events", {"event": "page_viewed", "timestamp": T1, **event})
    assert r.status_code == 202, r.text
    return str(r.json()["event_id"])


def _v2(ws: Workspace, **event: Any) -> str:
    r = ws.post("/api/v2/events", {"event": "profile.updated", **event})
    assert r.status_code == 202, r.text
    return str(r.json()["data"]["uuid"])


def _forget(stack: Stack, product: str, person: str, method: str = "POST") -> dict[str, Any]:
    r = stack.http.request(
        method,
        "/admin/forget",
        json={"product": product, "person_id": person},
        headers={"Authorization": f"Bearer {stack.admin_token}"},
        timeout=180,
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _events(stack: Stack, ws: Workspace) -> dict[str, str]:
    rows = stack.query(
        f"SELECT event_id, person_id FROM events FINAL WHERE product = '{ws.product}'"
    )
    return {r["event_id"]: r["person_id"] for r in rows}


def _count(stack: Stack, table: str, ws: Workspace, where: str = "1") -> int:
    sql = f"SELECT count() AS n FROM {table} WHERE product = '{ws.product}' AND {where}"
    return int(stack.query(sql)[0]["n"])


def test_forget_removes_a_person_suppresses_them_until_lifted(
    stack: Stack, backend_env: dict[str, str]
) -> None:
    ws, elsewhere = stack.workspace(), stack.workspace()
    since_ms = int(time.time() * 1000) - 1000
    before_login = _v1(ws, anonymous_id="device-1", timestamp=T1)
    login = _v1(ws, anonymous_id="device-1", user_id="alice", timestamp=T2)
    about = _v2(ws, subject_type="user", subject_id="alice", properties={"traits": {"plan": "pro"}})
    bob = _v1(ws, anonymous_id="device-2", user_id="bob", timestamp=T3)
    elsewhere_alice = _v1(elsewhere, anonymous_id="device-1", user_id="alice", timestamp=T2)
    stack.wait_for(
        f"SELECT 1 FROM events WHERE product IN ('{ws.product}', '{elsewhere.product}')",
        lambda rs: len(rs) == 5,
    )
    stack.wait_for(
        f"SELECT 1 FROM identity_links WHERE product = '{ws.product}'", lambda rs: len(rs) == 2
    )
    stack.wait_for(
        f"SELECT 1 FROM user_traits WHERE product = '{ws.product}'", lambda rs: len(rs) == 1
    )

    report = _forget(stack, ws.product, "alice")

    assert report["settled"] is True
    assert report["anonymous_ids"] == 1
    deleted = report["deleted"]
    assert deleted["events"] == 3, deleted
    assert deleted["identity_links"] == 1 and deleted["user_traits"] == 1, deleted
    # device-1 and alice on T1's day, alice again today (the subject event has no time)
    assert deleted["persons_daily"] == 3, deleted
    assert deleted["dedupe_notices"] == 0 and deleted["rejected_events"] == 0, deleted
    assert _events(stack, ws) == {bob: "bob"}, "by user id, by linked anonymous id, by subject"
    assert before_login not in _events(stack, ws) and login not in _events(stack, ws)
    assert about not in _events(stack, ws)
    assert _count(stack, "identity_links", ws) == 1, "bob's link stays"
    assert _count(stack, "user_traits", ws) == 0
    assert _count(stack, "persons_daily", ws, "person_id IN ('alice', 'device-1')") == 0
    assert _count(stack, "persons_daily", ws, "person_id = 'bob'") == 1
    assert _events(stack, elsewhere) == {elsewhere_alice: "alice"}, "another workspace"
    assert _count(stack, "identity_links", elsewhere) == 1

    # Suppressed: her new events (as user, as her linked device, as subject) are dropped.
    theirs = [
        _v1(ws, user_id="alice", timestamp=T3),
        _v1(ws, anonymous_id="device-1", timestamp=T3),
        _v2(ws, subject_type="user", subject_id="alice"),
    ]
    carol = _v1(ws, user_id="carol", timestamp=T3)
    stack.wait_for(
        f"SELECT 1 FROM rejected_events WHERE product = '{ws.product}' AND stage = 'suppressed'",
        lambda rs: len(rs) == 3,
    )
    stack.wait_for(
        f"SELECT 1 FROM events WHERE product = '{ws.product}' AND event_id = '{carol}'",
        lambda rs: len(rs) == 1,
    )
    assert set(_events(stack, ws)) == {bob, carol}
    rejected = stack.query(
        "SELECT event_id, payload, field, external_id, reason FROM rejected_events "
        f"WHERE product = '{ws.product}' AND stage = 'suppressed'"
    )
    assert sorted(r["event_id"] for r in rejected) == sorted(theirs)
    assert all(r["payload"] == "" and r["field"] is None for r in rejected)
    assert all("alice" not in r["reason"] for r in rejected)
    record = stack.query(
        f"SELECT person, ids, lifted_at FROM suppressions FINAL WHERE product = '{ws.product}'"
    )
    assert len(record) == 1 and record[0]["lifted_at"] is None
    assert "alice" not in str(record) and "device-1" not in str(record), "digests only"

    # A replay of the whole range while she is suppressed brings nothing of hers back.
    env = {k.removeprefix("EVENTPIPE_").lower(): v for k, v in backend_env.items()}
    settings, store = pipeline(Settings(**{**env, "data_dir": stack.data_dir}))
    sel = Selection(from_ms=since_ms, product=ws.product)
    console = Console(file=io.StringIO())
    done = replay(settings, store, Options(sel, False, 60.0), console=console)
    assert done.stored is True
    assert sum(n for (stage, _), n in done.summary.rejected.items() if stage == "suppressed") == 6
    assert set(_events(stack, ws)) == {bob, carol}
    assert _count(stack, "identity_links", ws) == 1
    # Her three events from before the forget are suppressed rejections now too (no payload);
    # the three dropped live were known, and are not stored again.
    assert done.summary.rejections_new == 3
    assert _count(stack, "rejected_events", ws, "stage = 'suppressed'") == 6
    assert _count(stack, "rejected_events", ws, "stage = 'suppressed' AND payload != ''") == 0

    # Lifted through the command: her new events land again.
    cmd = [sys.executable, "-m", "launch", "forget", "--data-dir", str(stack.data_dir)]
    cmd += ["--product", ws.product, "--person", "alice", "--lift"]
    proc_env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
    proc_env.update(backend_env)
    lifted = subprocess.run(cmd, env=proc_env, capture_output=True, timeout=120)
    assert lifted.returncode == 0, lifted.stderr.decode()
    assert "lifted" in lifted.stdout.decode()
    again = subprocess.run(cmd, env=proc_env, capture_output=True, timeout=120)
    assert again.returncode == 1, "nothing left to lift"
    # The worker's feed reads the lift within a fetch wait; until then an event is dropped.
    deadline = time.monotonic() + 60
    while True:
        back = _v1(ws, user_id="alice", timestamp=T3)
        rows = stack.wait_for(
            f"SELECT 1 FROM events WHERE event_id = '{back}' UNION ALL SELECT 1 FROM "
            f"rejected_events WHERE event_id = '{back}'",
            lambda rs: len(rs) >= 1,
        )
        if back in _events(stack, ws):
            break
        assert time.monotonic() < deadline, f"still suppressed after the lift: {rows}"
    assert _events(stack, elsewhere) == {elsewhere_alice: "alice"}


@pytest.mark.fault
def test_a_restarted_worker_still_suppresses(own_stack: Stack) -> None:
    """The suppression lives in the compacted topic, not in the worker: a worker SIGKILLed and
    restarted by dev reads it again before it takes traffic."""
    stack = own_stack
    ws = stack.workspace()
    assert _forget(stack, ws.product, "alice")["deleted"]["events"] == 0
    killed = worker_pid(stack)
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    wait_until(lambda: worker_pid(stack) not in (None, killed), 90, "a restarted worker")
    alice = _v1(ws, user_id="alice", timestamp=T1)
    bob = _v1(ws, user_id="bob", timestamp=T1)
    stack.wait_for(f"SELECT 1 FROM events WHERE product = '{ws.product}'", lambda rs: len(rs) >= 1)
    stack.wait_for(
        f"SELECT 1 FROM rejected_events WHERE event_id = '{alice}' AND stage = 'suppressed'",
        lambda rs: len(rs) == 1,
    )
    assert set(_events(stack, ws)) == {bob}


def test_forget_refuses_a_placeholder_and_needs_the_admin_token(stack: Stack) -> None:
    ws = stack.workspace()
    admin = {"Authorization": f"Bearer {stack.admin_token}"}
    r = stack.http.post(
        "/admin/forget", json={"product": ws.product, "person_id": "null"}, headers=admin
    )
    assert r.status_code == 400 and "placeholder" in r.json()["message"]
    r = stack.http.post("/admin/forget", json={"product": ws.product}, headers=admin)
    assert r.status_code == 400 and r.json()["field"] == "person_id"
    r = stack.http.post("/admin/forget", json={"product": ws.product, "person_id": "x"})
    assert r.status_code == 401

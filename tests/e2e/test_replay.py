"""``eventpipe replay`` end to end: the running dev's broker and ClickHouse, the live sink writing.

Each test replays its own workspace (``product``) from its own start time, so the session's
other traffic on ``events.raw`` is read and skipped. A rule change is made by wrapping the v2
parser in this process: the replay runs here, the live worker keeps the old rules.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from rich.console import Console

from eventpipe import dialects
from eventpipe.event import ParsedEvent
from eventpipe.naming import EventName
from eventpipe.settings import Settings
from launch.reach import pipeline
from replay.run import Options, Result, replay
from replay.select import Selection
from tests.conftest import Stack, Workspace


@pytest.fixture
def replayer(stack: Stack, backend_env: dict[str, str]) -> Iterator[Any]:
    """``replay(ws, since_ms, **options)`` against the session's stack."""
    env = {k.removeprefix("EVENTPIPE_").lower(): v for k, v in backend_env.items()}
    base = Settings(**{**env, "data_dir": stack.data_dir})
    settings, store = pipeline(base)

    def run(ws: Workspace, since_ms: int, **kw: Any) -> Result:
        dry_run = kw.pop("dry_run", False)
        stop = kw.pop("stop", None)
        sel = Selection(from_ms=since_ms, product=ws.product, **kw)
        console = Console(file=io.StringIO())
        return replay(settings, store, Options(sel, dry_run, 60.0), console=console, stop=stop)

    run.store = store  # type: ignore[attr-defined]
    yield run
    close = getattr(store, "close", None)
    if close is not None:
        close()


@pytest.fixture
def renamed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Today's rule: ``signup.*`` events are ``account.*`` now."""
    original = dialects.PARSERS["v2"]

    def parse(payload: bytes, received_at_ms: int) -> ParsedEvent:
        parsed = original(payload, received_at_ms)
        if parsed.name.event_type == "signup":
            parsed.name = EventName("account", parsed.name.action, parsed.name.format)
        return parsed

    monkeypatch.setitem(dialects.PARSERS, "v2", parse)


def _now_ms() -> int:
    return int(time.time() * 1000) - 1000


def _send(ws: Workspace, events: list[dict[str, Any]]) -> list[str]:
    r = ws.post("/api/v2/events/batch", {"events": events})
    assert r.status_code == 202, r.text
    return [e["uuid"] for e in r.json()["data"]]


def _rows(stack: Stack, ws: Workspace, n: int) -> list[dict[str, Any]]:
    return stack.wait_for(
        f"SELECT event_id, canonical_name, person_id FROM events FINAL "
        f"WHERE product = '{ws.product}' ORDER BY event_id",
        lambda rs: len(rs) >= n,
    )


def _count(stack: Stack, ws: Workspace) -> dict[str, int]:
    rows = stack.query(
        f"SELECT count() AS n, uniqExact(event_id) AS ids FROM events FINAL "
        f"WHERE product = '{ws.product}'"
    )
    return {"rows": rows[0]["n"], "ids": rows[0]["ids"]}


def test_a_changed_naming_rule_rewrites_the_rows_on_the_same_ids(
    stack: Stack, ws: Workspace, replayer: Any, renamed: None
) -> None:
    since = _now_ms()
    events = [
        {"event": "signup.done", "subject_type": "user", "subject_id": f"u{i}"} for i in range(5)
    ]
    events += [{"event": "page.viewed", "subject_type": "user", "subject_id": "u1"}]
    events += [
        {"event": "signup.done", "subject_type": "user", "subject_id": "k", "external_id": "k1"}
    ]
    ids = _send(ws, events)
    before = _rows(stack, ws, len(ids))
    assert sorted(r["event_id"] for r in before) == sorted(ids)

    dry = replayer(ws, since, dry_run=True)
    assert (dry.summary.changed, dry.summary.identical, dry.summary.new) == (6, 1, 0)
    assert dry.summary.changed_columns["canonical_name"] == 6
    assert dry.stored is None and dry.summary.written == 0
    assert _rows(stack, ws, len(ids)) == before, "a dry run wrote something"

    done = replayer(ws, since)
    assert done.stored is True and done.summary.written == 6 and done.stopped is None
    assert done.summary.superseded == 6
    after = _rows(stack, ws, len(ids))
    assert sorted(r["event_id"] for r in after) == sorted(ids), "the ids changed"
    names = sorted(r["canonical_name"] for r in after)
    assert names == ["account_done"] * 6 + ["page_viewed"]
    assert _count(stack, ws) == {"rows": 7, "ids": 7}

    again = replayer(ws, since)
    assert (again.summary.identical, again.summary.written) == (7, 0)
    assert _count(stack, ws) == {"rows": 7, "ids": 7}


def test_rows_missing_from_clickhouse_are_written_although_their_keys_are_known(
    stack: Stack, ws: Workspace, replayer: Any
) -> None:
    """OpenMeter #4902: the live dedupe table holds every key, some rows are gone."""
    since = _now_ms()
    events = [{"event": "order.paid", "external_id": f"o{i}"} for i in range(6)]
    ids = _send(ws, events)
    _rows(stack, ws, 6)
    retry = _send(ws, events[:2])  # client retries: dropped live as duplicates
    assert retry == ids[:2]
    stack.wait_for(
        f"SELECT 1 FROM dedupe_notices WHERE product = '{ws.product}'",
        lambda rs: len(rs) == 2,
    )
    assert replayer.store.delete_events(ws.product, ids[:3]) == 3
    assert _count(stack, ws) == {"rows": 3, "ids": 3}

    done = replayer(ws, since)
    s = done.summary
    assert (s.new, s.identical, s.duplicates, s.written) == (3, 3, 2, 3)
    assert done.stored is True
    rows = _rows(stack, ws, 6)
    assert sorted(r["event_id"] for r in rows) == sorted(ids)
    assert _count(stack, ws) == {"rows": 6, "ids": 6}


def test_a_replay_beside_live_load_leaves_one_row_per_id(
    stack: Stack, ws: Workspace, replayer: Any
) -> None:
    since = _now_ms()
    first = _send(ws, [{"event": "item.viewed", "properties": {"i": i}} for i in range(200)])
    _rows(stack, ws, 200)
    replayer.store.delete_events(ws.product, first[::2])
    live: list[str] = []
    failures: list[str] = []

    def load() -> None:
        for _ in range(15):
            r = ws.post("/api/v2/events/batch", {"events": [{"event": "item.added"}] * 20})
            if r.status_code == 202:
                live.extend(e["uuid"] for e in r.json()["data"])
            else:
                failures.append(r.text)

    sender = threading.Thread(target=load)
    sender.start()
    done = replayer(ws, since)
    sender.join()
    assert not failures
    assert done.stored is True and done.summary.new >= 100
    want = set(first) | set(live)
    rows = _rows(stack, ws, len(want))
    assert {r["event_id"] for r in rows} == want
    assert _count(stack, ws) == {"rows": len(want), "ids": len(want)}


def test_an_interrupted_replay_resumes_where_it_stopped(
    stack: Stack, ws: Workspace, replayer: Any, renamed: None
) -> None:
    since = _now_ms()
    ids = _send(ws, [{"event": "signup.started", "subject_type": "user", "subject_id": "a"}] * 3)
    _rows(stack, ws, 3)
    stop = threading.Event()
    stop.set()  # Ctrl-C before the first batch
    stopped = replayer(ws, since, stop=stop)
    assert stopped.stopped == "interrupted" and stopped.summary.read == 0
    resume = {r.partition: r.next for r in stopped.ranges if not r.done}
    assert resume, "nothing left to resume"

    done = replayer(ws, since, resume=resume)
    assert done.stopped is None and done.summary.changed == 3
    rows = _rows(stack, ws, 3)
    assert sorted(r["event_id"] for r in rows) == sorted(ids)
    assert {r["canonical_name"] for r in rows} == {"account_started"}


def test_the_command_prints_its_summary_and_writes_through_the_running_dev(
    stack: Stack, ws: Workspace, backend_env: dict[str, str]
) -> None:
    ids = _send(ws, [{"event": "cart.opened", "external_id": f"c{i}"} for i in range(3)])
    _rows(stack, ws, 3)
    assert stack.http.post(
        "/admin/store/delete_events",
        json={"product": ws.product, "ids": ids[:1]},
        headers={"Authorization": f"Bearer {stack.admin_token}"},
    ).json() == {"deleted": 1}
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
    env.update(backend_env, COLUMNS="200")
    command = [sys.executable, "-m", "launch", "replay", "--data-dir", str(stack.data_dir)]
    command += ["--product", ws.product, "--from", "-10m"]
    dry = subprocess.run([*command, "--dry-run"], env=env, capture_output=True, timeout=120)
    assert dry.returncode == 0, dry.stderr.decode()
    out = dry.stdout.decode()
    assert "dry run, nothing written" in out
    assert re.search(r"rows new\s*│\s*1\b", out), out
    assert re.search(r"rows identical[^│]*│\s*2\b", out), out
    assert _count(stack, ws) == {"rows": 2, "ids": 2}

    done = subprocess.run(command, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert re.search(r"rows written \(new \+ changed\)\s*│\s*1\b", done.stdout.decode())
    assert _count(stack, ws) == {"rows": 3, "ids": 3}

    bad = subprocess.run([*command, "--to", "soon"], env=env, capture_output=True, timeout=120)
    assert bad.returncode == 2 and "--to" in bad.stderr.decode()

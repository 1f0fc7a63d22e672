"""Rejected events and their redrive end to end: rejections keep what a redrive needs, dedupe
notices live apart, and a redrive after a fix lands each event once and marks its rejection."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from rich.console import Console

from eventpipe import dialects
from eventpipe.event import ParsedEvent
from eventpipe.settings import Settings
from launch.reach import pipeline
from replay.redrive import RedriveResult, redrive
from sinks.store import RejectedFilter, Store
from tests.conftest import Stack, Workspace


@pytest.fixture
def piped(stack: Stack, backend_env: dict[str, str]) -> Iterator[tuple[Settings, Store]]:
    env = {k.removeprefix("EVENTPIPE_").lower(): v for k, v in backend_env.items()}
    settings, store = pipeline(Settings(**{**env, "data_dir": stack.data_dir}))
    yield settings, store
    close = getattr(store, "close", None)
    if close is not None:
        close()


def _fix_segment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Today's fix: a track call with neither userId nor anonymousId is the anonymous 'nobody'."""
    original = dialects.PARSERS["segment"]

    def parse(payload: bytes, received_at_ms: int) -> ParsedEvent:
        envelope = orjson.loads(payload)  # {"message": {...}, "type"?, "batch"?}
        message = envelope["message"]
        if "userId" not in message and "anonymousId" not in message:
            message["anonymousId"] = "nobody"
        return original(orjson.dumps(envelope), received_at_ms)

    monkeypatch.setitem(dialects.PARSERS, "segment", parse)


def _redrive(piped: tuple[Settings, Store], product: str, **kw: Any) -> RedriveResult:
    settings, store = piped
    chosen = RejectedFilter(product=product, pending=not kw.pop("again", False))
    console = Console(file=io.StringIO())
    return redrive(settings, store, chosen, limit=1000, wait_s=60.0, console=console, **kw)


def test_a_redrive_after_a_fix_lands_each_event_once(
    stack: Stack, ws: Workspace, piped: tuple[Settings, Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    p, (_, store) = ws.product, piped
    anonymous = [
        {"type": "track", "event": "Order Completed", "messageId": f"m{i}"} for i in range(3)
    ]
    good = {"type": "track", "event": "Cart Viewed", "userId": "u1", "messageId": "ok"}
    batch = json.dumps({"writeKey": ws.key, "batch": [*anonymous, good]}).encode()
    assert ws.http.post("/v1/batch", content=batch).status_code == 200
    assert ws.http.post("/v1/batch", content=batch).status_code == 200  # an SDK's retry
    stack.wait_for(f"SELECT 1 FROM dedupe_notices WHERE product = '{p}'", lambda rs: len(rs) == 1)
    stack.wait_for(f"SELECT 1 FROM rejected_events WHERE product = '{p}'", lambda rs: len(rs) >= 6)

    groups = store.rejected_groups(RejectedFilter(product=p))
    # The edge could not parse them, so each copy has a random id: 3 messages, 6 events.
    assert [(g["stage"], g["events"], g["redriven"]) for g in groups] == [("normalize", 6, 0)]
    assert "dedupe" not in {g["stage"] for g in groups}, "a dropped retry needs no attention"
    rows = store.rejected_rows(RejectedFilter(product=p), 100)
    assert len(rows) == 6, "one row per rejection, however often it was stored"
    for row in rows:
        assert (row["dialect"], row["source_topic"]) == ("segment", "events.raw")
        assert row["source_partition"] >= 0 and row["source_offset"] >= 0
        assert b"Order Completed" in row["payload"], "the raw payload, to send again"
        assert row["external_id"] is None, "the edge could not parse it"

    unfixed = _redrive(piped, p, dry_run=False)
    assert unfixed.counts() == {"rejected": 6}, "the same rules reject them again"
    assert unfixed.stored is True

    _fix_segment(monkeypatch)
    dry = _redrive(piped, p, dry_run=True)
    assert dry.counts() == {"accepted": 3, "duplicate": 3} and dry.stored is None
    assert stack.query(f"SELECT count() AS n FROM events WHERE product = '{p}'") == [{"n": 1}]

    done = _redrive(piped, p, dry_run=False)
    details = sorted(o["detail"] for o in done.outcomes)
    assert details == ["new"] * 3 + ["of the stored copy"] * 3 and done.stored is True
    events = stack.wait_for(
        f"SELECT event_id, person_id FROM events FINAL WHERE product = '{p}' ORDER BY event_id",
        lambda rs: len(rs) == 4,
    )
    ids = {r["event_id"] for r in events}
    assert {o["event_id"] for o in done.outcomes} <= {r["event_id"] for r in rows}
    marked = stack.query(
        f"SELECT event_id, redrive_outcome FROM rejected_events_status WHERE product = '{p}' "
        "ORDER BY event_id LIMIT 1 BY event_id"
    )
    outcomes = sorted(m["redrive_outcome"] for m in marked)
    assert outcomes == ["accepted"] * 3 + ["duplicate"] * 3, "marked, not deleted"
    assert len(ids) == 4

    assert _redrive(piped, p, dry_run=False).outcomes == [], "nothing left to redrive"
    again = _redrive(piped, p, dry_run=False, again=True)
    assert sorted(o["outcome"] for o in again.outcomes) == ["accepted"] * 3 + ["duplicate"] * 3
    assert {o["detail"] for o in again.outcomes if o["outcome"] == "accepted"} == {"identical"}
    count = stack.query(
        f"SELECT count() AS n, uniqExact(event_id) AS ids FROM events FINAL WHERE product = '{p}'"
    )
    assert count == [{"n": 4, "ids": 4}], "redriving twice made no second row"


def test_the_rejected_command_groups_by_stage_and_reason(
    stack: Stack, ws: Workspace, backend_env: dict[str, str]
) -> None:
    p = ws.product
    bad = {"type": "track", "event": "Signed Up", "messageId": "x1"}
    body = json.dumps({"writeKey": ws.key, "batch": [bad]}).encode()
    assert ws.http.post("/v1/batch", content=body).status_code == 200
    stack.wait_for(f"SELECT 1 FROM rejected_events WHERE product = '{p}'", lambda rs: len(rs) == 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
    env.update(backend_env, COLUMNS="200")
    command = [sys.executable, "-m", "launch", "rejected", "--data-dir", str(stack.data_dir)]
    grouped = subprocess.run([*command, "--product", p], env=env, capture_output=True, timeout=60)
    assert grouped.returncode == 0, grouped.stderr.decode()
    assert "normalize" in grouped.stdout.decode()
    lines = subprocess.run(
        [*command, "--product", p, "--events", "--stage", "normalize"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert lines.returncode == 0, lines.stderr.decode()
    assert "events.raw[" in lines.stdout.decode()

"""Stopping ``eventpipe dev`` with a backlog in the embedded broker (whose topics die with it):
SIGTERM drains the backlog into ClickHouse before the broker stops; a second SIGTERM stops it at
once and says how many acknowledged events may be lost.

The backlog is made by pausing the worker child (SIGSTOP) while the edge accepts a few thousand
events over HTTP, every one of them answered 2xx.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Stack, Workspace, pause, start_stack
from tests.e2e.test_worker_faults import worker_pid

pytestmark = pytest.mark.fault

BATCHES = 30
BATCH = 100
EXIT_TIMEOUT_S = 120.0


def send_backlog(ws: Workspace) -> list[str]:
    """``BATCHES`` batches of keyed events; every one must be accepted. Returns the event ids."""
    accepted: list[str] = []
    for b in range(BATCHES):
        events = [{"event": "drain.tick", "external_id": f"d-{b}-{i}"} for i in range(BATCH)]
        r = ws.post("/api/v2/events/batch", {"events": events})
        assert r.status_code == 202, r.text
        body = r.json()
        assert (body["accepted"], body["rejected"]) == (BATCH, 0), body
        accepted += [e["uuid"] for e in body["data"]]
    assert len(accepted) == len(set(accepted)) == BATCHES * BATCH
    return accepted


def paused_worker_backlog(stack: Stack) -> tuple[int, str, list[str]]:
    """Pause the worker, then send the backlog: (the worker's pid, the product, the ids)."""
    ws = stack.workspace(rate_limit_per_minute=100_000)
    worker = worker_pid(stack)
    assert worker is not None
    pause(worker)
    try:
        return worker, ws.product, send_backlog(ws)
    except BaseException:
        os.kill(worker, signal.SIGCONT)
        raise


def wait_exit(proc: subprocess.Popen[bytes], timeout_s: float, log: Path) -> int:
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"dev did not exit: {log.read_text()[-3000:]}") from None


def test_sigterm_drains_a_backlog_into_clickhouse_before_the_broker_stops(
    own_stack: Stack, tmp_path: Path
) -> None:
    stack = own_stack
    worker, product, accepted = paused_worker_backlog(stack)
    os.kill(worker, signal.SIGCONT)
    stack.proc.send_signal(signal.SIGTERM)
    code = wait_exit(stack.proc, EXIT_TIMEOUT_S, stack.log_path)
    log = stack.log_path.read_text(errors="replace")
    (tmp_path / "first-run.log").write_text(log)  # the restart below writes the same file
    assert code == 0, log[-3000:]

    # A fresh broker: only what reached ClickHouse before the stop can be found now.
    again = start_stack(stack.data_dir)
    try:
        rows = again.query(
            f"SELECT event_id, external_id FROM events FINAL WHERE product = '{product}'"
        )
    finally:
        again.stop()
    ids = [r["event_id"] for r in rows]
    missing = set(accepted) - set(ids)
    assert not missing, f"{len(missing)} of {len(accepted)} acknowledged events lost"
    assert len(ids) == len(set(ids)) == len(accepted), "an event landed twice, or from nowhere"
    external = [r["external_id"] for r in rows]
    assert len(external) == len(set(external)), "an event landed twice, under two ids"
    assert "drained: every acknowledged event is in ClickHouse" in log, log[-3000:]


def test_second_sigterm_stops_at_once_and_says_what_may_be_lost(own_stack: Stack) -> None:
    stack = own_stack
    worker, _, accepted = paused_worker_backlog(stack)
    try:
        stack.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        while "] draining " not in stack.log_path.read_text(errors="replace"):
            assert stack.proc.poll() is None, stack.log_tail()
            assert time.monotonic() < deadline, f"no progress line: {stack.log_tail()}"
            time.sleep(0.1)
        with pytest.raises(httpx.ConnectError):  # the listener closed before the drain
            httpx.post(f"{stack.url}/api/v2/events", json={"event": "late.one"}, timeout=5)
        stack.proc.send_signal(signal.SIGTERM)
        # The worker is still paused: only a forced stop ends before the drain timeout (120 s).
        code = wait_exit(stack.proc, 60, stack.log_path)
    finally:
        with contextlib.suppress(ProcessLookupError):  # dev continues it as it stops it
            os.kill(worker, signal.SIGCONT)
    log = stack.log_path.read_text(errors="replace")
    assert code == 1, log[-3000:]
    progress = re.findall(r"\] draining .*events_left=(\d+)", log)
    assert progress and int(progress[-1]) == len(accepted), log[-3000:]
    forced = re.search(r"drain forced: stopping; acknowledged events may be lost.*", log)
    assert forced, log[-3000:]
    at_risk = re.search(r"events_at_risk=(\d+)", forced.group(0))
    assert at_risk and int(at_risk.group(1)) == len(accepted), forced.group(0)

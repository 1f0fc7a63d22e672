"""A worker SIGKILLed mid-stream and restarted: no accepted event missing, none doubled, dedupe
still holds across the restart (its table recovered from the changelog), and the restarted
worker's committed offsets reach the end of every raw partition.

Starts its own stack; ``eventpipe dev`` restarts a worker that died. Load comes from a second
process on loopback (``bench.loadgen keyed``), bounded in time and rate.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from bench.loadgen import read_ids, read_run
from tests.conftest import Stack
from tests.load import assert_landed_once, assert_worker_commits_reach_ends, loadgen, wait_until

pytestmark = pytest.mark.fault


def worker_pid(stack: Stack) -> int | None:
    try:
        return int(json.loads((stack.data_dir / "worker.ready").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def test_worker_killed_mid_stream_loses_nothing_and_still_dedupes(
    own_stack: Stack, tmp_path: Path
) -> None:
    stack = own_stack
    ws = stack.workspace(rate_limit_per_minute=100_000)
    keyed = {"event": "order.paid", "external_id": "order-before-kill"}
    first = ws.post("/api/v2/events", keyed)
    assert first.status_code == 202
    stack.wait_for(
        f"SELECT 1 FROM events WHERE event_id = '{first.json()['data']['uuid']}'",
        lambda rs: len(rs) == 1,
    )

    out = tmp_path / "accepted.txt"
    gen = loadgen(stack.url, ws.key, 25, out, "--workers", "2", "--batch", "50", "--rate", "800")
    try:
        wait_until(lambda: len(read_ids(out)[0]) > 3_000, 60, "load to be accepted")
        killed = worker_pid(stack)
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        wait_until(
            lambda: worker_pid(stack) not in (None, killed), 90, "a restarted worker to be ready"
        )
        retry = ws.post("/api/v2/events", keyed)  # a client retry, after the restart
        assert retry.status_code == 202
        assert retry.json()["data"]["uuid"] == first.json()["data"]["uuid"]
        assert gen.wait(90) == 0
    finally:
        if gen.poll() is None:
            gen.kill()

    accepted, unknown, summary = read_run(out)
    assert summary is not None and summary["accepted"] == len(accepted) > 3_000
    assert_landed_once(stack, ws.product, [first.json()["data"]["uuid"], *accepted], unknown)
    # The retry was dropped by the recovered dedupe table, not merely collapsed by ClickHouse.
    notices = stack.wait_for(
        f"SELECT event_id FROM dedupe_notices WHERE product = '{ws.product}'",
        lambda rs: len(rs) >= 1,
        timeout_s=90,
    )
    assert {n["event_id"] for n in notices} == {first.json()["data"]["uuid"]}
    assert_worker_commits_reach_ends(stack)

"""Scaled out: a second ``eventpipe worker`` (and, on a ClickHouse server, a second
``eventpipe sink``) in the groups of a running ``eventpipe dev``, on one broker. SIGKILLed under
paced load, the processes left take their partitions over, every event that got a 2xx is in
ClickHouse exactly once, and the worker left commits up to the end of every raw partition.

Each test starts its own ``dev`` on whichever backend the session uses (killing a worker or a
sink process breaks nothing shared); the joining processes come from ``bench.procs.join_dev``,
the load from ``bench.loadgen keyed`` in a second process.

Two sinks need a ClickHouse server: a second ``eventpipe sink`` cannot open the chDB directory
that ``dev`` owns (chDB allows one owning process per directory, and serves no network
interface). So that test runs with ``EVENTPIPE_TEST_CLICKHOUSE_URL`` (or testcontainers) and is
skipped on chDB.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.loadgen import read_ids, read_run
from bench.procs import Joined, child_env, join_dev, stop
from tests.conftest import Stack, start_stack
from tests.load import assert_landed_once, assert_worker_commits_reach_ends, loadgen, wait_until

pytestmark = pytest.mark.fault

LOAD_S = 30
RATE = "800"
"""Events/s of the paced load: under what one worker and one sink sustain on 2 cores, so the
backlog a kill leaves drains while the load goes on."""


@pytest.fixture
def scaled_stack(backend_env: dict[str, str], tmp_path: Path) -> Iterator[Stack]:
    """A ``dev`` of the test's own, on the session's backend (embedded or given by URL)."""
    s = start_stack(tmp_path / "stack", backend_env)
    try:
        yield s
    finally:
        s.stop()


def _join(stack: Stack, role: str, backend_env: dict[str, str], workdir: Path) -> Joined:
    env = child_env(None, EVENTPIPE_LOG_LEVEL="info", **backend_env)
    return join_dev(stack.data_dir, role, env, workdir)


def _raw_partitions(worker: Joined) -> list[str]:
    return [p for p in worker.partitions() if p.rpartition(":")[0].endswith("events.raw")]


def _kill_under_load(stack: Stack, key: str, out: Path, victims: list[Joined]) -> int:
    """Paced load; once 3,000 events are accepted, SIGKILL ``victims``; the load goes on for the
    rest of its time. Returns how many were accepted at the kill."""
    gen = loadgen(stack.url, key, LOAD_S, out, "--workers", "2", "--batch", "50", "--rate", RATE)
    try:
        wait_until(lambda: len(read_ids(out)[0]) > 3_000, 60, "load to be accepted")
        at_kill = len(read_ids(out)[0])
        for victim in victims:
            os.kill(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait(10)
        assert gen.wait(LOAD_S + 90) == 0
    finally:
        if gen.poll() is None:
            gen.kill()
    return at_kill


def test_worker_killed_the_other_takes_its_partitions_over(
    scaled_stack: Stack, backend_env: dict[str, str], tmp_path: Path
) -> None:
    stack = scaled_stack
    ws = stack.workspace(rate_limit_per_minute=100_000)
    second = _join(stack, "worker", backend_env, tmp_path / "worker2")
    try:
        assert _raw_partitions(second), f"the second worker got no raw partition: {second}"
        out = tmp_path / "accepted.txt"
        at_kill = _kill_under_load(stack, ws.key, out, [second])
    finally:
        stop(second.proc)
    accepted, unknown, summary = read_run(out)
    assert summary is not None and summary["accepted"] == len(accepted)
    # Events were accepted after the kill too: dev's worker had to take the partitions over.
    assert len(accepted) > at_kill + 3_000, (at_kill, len(accepted))
    assert_landed_once(stack, ws.product, accepted, unknown)
    assert_worker_commits_reach_ends(stack)  # dev's worker, after taking the partitions over


def test_dev_with_two_workers_shares_the_raw_partitions_and_stores_every_event(
    backend_env: dict[str, str], tmp_path: Path
) -> None:
    stack = start_stack(tmp_path / "stack", {**backend_env, "EVENTPIPE_DEV_WORKERS": "2"})
    try:
        ready = [stack.data_dir / "worker.ready", stack.data_dir / "worker-2.ready"]
        pids = [json.loads(r.read_text())["pid"] for r in ready]
        assert len(set(pids)) == 2 and all(_alive(p) for p in pids)
        # The second to be ready got its share in the rebalance that made it ready.
        second = json.loads(ready[1].read_text())["partitions"]
        assert [p for p in second if p.rpartition(":")[0].endswith("events.raw")], second
        ws = stack.workspace()
        events = [{"event": "two.workers", "external_id": f"e-{i}"} for i in range(200)]
        r = ws.post("/api/v2/events/batch", {"events": events})
        assert r.status_code == 202, r.text
        assert_landed_once(stack, ws.product, [d["uuid"] for d in r.json()["data"]])
    finally:
        stack.stop()


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def test_worker_and_sink_killed_the_others_take_over(
    scaled_stack: Stack, backend_env: dict[str, str], tmp_path: Path
) -> None:
    if "EVENTPIPE_CLICKHOUSE_URL" not in backend_env:
        pytest.skip(
            "two sinks need a ClickHouse server (EVENTPIPE_TEST_CLICKHOUSE_URL): a second "
            "eventpipe sink cannot open the chDB directory eventpipe dev owns"
        )
    stack = scaled_stack
    ws = stack.workspace(rate_limit_per_minute=100_000)
    worker = _join(stack, "worker", backend_env, tmp_path / "worker2")
    sink = _join(stack, "sink", backend_env, tmp_path / "sink2")
    try:
        assert _raw_partitions(worker), f"the second worker got no raw partition: {worker}"
        out = tmp_path / "accepted.txt"
        # The second sink must hold clean partitions when it dies: wait for its first rows.
        probe = ws.post(
            "/api/v2/events/batch",
            {"events": [{"event": "probe.sent", "external_id": f"probe-{i}"} for i in range(64)]},
        )
        assert probe.status_code == 202
        wait_until(
            lambda: sink.metric("eventpipe_sink_rows_total", {"table": "events"}) > 0,
            60,
            "the second sink to store rows",
        )
        at_kill = _kill_under_load(stack, ws.key, out, [worker, sink])
    finally:
        stop(worker.proc)
        stop(sink.proc)
    accepted, unknown, summary = read_run(out)
    assert summary is not None and summary["accepted"] == len(accepted)
    assert len(accepted) > at_kill + 3_000, (at_kill, len(accepted))
    probes = [d["uuid"] for d in probe.json()["data"]]
    assert_landed_once(stack, ws.product, [*probes, *accepted], unknown)

"""Faults under load, from a second process on loopback: what got a 2xx is in ClickHouse, once.

Each test starts its own stack (it breaks a part of it) and drives it with ``bench.loadgen keyed``
in a subprocess, bounded in time.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bench.loadgen import read_ids, read_run
from eventpipe.embedded import free_port
from tests.conftest import Stack, pause
from tests.load import assert_landed_once, loadgen, wait_until

pytestmark = [
    pytest.mark.fault,
    pytest.mark.stack_env(
        {"EVENTPIPE_KAFKA_DELIVERY_TIMEOUT_MS": "2000", "EVENTPIPE_RETRY_AFTER_SECONDS": "1"}
    ),
]


def test_broker_paused_mid_load_loses_and_doubles_nothing(own_stack: Stack, tmp_path: Path) -> None:
    stack = own_stack
    ws = stack.workspace(rate_limit_per_minute=100_000)
    state = json.loads((stack.data_dir / "dev.json").read_text())
    out = tmp_path / "accepted.txt"
    # 60 s at 1,000 events/s: well under what the agents sustain on 2 cores, so the backlog
    # left by the pause drains while the load goes on.
    gen = loadgen(
        stack.url, ws.key, 60, out, "--workers", "4", "--batch", "100", "--retry", "--rate", "1000"
    )
    try:
        wait_until(lambda: len(read_ids(out)[0]) > 2_000, 60, "load to be accepted")
        pause(state["broker_pid"])
        try:
            time.sleep(5)  # the fault's duration, not a wait for a result
        finally:
            os.kill(state["broker_pid"], signal.SIGCONT)
        assert gen.wait(180) == 0  # 60 s of load, then up to 60 s to settle retries
    finally:
        if gen.poll() is None:
            gen.kill()
    accepted, unknown, summary = read_run(out)
    assert summary is not None
    assert summary["unavailable"] > 0, f"the pause was not felt: {summary}"
    assert summary["accepted"] == len(accepted)
    # Every 503'd batch was retried to a 2xx within the settle time, so no outcome is unknown.
    assert summary["unresolved"] == 0, summary
    assert_landed_once(stack, ws.product, accepted, unknown)


def test_edge_sigterm_under_load_answers_2xx_only_for_what_kafka_has(
    own_stack: Stack, tmp_path: Path
) -> None:
    stack = own_stack
    state = json.loads((stack.data_dir / "dev.json").read_text())
    key = "ep_sigterm_test_key"
    product = "sigterm"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
    env.update(
        EVENTPIPE_KAFKA_BOOTSTRAP=state["kafka_bootstrap"],
        EVENTPIPE_API_KEYS=json.dumps(
            [
                {
                    "sha256": hashlib.sha256(key.encode()).hexdigest(),
                    "product": product,
                    "rate_limit_per_minute": 100_000,
                }
            ]
        ),
    )
    edge = subprocess.Popen(
        [sys.executable, "-m", "launch", "edge", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "edge.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    out = tmp_path / "accepted.txt"
    try:
        wait_until(lambda: _serving(url), 30, "the edge to serve")
        gen = loadgen(url, key, 12, out, "--workers", "8", "--batch", "100", "--rate", "2000")
        wait_until(lambda: len(read_ids(out)[0]) > 1_000, 60, "load to be accepted")
        edge.send_signal(signal.SIGTERM)
        assert edge.wait(30) == 0, (tmp_path / "edge.log").read_text()[-2000:]
        assert gen.wait(60) == 0
    finally:
        for p in (edge,):
            if p.poll() is None:
                p.kill()
    accepted, unknown, summary = read_run(out)
    assert summary is not None and summary["accepted"] == len(accepted)
    assert_landed_once(stack, product, accepted, unknown)


def _serving(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False

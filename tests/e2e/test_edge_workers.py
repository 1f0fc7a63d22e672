"""``eventpipe edge --workers 2``: both processes serve the one port, and a SIGTERM to the parent
stops both cleanly under load, with every 2xx'd event in ClickHouse once.

Against the session stack: the test stops only its own edge, which the stack does not need.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from bench.loadgen import read_ids, read_run
from eventpipe.embedded import free_port
from tests.conftest import Stack, pause
from tests.load import assert_landed_once, loadgen, wait_until

KEY = "ep_edge_workers_test_key"
PRODUCT = "edgeworkers"


def test_two_workers_both_serve_and_sigterm_stops_both_losing_nothing(
    stack: Stack, backend_env: dict[str, str], tmp_path: Path
) -> None:
    state = json.loads((stack.data_dir / "dev.json").read_text())
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
    env.update(backend_env)
    env.update(
        EVENTPIPE_KAFKA_BOOTSTRAP=state["kafka_bootstrap"],
        EVENTPIPE_API_KEYS=json.dumps(
            [
                {
                    "sha256": hashlib.sha256(KEY.encode()).hexdigest(),
                    "product": PRODUCT,
                    "rate_limit_per_minute": 100_000,
                }
            ]
        ),
    )
    log = tmp_path / "edge.log"
    edge = subprocess.Popen(
        [sys.executable, "-m", "launch", "edge", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    out = tmp_path / "accepted.txt"
    children: list[int] = []
    checked: list[str] = []
    try:
        wait_until(lambda: len(_children(edge.pid)) == 2 and _serving(url), 60, "both workers")
        children = _children(edge.pid)
        # Each worker alone: with the other stopped, only it can accept the connection.
        for stopped, serving in (children, children[::-1]):
            pause(stopped)
            try:
                answer = _post_one(url, f"alone-{serving}")
            finally:
                os.kill(stopped, signal.SIGCONT)
            assert answer.status_code == 202, answer.text
            checked.append(answer.json()["data"][0]["uuid"])
        gen = loadgen(url, KEY, 12, out, "--workers", "8", "--batch", "100", "--rate", "2000")
        wait_until(lambda: len(read_ids(out)[0]) > 1_000, 60, "load to be accepted")
        edge.send_signal(signal.SIGTERM)
        assert edge.wait(45) == 0, log.read_text()[-3000:]
        assert gen.wait(60) == 0
    finally:
        if edge.poll() is None:
            edge.kill()
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()], "a worker outlived"
    accepted, unknown, summary = read_run(out)
    assert summary is not None and summary["accepted"] == len(accepted)
    # The loadgen saw the listener close: batches it could not send are unknown, never lost.
    assert_landed_once(stack, PRODUCT, accepted + checked, unknown)


def _post_one(url: str, external_id: str) -> httpx.Response:
    body = {"events": [{"event": "worker.checked", "external_id": external_id}]}
    with httpx.Client(base_url=url, timeout=30) as http:  # a new connection each time
        return http.post(
            "/api/v2/events/batch", json=body, headers={"Authorization": f"Bearer {KEY}"}
        )


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(p) for p in text.split()]


def _serving(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False

"""The edge never answers 2xx for an event Kafka did not acknowledge.

Starts its own stack (it breaks the broker). The embedded broker keeps topics in memory, so it
is paused (SIGSTOP) rather than killed, and continued afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.conftest import Stack, pause

pytestmark = [
    pytest.mark.fault,
    pytest.mark.stack_env(
        {"EVENTPIPE_KAFKA_DELIVERY_TIMEOUT_MS": "2500", "EVENTPIPE_RETRY_AFTER_SECONDS": "3"}
    ),
]


def test_paused_broker_gives_503_and_every_2xx_lands_once(own_stack: Stack) -> None:
    stack = own_stack
    state = json.loads((stack.data_dir / "dev.json").read_text())
    ws = stack.workspace()
    accepted: list[str] = []
    r = ws.post("/api/v2/events", {"event": "before.pause"})
    assert r.status_code == 202, r.text
    accepted.append(r.json()["data"]["uuid"])

    pause(state["broker_pid"])
    try:
        r = ws.post("/api/v2/events", {"event": "during.pause"})
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "3"
        assert r.json()["error"] == "unavailable"
        r = ws.post("/api/v2/events/batch", {"events": [{"event": "during.batch"}] * 3})
        assert r.status_code == 503, r.text
    finally:
        os.kill(state["broker_pid"], signal.SIGCONT)

    deadline = time.monotonic() + 60
    while True:
        r = ws.post("/api/v2/events", {"event": "after.pause", "external_id": "after-1"})
        if r.status_code == 202:
            accepted.append(r.json()["data"]["uuid"])
            break
        assert r.status_code == 503, r.text
        assert time.monotonic() < deadline, "edge never recovered after the broker came back"
        time.sleep(0.2)

    rows = stack.wait_for(
        f"SELECT event_id, canonical_name FROM events WHERE product = '{ws.product}'",
        lambda rs: {x["event_id"] for x in rs} >= set(accepted),
    )
    # Every 2xx is there exactly once; what got a 503 may or may not have been written
    # (it can have reached the broker before the timeout), but never twice.
    ids = [x["event_id"] for x in rows if x["canonical_name"] in ("before_pause", "after_pause")]
    assert sorted(ids) == sorted(accepted)

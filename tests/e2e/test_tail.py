"""``eventpipe tail`` against the running pipeline's broker (the embedded one by default), run as a
user runs it. Either framing is decoded (``test_registry.py`` tails a registry-framed topic)."""

from __future__ import annotations

import json
import select
import subprocess
import time
from datetime import UTC, datetime
from typing import Any

from tests.conftest import Stack, Workspace
from tests.e2e.kafka_read import tail, tail_command, tail_env


def send(ws: Workspace, names: list[str]) -> list[str]:
    events = [
        {"event": n, "subject_type": "user", "subject_id": f"u{i}"} for i, n in enumerate(names)
    ]
    r = ws.post("/api/v2/events/batch", {"events": events})
    assert r.status_code == 202, r.text
    return [e["uuid"] for e in r.json()["data"]]


def next_millisecond() -> str:
    """An ISO time in a millisecond after every record produced so far (timestamps are ms)."""
    start = int(time.time() * 1000)
    while int(time.time() * 1000) <= start:
        time.sleep(0.001)
    return datetime.fromtimestamp((start + 1) / 1000, UTC).isoformat(timespec="milliseconds")


def read_line(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> dict[str, Any]:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    assert ready, f"tail printed nothing in {timeout_s} s"
    return dict(json.loads(proc.stdout.readline()))


def ids(lines: list[dict[str, Any]]) -> list[str]:
    return [line["value"]["event_id"] for line in lines]


def test_tail_prints_a_products_records_as_json(
    stack: Stack, ws: Workspace, backend_env: dict[str, str]
) -> None:
    older = send(ws, [f"thing.done_{i}" for i in range(3)])
    next_millisecond()
    newer = send(ws, ["thing.done_3", "thing.done_4"])
    sent = older + newer
    stack.wait_for(f"SELECT 1 FROM events WHERE product = '{ws.product}'", lambda rs: len(rs) == 5)
    lines = tail(stack, backend_env, "events.clean", "--product", ws.product, "--from", "0")
    assert sorted(ids(lines)) == sorted(sent)
    first = next(line for line in lines if line["value"]["event_id"] == sent[0])
    assert first["record"] == "eventpipe.CleanEvent"
    assert first["value"]["canonical_name"] == "thing_done_0"
    assert first["key"] == sent[0] and first["topic"].endswith("events.clean")
    datetime.fromisoformat(first["timestamp"])
    datetime.fromisoformat(first["value"]["occurred_at"])

    raw = tail(stack, backend_env, "events.raw", "--product", ws.product, "-n", "2")
    assert sorted(ids(raw)) == sorted(newer), "the newest n"
    assert {json.loads(r["value"]["payload"])["event"] for r in raw} == {
        "thing.done_3",
        "thing.done_4",
    }, "a raw event's payload is the JSON the client sent"


def test_tail_n_counts_from_the_real_end_of_a_partition(
    stack: Stack, ws: Workspace, backend_env: dict[str, str]
) -> None:
    """One subject: one partition, and the records of one request in one produce batch, whose
    end the embedded broker reports as its first offset + 1."""
    r = ws.post(
        "/api/v2/events/batch",
        {"events": [{"event": "same.sent", "subject_type": "user", "subject_id": "s"}] * 6},
    )
    assert r.status_code == 202, r.text
    sent = [e["uuid"] for e in r.json()["data"]]
    lines = tail(stack, backend_env, "events.raw", "-n", "2")
    assert ids(lines) == sent[-2:]


def test_tail_from_a_time_skips_older_records_on_a_broker_that_answers_earliest(
    stack: Stack, ws: Workspace, backend_env: dict[str, str]
) -> None:
    """The embedded broker answers offsets-for-times with the earliest offset: only the record
    timestamps can tell the first batch from the second."""
    before = send(ws, ["early.sent"] * 3)  # produced (timestamped) before the 202
    since = next_millisecond()
    after = send(ws, ["late.sent"] * 3)
    lines = tail(stack, backend_env, "events.raw", "--product", ws.product, "--from", since)
    assert sorted(ids(lines)) == sorted(after)
    assert not set(ids(lines)) & set(before)


def test_tail_follow_prints_what_arrives_until_stopped(
    stack: Stack, ws: Workspace, backend_env: dict[str, str]
) -> None:
    started = datetime.now(UTC).isoformat(timespec="milliseconds")
    args = ("events.raw", "--product", ws.product, "--from", started, "--follow")
    proc = subprocess.Popen(
        tail_command(stack, backend_env, *args),
        env=tail_env(backend_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        first = send(ws, ["follow.first"])
        assert read_line(proc)["value"]["event_id"] == first[0]
        # now it is surely past the end it measured: this one comes through --follow
        second = send(ws, ["follow.second"])
        assert read_line(proc)["value"]["event_id"] == second[0]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]

"""Every process serves its Prometheus metrics: the edge (and, in ``eventpipe dev``, the sink) on
the HTTP port, the worker on its own port, and a standalone ``eventpipe sink`` on its own. The
figures move with traffic, and the consumer lags come back to 0 once the pipeline caught up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from eventpipe.embedded import free_port
from launch.dev import DevState
from tests.conftest import Stack, Workspace
from tests.e2e.test_worker_faults import worker_pid

EDGE = {
    "eventpipe_edge_requests_total",
    "eventpipe_edge_request_seconds_bucket",
    "eventpipe_edge_events_total",
    "eventpipe_edge_rate_limited_total",
    "eventpipe_kafka_delivery_seconds_bucket",
    "eventpipe_kafka_producer_queue_messages",
}
SINK = {
    "eventpipe_sink_rows_total",
    "eventpipe_sink_insert_seconds_bucket",
    "eventpipe_sink_batch_records_bucket",
    "eventpipe_sink_consumer_lag_records",
    "eventpipe_sink_seconds_since_last_commit",
    "eventpipe_sink_last_commit_timestamp_seconds",
}
WORKER = {
    "eventpipe_worker_records_total",
    "eventpipe_worker_batch_records_bucket",
    "eventpipe_worker_batch_seconds_bucket",
    "eventpipe_worker_consumer_lag_records",
    "eventpipe_worker_table_keys",
    "eventpipe_kafka_delivery_seconds_bucket",
}


def samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(url, timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def names(found: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> set[str]:
    return {name for name, _ in found}


def total(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and want <= ls)


def wait(check: object, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_the_edge_the_sink_and_the_worker_serve_their_metrics(stack: Stack, ws: Workspace) -> None:
    state = DevState.read(stack.data_dir)
    assert state is not None and state.worker_metrics_url
    worker_url = state.worker_metrics_url
    before = samples(worker_url)
    events = [{"event": "metric.checked", "properties": {"i": i}} for i in range(7)]
    assert ws.post("/api/v2/events/batch", {"events": events}).status_code == 202
    limited = stack.workspace(rate_limit_per_minute=1)
    codes = [limited.post("/api/v2/events", {"event": "a.b"}).status_code for _ in range(2)]
    assert codes == [202, 429]

    def caught_up() -> bool:
        now = samples(worker_url)
        moved = total(now, "eventpipe_worker_records_total", outcome="clean") - total(
            before, "eventpipe_worker_records_total", outcome="clean"
        )
        return moved >= 8 and total(now, "eventpipe_worker_consumer_lag_records") == 0

    wait(caught_up, "the worker to count the events and its lag to be 0")
    worker = samples(worker_url)
    assert names(worker) >= WORKER, WORKER - names(worker)
    assert httpx.get(worker_url.replace("/metrics", "/healthz")).json()["status"] == "ok"

    def sink_caught_up() -> bool:
        edge = samples(f"{stack.url}/metrics")
        rows = total(edge, "eventpipe_sink_rows_total", table="events")
        return rows > 0 and total(edge, "eventpipe_sink_consumer_lag_records") == 0

    wait(sink_caught_up, "the sink to insert rows and its lag to be 0")
    edge = samples(f"{stack.url}/metrics")
    assert names(edge) >= EDGE | SINK, (EDGE | SINK) - names(edge)
    assert total(edge, "eventpipe_edge_rate_limited_total") >= 1
    route = "/api/v2/events/batch"
    assert total(edge, "eventpipe_edge_requests_total", route=route, status="202") >= 1
    assert not any("metric.checked" in str(ls) for _, ls in edge), "no event name as a label"


@pytest.fixture
def standalone_sink(stack: Stack, backend_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """``eventpipe sink`` as its own process on the stack's broker: its own group and chDB."""
    state = DevState.read(stack.data_dir)
    assert state is not None
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
    env.update(backend_env)  # the stack's topic prefix, if any
    env.update(
        EVENTPIPE_KAFKA_BOOTSTRAP=state.kafka_bootstrap,
        EVENTPIPE_BROKER_PROFILE="embedded" if state.broker_pid else "kafka",
        EVENTPIPE_CLICKHOUSE_URL=f"chdb://{tmp_path / 'ch'}",
        EVENTPIPE_SINK_GROUP=f"test-sink-{uuid.uuid4().hex[:8]}",
        EVENTPIPE_SINK_METRICS_PORT=str(port),
        EVENTPIPE_LAG_INTERVAL_S="0.5",
    )
    log = (tmp_path / "sink.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "launch", "sink"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_the_worker_runs_on_uvloop(stack: Stack) -> None:
    """Its event loop turns once per record (Faust's stream), so the loop's own cost counts:
    uvloop took ~10% off the worker's CPU per event. Nothing else in the worker imports uvloop,
    so finding it mapped in the process means the worker installed it."""
    pid = worker_pid(stack)
    assert pid is not None
    assert "uvloop" in Path(f"/proc/{pid}/maps").read_text()


def test_a_standalone_sink_serves_metrics_and_healthz(
    stack: Stack, ws: Workspace, standalone_sink: str
) -> None:
    assert ws.post("/api/v2/events", {"event": "sink.alone"}).status_code == 202

    def up() -> bool:
        try:
            return httpx.get(f"{standalone_sink}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait(up, "the sink's /healthz")
    wait(
        lambda: total(samples(f"{standalone_sink}/metrics"), "eventpipe_sink_rows_total") > 0,
        "the standalone sink to insert rows",
    )
    found = samples(f"{standalone_sink}/metrics")
    assert names(found) >= SINK, SINK - names(found)
    assert not names(found) & {"eventpipe_edge_requests_total"}, "only the sink's own"

"""One pipeline per test session, on whichever backend is at hand.

Backends, in order: explicit URLs (``EVENTPIPE_TEST_KAFKA_BOOTSTRAP`` and
``EVENTPIPE_TEST_CLICKHOUSE_URL``), else testcontainers when a Docker engine answers, else the
embedded Tansu broker and chDB. Either way the stack is ``eventpipe dev`` in a subprocess: tests
talk HTTP to it and read ClickHouse through its ``/admin/query`` route, as a user would.
Each test isolates itself with its own workspace (product + API key), never by restarting.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventpipe.embedded import free_port

STARTUP_TIMEOUT_S = 120.0
ROWS_TIMEOUT_S = 60.0
MARKERS = 32
"""Good events sent after a refused request: enough to cover every raw partition, so once their
rows are in ClickHouse, anything the refused request had published would be there too."""


@dataclass
class Workspace:
    product: str
    key: str
    http: httpx.Client

    def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}", **kw.pop("headers", {})}
        if body is not None and "content" not in kw:
            kw["json"] = body
        return self.http.post(path, headers=headers, **kw)


@dataclass
class Stack:
    url: str
    admin_token: str
    proc: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def workspace(self, rate_limit_per_minute: int | None = None) -> Workspace:
        product = f"t_{uuid.uuid4().hex[:12]}"
        body: dict[str, Any] = {"product": product}
        if rate_limit_per_minute is not None:
            body["rate_limit_per_minute"] = rate_limit_per_minute
        r = self.http.post("/admin/keys", json=body, headers=self._admin)
        assert r.status_code == 201, r.text
        return Workspace(product, r.json()["key"], self.http)

    @property
    def _admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def query(self, sql: str) -> list[dict[str, Any]]:
        r = self.http.post("/admin/query", json={"sql": sql}, headers=self._admin)
        assert r.status_code == 200, r.text
        body = r.json()
        return [dict(zip(body["columns"], row, strict=True)) for row in body["rows"]]

    def wait_for(
        self,
        sql: str,
        until: Callable[[list[dict[str, Any]]], bool],
        timeout_s: float = ROWS_TIMEOUT_S,
    ) -> list[dict[str, Any]]:
        """Poll a query until ``until(rows)`` holds; fail with the last rows at the deadline."""
        deadline = time.monotonic() + timeout_s
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"pipeline exited: {self.log_tail()}"
            rows = self.query(sql)
            if until(rows):
                return rows
            time.sleep(0.2)
        shown = repr(rows)
        if len(shown) > 600:
            shown = shown[:600] + f"... ({len(rows)} rows)"
        raise AssertionError(f"timed out after {timeout_s}s waiting on {sql!r}; last: {shown}")

    def prove_nothing_else_landed(self, ws: Workspace, rows_before: int = 0) -> None:
        """Send ``MARKERS`` good events; once their rows are in, the workspace must hold exactly
        those (plus the ``rows_before`` already seen) and no rejection: whatever was refused
        before never reached Kafka."""
        markers = [{"event": "marker.sent", "properties": {"i": i}} for i in range(MARKERS)]
        r = ws.post("/api/v2/events/batch", {"events": markers})
        assert r.status_code == 202, r.text
        want = rows_before + MARKERS
        sql = f"SELECT count() AS n FROM events WHERE product = '{ws.product}'"
        rows = self.wait_for(sql, lambda rs: rs[0]["n"] >= want)
        assert rows[0]["n"] == want, "something besides the markers was published"
        rejected = self.query(
            f"SELECT stage, field, reason FROM rejected_events WHERE product = '{ws.product}'"
        )
        assert rejected == [], "an invalid event reached Kafka and the agents"

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def pause(pid: int, timeout_s: float = 10.0) -> None:
    """SIGSTOP a process and wait until every thread of it has stopped.

    The stop is asynchronous: a multi-threaded broker can still answer a request for a few
    milliseconds after ``kill`` returns, more on a loaded machine.
    """
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout_s
    while True:
        states = []
        for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
            try:
                states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
            except (OSError, IndexError):
                continue
        if states and all(s in ("T", "t") for s in states):
            return
        assert time.monotonic() < deadline, f"process {pid} did not stop: {states}"
        time.sleep(0.01)


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def backend_env() -> Iterator[dict[str, str]]:
    """Environment that points ``eventpipe dev`` at the chosen backend ({} = embedded)."""
    kafka = os.environ.get("EVENTPIPE_TEST_KAFKA_BOOTSTRAP")
    clickhouse = os.environ.get("EVENTPIPE_TEST_CLICKHOUSE_URL")
    prefix = f"test-{uuid.uuid4().hex[:8]}."
    if kafka or clickhouse:
        env = {
            "EVENTPIPE_TOPIC_PREFIX": prefix,
            "EVENTPIPE_WORKER_ID": f"{prefix}eventpipe",
            "EVENTPIPE_SINK_GROUP": f"{prefix}sink",
        }
        if kafka:
            env["EVENTPIPE_KAFKA_BOOTSTRAP"] = kafka
        if clickhouse:
            env["EVENTPIPE_CLICKHOUSE_URL"] = clickhouse
        yield env
        return
    if os.environ.get("EVENTPIPE_TEST_NO_DOCKER") != "1" and _docker_answers():
        from testcontainers.clickhouse import ClickHouseContainer  # type: ignore[import-untyped]
        from testcontainers.kafka import KafkaContainer  # type: ignore[import-untyped]

        with KafkaContainer() as kafka_c, ClickHouseContainer() as ch_c:
            host = ch_c.get_container_host_ip()
            port = ch_c.get_exposed_port(8123)
            yield {
                "EVENTPIPE_KAFKA_BOOTSTRAP": kafka_c.get_bootstrap_server(),
                "EVENTPIPE_CLICKHOUSE_URL": (
                    f"http://{ch_c.username}:{ch_c.password}@{host}:{port}/{ch_c.dbname}"
                ),
            }
        return
    yield {}


def start_stack(data_dir: Path, env_extra: dict[str, str] | None = None) -> Stack:
    """Start ``eventpipe dev`` in a subprocess and wait until it serves HTTP."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    admin = secrets.token_urlsafe(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
    env.update(
        EVENTPIPE_ADMIN_TOKEN=admin,
        EVENTPIPE_SINK_FLUSH_INTERVAL_S="0.2",
        EVENTPIPE_LOG_LEVEL="info",
        PYTHONUNBUFFERED="1",
    )
    env.update(env_extra or {})
    log_path = data_dir / "stack.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "launch",
            "dev",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    stack = Stack(f"http://127.0.0.1:{port}", admin, proc, data_dir, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"eventpipe dev exited with {proc.returncode}: {stack.log_tail()}")
        try:
            if stack.http.get("/healthz", timeout=1).status_code == 200:
                return stack
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stack.stop()
            raise RuntimeError(f"eventpipe dev not serving after {STARTUP_TIMEOUT_S}s")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def stack(backend_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with ExitStack() as es:
        s = start_stack(tmp_path_factory.mktemp("stack"), backend_env)
        es.callback(s.stop)
        yield s


@pytest.fixture
def own_stack(
    request: pytest.FixtureRequest, backend_env: dict[str, str], tmp_path: Path
) -> Iterator[Stack]:
    """A stack of the test's own, for faults that pause or kill one of its parts.

    Embedded only; extra environment comes from the ``stack_env`` marker."""
    if backend_env:
        pytest.skip("breaks a part of the embedded stack")
    marker = request.node.get_closest_marker("stack_env")
    s = start_stack(tmp_path / "stack", marker.args[0] if marker else None)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def ws(stack: Stack) -> Workspace:
    return stack.workspace()

"""``eventpipe dev``: the whole pipeline on one machine, embedded parts by default.

One process runs the edge (uvicorn) and the sink (a thread), and owns the chDB directory, so
``eventpipe query`` and the tests read ClickHouse through its ``/admin/query`` route, served on
its main port (which must then be loopback, unless ``EVENTPIPE_ADMIN_ALLOW_REMOTE``). The Faust
worker runs as a child process, as it would in production. With ``EVENTPIPE_KAFKA_BOOTSTRAP`` /
``EVENTPIPE_CLICKHOUSE_URL`` set, the same code runs against those and nothing embedded starts.

Shutdown (Ctrl-C or SIGTERM), in this order:

1. stop taking HTTP: the listener closes, in-flight requests finish and get their answer;
2. flush the edge's producer (every 2xx was acknowledged already; this settles the rest);
3. with the embedded broker, drain (``eventpipe.drain``): wait until the worker and the sink have
   processed everything in ``events.raw`` and in the worker's output topics, at most
   ``EVENTPIPE_DRAIN_TIMEOUT_SECONDS``, with a progress line every second. The broker keeps
   topics in memory, so what they have not processed when it stops is lost. With an external
   Kafka (``EVENTPIPE_KAFKA_BOOTSTRAP``) there is no drain: the topics and the groups' committed
   offsets survive, and the next worker and sink resume where these stopped;
4. stop the worker, then the sink (its last batch is inserted and committed, or left
   uncommitted to be read again), then the broker.

A second Ctrl-C or SIGTERM, at any point of this, forces the stop: the drain ends with a log line
of how many acknowledged events may be lost (its last lag figure), and so does a drain that
timed out. ``dev`` then exits with status 1; after a complete drain, 0.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog

from eventpipe import garbage_collection, retry
from eventpipe.broker import BrokerProfile
from eventpipe.catalog import Catalog
from eventpipe.dashboard import Dashboard
from eventpipe.drain import Outcome, drain
from eventpipe.embedded import TansuBroker, die_with_parent, free_port, stop_process
from eventpipe.kafka import ensure_topics
from eventpipe.lag import sink_lag_monitor
from eventpipe.settings import Settings, is_loopback
from launch.processes import build_edge, build_sink
from launch.workers import bind
from producers.admin import admin_routes
from producers.auth import new_key
from producers.query import ReadOnlyQuery
from producers.server import Shutdown, serve
from replay.forget import Forgetter
from sinks.clickhouse import connect, materialize_properties, migrate, redact
from sinks.forget import PersonEraser
from sinks.store import EventStore

log = structlog.get_logger(__name__)

STATE_FILE = "dev.json"
WORKER_READY_TIMEOUT_S = 120.0
SINK_STOP_S = 30.0
FORCED_STOP_S = 5.0
"""How long a forced stop gives the worker to exit on SIGTERM before it is killed."""
DEV_PRODUCT = "dev"


@dataclass
class DevState:
    """What a running ``eventpipe dev`` tells other commands (kept in the data dir, mode 0600)."""

    url: str
    api_key: str
    admin_token: str
    pid: int
    broker_pid: int | None
    worker_pid: int | None
    kafka_bootstrap: str
    worker_metrics_url: str | None = None
    broker_profile: str = ""
    topic_prefix: str = ""
    worker_id: str = ""
    sink_group: str = ""

    def joining_env(self) -> dict[str, str]:
        """What an ``eventpipe worker`` or ``eventpipe sink`` started beside this ``dev`` needs
        to join its groups (scaling out on the topics' partitions): the broker, its profile
        (the embedded broker's workarounds) and the names. Anything else (security, a ClickHouse
        URL) comes from the caller's own environment, as it did for ``dev``. A second sink needs
        a ClickHouse server: ``dev``'s chDB directory has one owning process, ``dev``."""
        return {
            "EVENTPIPE_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "EVENTPIPE_BROKER_PROFILE": self.broker_profile,
            "EVENTPIPE_TOPIC_PREFIX": self.topic_prefix,
            "EVENTPIPE_WORKER_ID": self.worker_id,
            "EVENTPIPE_SINK_GROUP": self.sink_group,
        }

    @staticmethod
    def path(data_dir: Path) -> Path:
        return data_dir / STATE_FILE

    @classmethod
    def read(cls, data_dir: Path) -> DevState | None:
        try:
            return cls(**json.loads(cls.path(data_dir).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write(self, data_dir: Path) -> None:
        p = self.path(data_dir)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f)


def _secrets(settings: Settings) -> tuple[str, str]:
    """The dev API key and admin token: from settings, else kept from the last run, else new."""
    kept: dict[str, Any] = {}
    keep = settings.data_dir / "secrets.json"
    if keep.exists():
        kept = json.loads(keep.read_text())
    api_key = settings.dev_api_key or kept.get("api_key") or new_key()
    admin = settings.admin_token or kept.get("admin_token") or secrets.token_urlsafe(24)
    fd = os.open(keep, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"api_key": api_key, "admin_token": admin}, f)
    return api_key, admin


def _ready_file(settings: Settings, index: int = 0) -> Path:
    """``worker.ready`` for the first worker child, ``worker-<n>.ready`` for the n-th."""
    name = "worker.ready" if index == 0 else f"worker-{index + 1}.ready"
    return settings.data_dir.resolve() / name


def _start_worker(settings: Settings, ready_file: Path) -> subprocess.Popen[bytes]:
    # A SIGKILLed worker leaves its ready file behind: remove it so only the new one counts.
    ready_file.unlink(missing_ok=True)
    env = dict(os.environ)
    env.update(
        EVENTPIPE_WORKER_READY_FILE=str(ready_file),
        EVENTPIPE_KAFKA_BOOTSTRAP=settings.bootstrap,
        EVENTPIPE_BROKER_PROFILE=str(settings.profile),
        EVENTPIPE_KAFKA_SESSION_TIMEOUT_S=str(settings.session_timeout_s),
        EVENTPIPE_KAFKA_HEARTBEAT_INTERVAL_S=str(settings.heartbeat_interval_s),
        EVENTPIPE_DATA_DIR=str(settings.data_dir.resolve()),
        EVENTPIPE_TOPIC_PREFIX=settings.topic_prefix,
        EVENTPIPE_TOPIC_PARTITIONS=str(settings.topic_partitions),
        EVENTPIPE_TOPIC_REPLICATION=str(settings.topic_replication),
        EVENTPIPE_KAFKA_SECURITY_PROTOCOL=settings.kafka_security_protocol,
        EVENTPIPE_METRICS_HOST=settings.metrics_host,
        EVENTPIPE_WORKER_METRICS_PORT=str(settings.worker_metrics_port),
    )
    if settings.topic_min_insync_replicas is not None:
        env["EVENTPIPE_TOPIC_MIN_INSYNC_REPLICAS"] = str(settings.topic_min_insync_replicas)
    for name in ("sasl_mechanism", "sasl_username", "ssl_ca", "ssl_cert", "ssl_key"):
        if getattr(settings, f"kafka_{name}") is None:  # dev's own broker turned them off
            env.pop(f"EVENTPIPE_KAFKA_{name.upper()}", None)
    return subprocess.Popen(
        [sys.executable, "-m", "launch", "worker"],
        env=env,
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent(),
    )


def run_dev(settings: Settings) -> None:
    if not is_loopback(settings.host) and not settings.admin_allow_remote:
        raise SystemExit(
            f"eventpipe dev serves the /admin routes on its main port, and {settings.host!r} is "
            "not a loopback address: set EVENTPIPE_ADMIN_ALLOW_REMOTE=1 to serve them there"
        )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    api_key, admin_token = _secrets(settings)
    with ExitStack() as stack:
        # The HTTP listener is bound first, so no port picked after it (the embedded broker's)
        # can be the same one: a port only picked, not held, can be handed out twice.
        listener = stack.enter_context(bind(settings.host, settings.port))
        port = int(listener.getsockname()[1])
        broker: TansuBroker | None = None
        if settings.embedded_kafka:
            broker = TansuBroker()
            broker.start()
            stack.callback(broker.stop)
            # The embedded profile turns on the Tansu workarounds (eventpipe.broker). One broker,
            # in plaintext on loopback: no replicas, no security block.
            settings = settings.model_copy(
                update={
                    "kafka_bootstrap": broker.bootstrap,
                    "broker_profile": settings.broker_profile or BrokerProfile.EMBEDDED,
                    "topic_replication": 1,
                    "topic_min_insync_replicas": 1,
                    "kafka_security_protocol": "PLAINTEXT",
                    "kafka_sasl_mechanism": None,
                    "kafka_sasl_username": None,
                    "kafka_ssl_ca": None,
                    "kafka_ssl_cert": None,
                    "kafka_ssl_key": None,
                }
            )
        settings = settings.model_copy(update={"admin_token": admin_token, "port": port})
        worker_settings = _with_worker_metrics(settings)
        settings = settings.model_copy(
            update={
                "dashboard_metrics_urls": [
                    *settings.dashboard_metrics_urls,
                    *(
                        f"http://{s.metrics_host}:{s.worker_metrics_port}/metrics"
                        for s in worker_settings
                    ),
                ]
            }
        )
        ensure_topics(settings)

        # The workers start before ClickHouse is opened and migrated (they never write it): their
        # start (imports, the suppressions read, the first rebalance) overlaps with that.
        workers = [WorkerSupervisor(s, _ready_file(s, i)) for i, s in enumerate(worker_settings)]
        for worker in workers:
            worker.start()
            stack.callback(worker.stop)
        # The worker's consumer group, which the drain reads, is its Faust app id. Imported here
        # (at start, so a stop cannot fail on it), not at the top: ``eventpipe query`` imports
        # this module and has no use for Faust.
        from streams.app import app_id

        worker_group = app_id(settings)

        writer = connect(settings.clickhouse_dsn, ca=settings.clickhouse_ca)
        applied = migrate(writer)
        materialize_properties(writer, settings.materialized_properties)
        if applied:
            log.info("clickhouse migrations applied", migrations=applied)
        # A separate client for reads: chDB keeps per-query settings on the client's session.
        ca = settings.clickhouse_ca
        query = ReadOnlyQuery(connect(settings.clickhouse_dsn, ca=ca), settings)

        stop_sink = threading.Event()
        sink = build_sink(settings, writer)
        sink_thread = threading.Thread(target=sink.run, args=(stop_sink,), name="sink")
        sink_thread.start()
        stack.callback(sink_thread.join, SINK_STOP_S)
        stack.callback(stop_sink.set)
        stack.callback(sink_lag_monitor(settings).start().close)

        # The catalog writes curated entries: its own client, a writer, on the directory we own.
        catalog = Catalog.from_settings(connect(settings.clickhouse_dsn, ca=ca), settings)
        store = EventStore(connect(settings.clickhouse_dsn, ca=ca))  # replay's: /admin/store
        # The dashboard reads on a read-only client of its own (chDB: per-client session).
        dashboard = Dashboard(connect(settings.clickhouse_dsn, readonly=True, ca=ca))
        # Forgetting writes: a client of its own on the directory we own (replay.forget).
        forgetter = Forgetter(
            settings, PersonEraser(connect(settings.clickhouse_dsn, ca=ca)), worker_group
        )
        stack.callback(forgetter.close)
        edge = build_edge(
            settings,
            admin=lambda keys: admin_routes(settings, keys, query, forgetter),
            catalog=catalog,
            store=store,
            dashboard=dashboard,
        )
        stack.callback(edge.close)
        edge.keys.add(api_key, DEV_PRODUCT, "api")
        publisher, app = edge.publisher, edge.app
        # Served once the workers are ready: the sink and the edge were built meanwhile.
        for worker in workers:
            worker.wait_ready(WORKER_READY_TIMEOUT_S)

        url = f"http://{settings.host}:{port}"
        DevState(
            url=url,
            api_key=api_key,
            admin_token=admin_token,
            pid=os.getpid(),
            broker_pid=broker.pid if broker else None,
            worker_pid=workers[0].pid,
            kafka_bootstrap=settings.bootstrap,
            worker_metrics_url=settings.dashboard_metrics_urls[-len(workers)],
            broker_profile=str(settings.profile),
            topic_prefix=settings.topic_prefix,
            worker_id=settings.worker_id,
            sink_group=settings.sink_group,
        ).write(settings.data_dir)
        stack.callback(DevState.path(settings.data_dir).unlink, missing_ok=True)
        print(
            f"eventpipe dev: API on {url}  (POST {url}/api/v2/events)\n"
            f"  API key:      {api_key}   (product '{DEV_PRODUCT}', source 'api')\n"
            f"  admin token:  {admin_token}\n"
            f"  kafka:        {settings.bootstrap}{' (embedded Tansu)' if broker else ''}\n"
            f"  clickhouse:   {redact(settings.clickhouse_dsn)}\n"
            f'  query:        eventpipe query "SELECT count() FROM events"\n'
            f"  dashboard:    {url}/dashboard#key={api_key}\n"
            f"  metrics:      {url}/metrics (edge and sink), "
            f"{', '.join(settings.dashboard_metrics_urls[-len(workers) :])} "
            f"({len(workers)} worker{'s' if len(workers) > 1 else ''})\n"
            "  Ctrl-C stops everything (after draining what the edge acknowledged; twice: now).",
            flush=True,
        )
        garbage_collection.settle()
        shutdown = Shutdown()
        # Installed until the end: a second signal must reach the drain and the stops below
        # (the default SIGTERM would end the process with the broker's topics unprocessed).
        with shutdown.installed():
            serve(app, settings.host, port, shutdown, sock=listener)
            log.info("shutting down: HTTP stopped", forced=shutdown.forced.is_set())
            publisher.close()
            drained = _drain(settings, shutdown, worker_group, embedded=broker is not None)
            grace = None if drained else FORCED_STOP_S
            for worker in workers:
                worker.stop(grace)
            stop_sink.set()
            sink_thread.join(SINK_STOP_S)
            # The broker stops last, as the stack unwinds: after the edge, the forgetter and the
            # lag monitor closed their clients (Tansu does not exit on SIGTERM while a client is
            # connected, so it cost a 5 s wait and a SIGKILL at every stop).
    if not drained:
        raise SystemExit(1)


def _with_worker_metrics(settings: Settings) -> list[Settings]:
    """The settings of each worker child (``EVENTPIPE_DEV_WORKERS`` of them): each its own
    metrics port, a free one unless the first's is configured (several ``dev``s, as in the
    tests, run side by side)."""
    out = []
    for i in range(settings.dev_workers):
        port = settings.worker_metrics_port
        if i > 0 or "worker_metrics_port" not in settings.model_fields_set:
            port = free_port(settings.metrics_host)
        out.append(settings.model_copy(update={"worker_metrics_port": port}))
    return out


def _drain(settings: Settings, shutdown: Shutdown, worker_group: str, *, embedded: bool) -> bool:
    """Drain the embedded broker (see ``eventpipe.drain``); True if nothing is left in it."""
    if not embedded:
        log.info("external Kafka: no drain; the worker and the sink resume from their commits")
        return True
    result = drain(
        settings,
        shutdown.forced,
        worker_group=worker_group,
        timeout_s=settings.drain_timeout_seconds,
    )
    return result.outcome is Outcome.DRAINED


class WorkerSupervisor:
    """Keeps the Faust worker child running: a crashed worker is logged and restarted.

    Faust commits offsets only for processed events, so a restart resumes where it stopped.
    """

    def __init__(self, settings: Settings, ready_file: Path) -> None:
        self._settings = settings
        self._ready_file = ready_file
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        self._proc = _start_worker(self._settings, self._ready_file)
        self._thread.start()

    def _watch(self) -> None:
        waits = retry.delays(first_s=1.0, max_s=30.0)
        while not self._stopping.is_set():
            assert self._proc is not None
            code = self._proc.poll()
            if code is None:
                self._stopping.wait(0.5)
                continue
            if self._stopping.is_set():
                return
            wait = next(waits)
            log.error("worker exited; restarting", returncode=code, restart_in_s=round(wait, 2))
            if self._stopping.wait(wait):
                return
            self._proc = _start_worker(self._settings, self._ready_file)

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until the worker has its partitions and recovered tables before serving HTTP.

        Faust recovering tables while records wait is the riskiest moment of a worker's life
        (see ``streams/recovery.py``); not taking traffic before it keeps a fresh ``dev`` out
        of it. A worker that is not ready in time is logged, and ``dev`` serves anyway.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if json.loads(self._ready_file.read_text()).get("pid") == self.pid:
                    log.info("worker ready", pid=self.pid)
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        log.warning("worker not ready; serving anyway", waited_s=timeout_s)

    def stop(self, timeout_s: float | None = None) -> None:
        """SIGTERM the worker (Faust commits on the way out); SIGKILL after ``timeout_s``."""
        self._stopping.set()
        if self._proc is not None:
            if timeout_s is None:
                stop_process(self._proc)
            else:
                stop_process(self._proc, timeout_s)

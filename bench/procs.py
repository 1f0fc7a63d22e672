"""Processes the stages start and watch: children, the embedded broker, /proc readings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from eventpipe.broker import BrokerProfile
from eventpipe.embedded import TansuBroker, die_with_parent, free_port, stop_process
from eventpipe.kafka import ensure_topics
from eventpipe.settings import Settings

_TICK = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parent.parent
"""The checkout: children run ``-m bench.*`` from any working directory."""


def settings_for(bootstrap: str, prefix: str, **extra: Any) -> Settings:
    return Settings(
        kafka_bootstrap=bootstrap,
        topic_prefix=prefix,
        broker_profile=BrokerProfile.EMBEDDED,
        worker_id=f"{prefix}eventpipe",
        sink_group=f"{prefix}sink",
        **extra,
    )


def child_env(settings: Settings | None = None, **extra: str) -> dict[str, str]:
    """This environment minus any ``EVENTPIPE_*``, plus the given settings' essentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
    path = [str(REPO), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env.update(
        PYTHONUNBUFFERED="1", EVENTPIPE_LOG_LEVEL="warning", PYTHONPATH=os.pathsep.join(path)
    )
    if settings is not None:
        env.update(
            EVENTPIPE_KAFKA_BOOTSTRAP=settings.bootstrap,
            EVENTPIPE_TOPIC_PREFIX=settings.topic_prefix,
            EVENTPIPE_BROKER_PROFILE=str(settings.profile),
            EVENTPIPE_WORKER_ID=settings.worker_id,
            EVENTPIPE_SINK_GROUP=settings.sink_group,
        )
    env.update(extra)
    return env


@contextmanager
def broker(prefix: str) -> Iterator[tuple[Settings, TansuBroker]]:
    """A fresh embedded Tansu broker with the pipeline's topics; stopped on exit."""
    b = TansuBroker()
    b.start()
    try:
        settings = settings_for(b.bootstrap, prefix)
        ensure_topics(settings)
        yield settings, b
    finally:
        b.stop()


def spawn(
    args: list[str], env: dict[str, str], log: Path, python: Path | None = None
) -> subprocess.Popen[bytes]:
    """A child Python process (``args`` after the interpreter), output to ``log``; ``python``
    is another interpreter than this one (the peer's venv, ``bench.peer_venv``)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(python) if python else sys.executable, *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(),
        )


def run_json(args: list[str], env: dict[str, str], log: Path, timeout_s: float) -> dict[str, Any]:
    """Run a child that prints one JSON object as its last stdout line; return it."""
    with log.open("ab") as err:
        done = subprocess.run(
            [sys.executable, *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            timeout=timeout_s,
            check=False,
            preexec_fn=die_with_parent(),
        )
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{args[:3]} exited {done.returncode}; see {log}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    stop_process(proc, timeout_s)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def process_tree_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of ``pid`` and each live descendant, by ``"<pid> <command>"``: where a stack of
    processes (``eventpipe dev``: edge and sink, its worker, Tansu) spends its CPU."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rpartition(")")[2].split()[1]
                )
            except (OSError, ValueError):
                continue  # exited meanwhile
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        tree += frontier
    out = {}
    for p in tree:
        try:
            argv = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
            out[f"{p} {_command(argv)}"] = cpu_seconds(p)
        except OSError:
            continue
    return out


def _command(argv: list[bytes]) -> str:
    """``launch worker`` for ``python -m launch worker ...``, else the program's file name."""
    words = [a.decode(errors="replace") for a in argv if a]
    if "-m" in words and len(words) > words.index("-m") + 2:
        i = words.index("-m")
        return f"{words[i + 1]} {words[i + 2]}"
    return Path(words[0]).name if words else "?"


def memory_mb(pid: int) -> dict[str, float]:
    """Current and peak resident set size, MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out["rss_mb" if name == "VmRSS" else "peak_rss_mb"] = int(value.split()[0]) / 1024
    return out


def wait_until(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


@dataclass
class Joined:
    """An ``eventpipe worker`` or ``eventpipe sink`` started beside a running ``eventpipe dev``,
    in its groups (``launch.dev.DevState.joining_env``)."""

    role: str
    proc: subprocess.Popen[bytes]
    metrics_url: str
    ready_file: Path | None

    def partitions(self) -> list[str]:
        """The worker's partitions when it was first ready (``topic:partition``)."""
        if self.ready_file is None:
            return []
        try:
            state = json.loads(self.ready_file.read_text())
        except (OSError, ValueError):
            return []
        if state.get("pid") != self.proc.pid:
            return []
        return list(state["partitions"])

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """One sample of its ``/metrics`` (0 when absent or not served yet)."""
        try:
            text = httpx.get(self.metrics_url, timeout=2).text
        except httpx.TransportError:
            return 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in (labels or {}).items()
                ):
                    return float(sample.value)
        return 0.0


def join_dev(
    data_dir: Path, role: str, env: dict[str, str], workdir: Path, timeout_s: float = 120.0
) -> Joined:
    """Start ``eventpipe <role>`` (worker or sink) in the groups of the ``eventpipe dev`` whose
    data dir is ``data_dir``; ``env`` is the caller's (a ClickHouse URL, security). A worker is
    returned once it is ready (its partitions assigned and tables recovered), a sink once it
    serves its metrics."""
    from launch.dev import DevState  # the bench's children import launch; keep this one lazy

    state = DevState.read(data_dir)
    if state is None:
        raise RuntimeError(f"no eventpipe dev runs with data dir {data_dir}")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    child = {**env, **state.joining_env(), "EVENTPIPE_DATA_DIR": str(workdir)}
    ready_file: Path | None = None
    if role == "worker":
        ready_file = workdir / "worker.ready"
        child.update(EVENTPIPE_WORKER_METRICS_PORT=str(port))
        child["EVENTPIPE_WORKER_READY_FILE"] = str(ready_file)
    else:
        child.update(EVENTPIPE_SINK_METRICS_PORT=str(port))
    proc = spawn(["-m", "launch", role], child, workdir / f"{role}.log")
    joined = Joined(role, proc, f"http://127.0.0.1:{port}/metrics", ready_file)

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"eventpipe {role} exited; see {workdir / f'{role}.log'}")
        if role == "worker":
            return bool(joined.partitions())
        try:
            return httpx.get(joined.metrics_url, timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(up, timeout_s, f"the joining {role} to be ready", interval_s=0.1)
    except BaseException:
        stop(proc)
        raise
    return joined

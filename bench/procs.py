"""Processes the stages start and watch: children, the embedded broker, /proc readings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eventpipe.broker import BrokerProfile
from eventpipe.embedded import TansuBroker, die_with_parent, stop_process
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


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A child Python process (``args`` after the interpreter), output to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, *args],
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

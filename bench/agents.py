"""Agents stage: ``eventpipe worker`` (normalize + dedupe -> identity linking) vs bare Faust.

``events.raw`` is filled with N raw records first (unique external ids, so every one is looked
up in the dedupe table and forwarded; one in ten links an identity), then one worker process
starts. Its rate is N-1 over the time between the first and the last record arriving on
``events.clean``, so start-up and the consumer-group join (~2.4 s on Tansu) are excluded. The
ceiling is ``bench.bare_faust`` on an identical, fresh broker, timed the same way (first to
N-th event). On Tansu a few records at a partition's end can stay unread until more arrive (its
end-offset bug); both measurements then stop after a 3 s stall and report how many were stuck.
Both start on fresh brokers with empty changelogs: no table recovery is involved.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.data import raw_record
from bench.kafka_io import STALL_S, TAIL_SHARE, Watcher, fill
from bench.procs import broker, child_env, cpu_seconds, spawn, stop, wait_until
from bench.report import StageResult
from eventpipe.codec import RAW_EVENT
from eventpipe.settings import Settings
from eventpipe.topics import TopicNames

TIMEOUT_S = 240.0


def _prefill(settings: Settings, events: int) -> None:
    now = int(time.time() * 1000)
    fill(settings, TopicNames.from_settings(settings).raw, RAW_EVENT,
         (raw_record(i, now) for i in range(events)))  # fmt: skip


def measure_worker(workdir: Path, events: int, say: Callable[[str], None]) -> dict[str, Any]:
    with broker("bench-agents.") as (settings, _):
        say(f"agents: filling events.raw with {events} raw events")
        _prefill(settings, events)
        names = TopicNames.from_settings(settings)
        watcher = Watcher(settings.bootstrap, names.clean, settings.topic_partitions)
        say("agents: eventpipe worker running")
        worker = spawn(["-m", "launch", "worker"], child_env(settings), workdir / "worker.log")
        started = time.perf_counter()
        cpu: list[float] = []
        try:
            watcher.wait_for(
                events,
                TIMEOUT_S,
                on_first=lambda: cpu.append(cpu_seconds(worker.pid)),
                alive=lambda: worker.poll() is None,
            )
            cpu.append(cpu_seconds(worker.pid))
        finally:
            stop(worker)
            watcher.close()
        assert watcher.first is not None and watcher.last is not None
        elapsed = watcher.last - watcher.first
        return {
            "events": events,
            "arrived": watcher.count,
            "elapsed_s": elapsed,
            "events_per_s": (watcher.count - 1) / elapsed,
            "stuck_at_partition_end": events - watcher.count,
            "start_to_first_clean_s": watcher.first - started,
            "worker_cpu_share": (cpu[1] - cpu[0]) / elapsed,
        }


def measure_bare(workdir: Path, events: int, say: Callable[[str], None]) -> dict[str, Any]:
    with broker("bench-bare.") as (settings, _):
        say(f"agents ceiling: filling events.raw with {events} raw events")
        _prefill(settings, events)
        out = workdir / "bare_faust.json"
        out.unlink(missing_ok=True)
        say("agents ceiling: bare Faust agent running")
        args = ["-m", "bench.bare_faust", "--bootstrap", settings.bootstrap]
        args += ["--prefix", settings.topic_prefix, "--events", str(events), "--out", str(out)]
        proc = spawn(args, child_env(), workdir / "bare_faust.log")
        seen: list[tuple[float, int]] = []

        def done() -> bool:
            if proc.poll() is not None:
                return True
            if not out.exists():
                return False
            n = int(json.loads(out.read_text())["arrived"])
            if not seen or seen[-1][1] != n:
                seen.append((time.monotonic(), n))
            stalled = time.monotonic() - seen[-1][0] > STALL_S and n >= TAIL_SHARE * events
            return n >= events or stalled

        try:
            wait_until(done, TIMEOUT_S, "bare Faust", interval_s=0.2)
        finally:
            stop(proc)
        if not out.exists():
            raise RuntimeError(f"bare Faust exited {proc.returncode}; see {workdir}")
        result: dict[str, Any] = json.loads(out.read_text())
        result["stuck_at_partition_end"] = events - result["arrived"]
        return result


def run(
    workdir: Path, events: int, say: Callable[[str], None]
) -> tuple[list[StageResult], dict[str, Any]]:
    worker = measure_worker(workdir, events, say)
    bare = measure_bare(workdir, events, say)
    result = StageResult(
        "agents: normalize+dedupe+identity (1 worker)",
        worker["events_per_s"],
        "events/s",
        ceiling=bare["events_per_s"],
        ceiling_name="bare Faust agent",
        min_ratio=0.75,
        details={"worker": worker, "bare_faust": bare},
    )
    return [result], {}

"""Agents stage: ``eventpipe worker`` (normalize + dedupe -> identity linking) vs bare Faust,
and vs the same job written with quixstreams (GitHub issue 19).

``events.raw`` is filled with N raw records first (unique external ids, so every one is looked
up in the dedupe table and forwarded; one in ten links an identity), then one worker process
starts. Its rate is N-1 over the time between the first and the last record arriving on
``events.clean``, so start-up and the consumer-group join (~2.4 s on Tansu) are excluded. The
ceiling is ``bench.bare_faust`` on an identical, fresh broker, timed the same way (first to
N-th event). The peer is ``bench.peer_quix`` (decode, normalize, dedupe in quixstreams' keyed
RocksDB state with its changelog, produce the CleanEvent to ``events.clean``), run with its own
venv's interpreter (``bench.peer_venv``: quixstreams cannot share eventpipe's dependencies) on
a third fresh broker and timed as bare Faust is; afterwards its ``events.clean`` is counted, to
show it produced every record. On Tansu a few records at a partition's end can stay unread
until more arrive (its end-offset bug); every measurement then stops after a 3 s stall and
reports how many were stuck. All start on fresh brokers with empty changelogs: no table
recovery is involved.

Two rows: the worker against bare Faust (the library's own ceiling), and the worker against the
quixstreams peer (the figure a team would otherwise get). Each round measures the worker, then
bare Faust, then the peer. A peer that cannot be installed or run leaves its row's ceiling
empty with the reason in ``details["skipped"]``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from bench import peer_venv
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


def _poll(
    proc: subprocess.Popen[bytes], out: Path, events: int, what: str, workdir: Path
) -> dict[str, Any]:
    """Wait for a child that writes its count to ``out`` (``bench.bare_faust``,
    ``bench.peer_quix``) to reach ``events`` or stall at the end (Tansu); stop it; its result."""
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
        wait_until(done, TIMEOUT_S, what, interval_s=0.2)
    finally:
        stop(proc)
    if not out.exists():
        raise RuntimeError(f"{what} exited {proc.returncode}; see {workdir}")
    result: dict[str, Any] = json.loads(out.read_text())
    result["stuck_at_partition_end"] = events - result["arrived"]
    return result


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
        return _poll(proc, out, events, "bare Faust", workdir)


def measure_peer(
    workdir: Path, events: int, say: Callable[[str], None], python: Path
) -> dict[str, Any]:
    with broker("bench-peer.") as (settings, _):
        say(f"agents peer: filling events.raw with {events} raw events")
        _prefill(settings, events)
        names = TopicNames.from_settings(settings)
        out = workdir / "peer_quix.json"
        out.unlink(missing_ok=True)
        state_dir = workdir / "peer-state"
        shutil.rmtree(state_dir, ignore_errors=True)
        args = ["-m", "bench.peer_quix", "--bootstrap", settings.bootstrap]
        args += ["--raw", names.raw, "--clean", names.clean]
        args += ["--group", f"{settings.topic_prefix}quix", "--state-dir", str(state_dir)]
        args += ["--events", str(events), "--out", str(out)]
        args += ["--window-ms", str(settings.dedupe_window_seconds * 1000)]
        args += ["--session-timeout-ms", str(int(settings.session_timeout_s * 1000))]
        args += ["--heartbeat-ms", str(int(settings.heartbeat_interval_s * 1000))]
        fetch_wait = settings.workarounds.fetch_wait_ms
        if fetch_wait is not None:
            args += ["--fetch-wait-ms", str(fetch_wait)]
        say(f"agents peer: quixstreams {peer_venv.QUIXSTREAMS} running")
        # -W: quixstreams' dependencies warn on import (authlib); the log keeps real errors.
        proc = spawn(["-W", "ignore", *args], child_env(), workdir / "peer_quix.log", python)
        result = _poll(proc, out, events, "quixstreams peer", workdir)
        say("agents peer: counting its events.clean and its changelog")
        result["clean_records_out"] = _count(settings, names.clean, events)
        result["changelog_topics"] = _changelogs(settings.bootstrap)
        result["changelog_records"] = sum(
            _count(settings, t, events) for t in result["changelog_topics"]
        )
        return result


def _count(settings: Settings, topic: str, expected: int) -> int:
    """Records in ``topic`` (all partitions), read until ``expected`` or a stall (Tansu)."""
    watcher = Watcher(settings.bootstrap, topic, settings.topic_partitions)
    try:
        watcher.wait_for(expected, 60.0, on_first=lambda: None, alive=lambda: True)
    except TimeoutError:
        pass  # fewer than TAIL_SHARE of them: the count says how many
    finally:
        watcher.close()
    return watcher.count


def _changelogs(bootstrap: str) -> list[str]:
    """The changelog topics quixstreams created for its state (``changelog__<group>--...``)."""
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    return sorted(t for t in topics if t.startswith("changelog__"))


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
    peer: dict[str, Any]
    try:
        python = peer_venv.python(say, workdir / "peer_venv.log")
        peer = measure_peer(workdir, events, say, python)
    except (RuntimeError, TimeoutError) as exc:
        peer = {"skipped": f"quixstreams peer not measured: {exc}"}
    vs_peer = StageResult(
        "agents vs quixstreams peer (1 process)",
        worker["events_per_s"],
        "events/s",
        ceiling=peer.get("events_per_s"),
        ceiling_name=f"quixstreams {peer_venv.QUIXSTREAMS}",
        min_ratio=0.75,
        details={"worker": worker, "quixstreams": peer, **_skipped(peer)},
    )
    return [result, vs_peer], {}


def _skipped(peer: dict[str, Any]) -> dict[str, Any]:
    return {"skipped": peer["skipped"]} if "skipped" in peer else {}

"""Replay stage: ``eventpipe replay`` (``replay.run``) against the worker's live rate.

``events.raw`` is filled with N raw records (the agents stage's: unique external ids, one in
ten linking an identity). ``bench.replay_child`` replays them twice, written into an empty
ClickHouse and as a dry run over stored rows (see there). The comparison is the live worker
(``bench.agents.measure_worker``) on the same N records on a fresh broker: how much faster or
slower a replay gets through a range than the worker got through it live.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.agents import measure_worker
from bench.data import OCCURRED_AT, raw_record
from bench.kafka_io import fill
from bench.procs import broker, child_env, run_json
from bench.report import StageResult
from eventpipe.codec import RAW_EVENT
from eventpipe.topics import TopicNames

TIMEOUT_S = 600.0


def measure_replay(workdir: Path, events: int, say: Callable[[str], None]) -> dict[str, Any]:
    with broker("bench-replay.") as (settings, _):
        say(f"replay: filling events.raw with {events} raw events")
        now = int(time.time() * 1000)
        raw = TopicNames.from_settings(settings).raw
        fill(settings, raw, RAW_EVENT, (raw_record(i, now) for i in range(events)))
        say("replay: replaying them (written, then a dry run over the stored rows)")
        chdb = workdir / "replay-clickhouse"
        args = ["-m", "bench.replay_child", "--bootstrap", settings.bootstrap]
        args += ["--prefix", settings.topic_prefix, "--events", str(events)]
        args += ["--received-at", str(now), "--dir", str(chdb), "--occurred-at", OCCURRED_AT]
        return run_json(args, child_env(), workdir / "replay.log", TIMEOUT_S)


def run(
    workdir: Path, events: int, say: Callable[[str], None]
) -> tuple[list[StageResult], dict[str, Any]]:
    replayed = measure_replay(workdir, events, say)
    worker = measure_worker(workdir, events, say)
    live = worker["events_per_s"]
    details = {"replay": replayed, "worker": worker}
    results = [
        StageResult(
            "replay: written, every row new",
            replayed["execute_empty"]["records_per_s"],
            "records/s",
            ceiling=live,
            ceiling_name="live worker",
            details=details,
        ),
        StageResult(
            "replay: dry run over stored rows",
            replayed["dry_run_stored"]["records_per_s"],
            "records/s",
            ceiling=live,
            ceiling_name="live worker",
        ),
    ]
    return results, {}

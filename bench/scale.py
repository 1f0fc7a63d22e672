"""Scale out: the end-to-end rate of ``eventpipe dev`` with one worker and one sink, then with a
second ``eventpipe worker`` process in the worker's group (``bench.procs.join_dev``), on the
same broker and topics (4 partitions each).

Each figure is ``bench.e2e``'s sustained rate (HTTP in, the last row queryable). The two-worker
row is compared with the one-worker row (its peer), so the ratio says what the second process
bought on this machine: on 2 cores the edge, the sink, the load generator and two workers share
them, so it is no promise of what more machines give.

Two sinks are not measured on the embedded stack: a second ``eventpipe sink`` needs a ClickHouse
server, since ``dev``'s chDB directory has one owning process (``dev``); that row carries the
reason instead of a figure. ``tests/e2e/test_scale_out.py`` runs two sinks against a ClickHouse
given by URL.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.e2e import DevStack
from bench.procs import child_env, join_dev, stop
from bench.report import StageResult

TWO_SINKS_SKIPPED = (
    "not run on chDB: a second eventpipe sink cannot open the chDB directory eventpipe dev "
    "owns (one owning process); tests/e2e/test_scale_out.py runs two sinks against "
    "EVENTPIPE_TEST_CLICKHOUSE_URL"
)


def run(
    workdir: Path, events: int, concurrency: int, say: Callable[[str], None]
) -> tuple[list[StageResult], dict[str, Any]]:
    say("scale: starting eventpipe dev")
    stack = DevStack(workdir, name="scale")
    log = workdir / "loadgen.log"
    joined = None
    try:
        stack.warm_up()
        say(f"scale: 1 worker + 1 sink, {events} events")
        one, sat_one = stack.saturate("bench_scale_1w", events, concurrency, log)
        say("scale: a second eventpipe worker joins")
        joined = join_dev(stack.data_dir, "worker", child_env(), workdir / "scale-worker2")
        partitions = joined.partitions()
        say(f"scale: 2 workers + 1 sink, {events} events")
        two, sat_two = stack.saturate("bench_scale_2w", events, concurrency, log)
    finally:
        if joined is not None:
            stop(joined.proc)
        stack.close()
    return [
        StageResult(
            "scale: 1 worker + 1 sink, HTTP -> queryable",
            one,
            "events/s",
            details={"saturation": sat_one},
        ),
        StageResult(
            "scale: 2 workers + 1 sink, HTTP -> queryable",
            two,
            "events/s",
            ceiling=one,
            ceiling_name="peer: 1 worker + 1 sink",
            details={"saturation": sat_two, "second_worker_partitions": partitions},
        ),
        StageResult(
            "scale: 2 workers + 2 sinks",
            math.nan,
            "events/s",
            details={"skipped": TWO_SINKS_SKIPPED},
        ),
    ], {}

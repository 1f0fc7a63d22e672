"""The agents' ceiling: a bare Faust agent that only reads ``events.raw`` (decoding it with the
same Avro codec and topic settings as the real worker) and counts.

``python -m bench.bare_faust --bootstrap B --prefix P --events N --out FILE``: writes the rate
between the first and the N-th event to FILE (so group-join time is excluded), then idles until
the parent stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import faust

from eventpipe.codec import RAW_EVENT
from eventpipe.settings import Settings
from eventpipe.topics import TopicNames
from streams.app import faust_config
from streams.codec import CODEC_NAMES, register_codecs


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _write(path: str, result: dict[str, Any]) -> None:
    """Atomically: the parent polls for the file."""
    Path(path + ".tmp").write_text(json.dumps(result))
    os.replace(path + ".tmp", path)


def build(settings: Settings, events: int, out: str) -> faust.App:
    register_codecs()
    # The worker's own Faust settings, so the ceiling differs from it only by doing no work.
    app = faust.App(f"{settings.topic_prefix}bare", **faust_config(settings))
    topic = app.topic(
        TopicNames.from_settings(settings).raw,
        key_serializer="raw",
        value_serializer=CODEC_NAMES[RAW_EVENT],
    )
    state: dict[str, Any] = {"n": 0}

    def report() -> None:
        n = state["n"]
        if n < 2:
            return
        elapsed = state["t1"] - state["t0"]
        result = {
            "events": events,
            "arrived": n,
            "elapsed_s": elapsed,
            "events_per_s": (n - 1) / elapsed if elapsed > 0 else float("nan"),
            "cpu_share": (state["cpu1"] - state["cpu0"]) / elapsed if elapsed > 0 else None,
        }
        _write(out, result)

    async def count(stream: Any) -> None:
        async for _event in stream.events():
            state["n"] += 1
            state["t1"], state["cpu1"] = time.perf_counter(), _cpu()
            if state["n"] == 1:
                state["t0"], state["cpu0"] = state["t1"], state["cpu1"]
            if state["n"] == events:
                report()

    async def progress() -> None:
        report()  # lets the parent see a tail stuck at the end of a partition (Tansu)

    app.agent(topic, name="bare_count")(count)
    app.timer(1.0)(progress)
    return app


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bare_faust")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    from bench.procs import settings_for

    app = build(settings_for(a.bootstrap, a.prefix), a.events, a.out)
    faust.Worker(app, loglevel="WARNING", redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()

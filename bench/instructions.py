"""Instructions per event, counted by valgrind's callgrind, for before/after comparisons.

On a shared 2-core machine one timing of the same code moves by ±30% and more; an instruction
count does not: the same code, input and interpreter give the same count whatever else the
machine is doing. So a change to the edge's parsing or to the agents' per-event rules can be
judged in two runs instead of many alternated ones. A count is not a time (a cache miss costs
more than an add), so the events/s figures of ``python -m bench`` still have the last word.

``python -m bench.instructions [handler|parse|rules] [--tree PATH]``:

- ``handler``: the edge's batch handler (``bench.handler``: parse, validate, encode, answer a
  1,000-event v2 batch, no HTTP, no Kafka);
- ``parse``: ``eventpipe.dialects.v2.parse`` alone, over the same 1,000 events;
- ``rules``: the agents' own per-event work without Faust: Avro-decode a raw record, ``process``
  it (parse, normalize, dedupe lookup, clean record), Avro-encode the clean record.

Each target runs twice under callgrind, with more repetitions the second time; the difference
divided by the extra events leaves out start-up and imports. ``--tree`` counts another
checkout with this one's interpreter, for example a worktree of the older commit::

    git worktree add /tmp/before <commit>
    python -m bench.instructions handler --tree /tmp/before
    python -m bench.instructions handler

Needs valgrind (Debian: ``apt-get install valgrind``); a run takes about a minute.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

EVENTS = 1_000
"""Events per repetition: one 1,000-event batch, as ``bench.handler`` sends."""
LOW, HIGH = 2, 6
"""Repetitions of the two counted runs."""

TARGETS = ("handler", "parse", "rules")


def _loop(target: str, repetitions: int) -> None:
    """The counted work, in the child process under callgrind."""
    if target == "handler":
        from bench import handler

        sys.argv = ["bench.handler", "--rounds", str(repetitions)]
        handler.main()
        return
    from bench.data import raw_record, v2_payload

    if target == "parse":
        from eventpipe.dialects import v2

        payloads = [v2_payload(i) for i in range(EVENTS)]
        for _ in range(repetitions + 1):  # the first pass warms the caches
            for payload in payloads:
                v2.parse(payload, 0)
        return
    from eventpipe.codec import CLEAN_EVENT, RAW_EVENT, AvroCodec
    from streams.agents import Forward, process

    codec = AvroCodec()
    raws = [codec.encode(RAW_EVENT, raw_record(i, 1_700_000_000_000)[1]) for i in range(EVENTS)]
    for _ in range(repetitions + 1):
        for data in raws:
            _, raw = codec.decode(data, millis=True)
            out = process(raw, {}.get, 86_400_000)
            if not isinstance(out, Forward):
                raise RuntimeError(f"a bench record was not forwarded: {out!r}")
            codec.encode(CLEAN_EVENT, out.record)


def _count(tree: Path, target: str, repetitions: int) -> int:
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-c",
        # This file runs as the child whatever ``tree`` holds (an older tree may lack it), and
        # imports the code it counts from ``tree`` (cwd and PYTHONPATH).
        f"import runpy, sys; sys.argv = ['bench.instructions', '--child', '{repetitions}', "
        f"'{target}']; runpy.run_path({str(Path(__file__).resolve())!r}, run_name='__main__')",
    ]
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind run failed ({done.returncode}): {done.stderr[-2000:]}")
    return int(found.group(1))


def main(
    target: Annotated[str, typer.Argument(help=" or ".join(TARGETS))] = "handler",
    tree: Annotated[Path | None, typer.Option(help="another checkout to count")] = None,
    child: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Count the instructions one event costs in TARGET."""
    if target not in TARGETS:
        raise typer.BadParameter(f"{target!r}: one of {', '.join(TARGETS)}")
    if child is not None:
        _loop(target, child)
        return
    if shutil.which("valgrind") is None:
        typer.echo("valgrind is not installed (Debian: apt-get install valgrind)", err=True)
        raise typer.Exit(2)
    root = (tree or Path(__file__).resolve().parent.parent).resolve()
    low, high = _count(root, target, LOW), _count(root, target, HIGH)
    per_event = (high - low) / ((HIGH - LOW) * EVENTS)
    typer.echo(f"{target}: {per_event:,.0f} instructions per event (from {root})")


if __name__ == "__main__":
    typer.run(main)

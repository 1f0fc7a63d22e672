"""One worker measurement, for before/after comparisons of a change to the agents.

``python -m bench.worker_rate [--events N]`` prints the worker's events/s and its CPU time per
event, measured as the agents stage measures it (``bench.agents.measure_worker``: a fresh
embedded broker, ``events.raw`` prefilled, first to last clean record). CPU per event moves less
than events/s when something else shares the machine. To compare two commits in one sitting,
alternate them, for example with a worktree of the older one::

    git worktree add /tmp/before <commit>
    for i in 1 2 3; do
      (cd /tmp/before && PYTHONPATH=. python -m bench.worker_rate)
      PYTHONPATH=. python -m bench.worker_rate
    done
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from bench.agents import measure_worker
from eventpipe.logs import configure


def main(events: Annotated[int, typer.Option(help="raw records to prefill")] = 30_000) -> None:
    """Measure one ``eventpipe worker`` over prefilled raw records."""
    configure("warning", False)
    with tempfile.TemporaryDirectory(prefix="eventpipe-worker-rate-") as tmp:
        got = measure_worker(Path(tmp), events, lambda _message: None)
    cpu_us = got["worker_cpu_share"] * got["elapsed_s"] / max(got["arrived"] - 1, 1) * 1e6
    typer.echo(
        f"worker: {got['events_per_s']:.0f} events/s, {cpu_us:.0f} us CPU/event "
        f"({got['arrived']} of {events} arrived, from {Path(__file__).resolve().parent.parent})"
    )


if __name__ == "__main__":
    typer.run(main)

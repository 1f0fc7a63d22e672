"""``python -m bench [--quick] [--events N] [--concurrency C] [--out PATH] [--only STAGE]``.

Runs the stages one after another (the machine is small: they must not share it), shows a
progress line, prints the results table and writes the JSON document (default
``bench/results/<UTC timestamp>.json``). Child logs stay in a temporary work directory, which is
removed after a successful run and printed after a failed one.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from bench import agents, e2e, edge, replay, report, scale, sink, state
from bench.report import StageResult
from eventpipe.logs import configure

STAGES = ("edge", "agents", "sink", "e2e", "scale", "replay", "state")
DEFAULT_STAGES = ("edge", "agents", "sink", "e2e", "scale", "replay")
"""``state`` (a restarted worker with 100k and 1M live dedupe keys, several minutes) runs only
when asked for with ``--only state``."""
ROUNDED = ("edge", "agents", "sink")
"""The stages compared with a ceiling: measured ``Plan.rounds`` times (e2e has no ceiling)."""
FULL_EVENTS = 210_000
SINK_LARGE_EVENTS = 2_000_000
QUICK_EVENTS = 10_000


@dataclass(frozen=True)
class Plan:
    """How much each stage sends, derived from the edge's event count."""

    edge_events: int
    edge_singles: int
    agent_events: int
    sink_events: int
    sink_large_events: int
    """The sink's second scale (2M rows in a full run): how its cost grows with the table."""
    e2e_events: int
    e2e_seconds: float
    concurrency: int
    rounds: int
    """How often the edge, agents and sink stages are measured (figure, then ceiling, each
    round); their medians are reported."""

    @classmethod
    def make(cls, events: int, concurrency: int, quick: bool, rounds: int | None = None) -> Plan:
        return cls(
            edge_events=events,
            edge_singles=300 if quick else 3_000,
            agent_events=max(2_000, events // 7),
            # ~5 s of inserts at full size: over 1-2 s (events // 2 before) the first batch's
            # fill and the last insert, which nothing overlaps, weighed ~20% of the figure.
            sink_events=max(10_000, events * 2),
            sink_large_events=max(40_000, events * 4) if quick else SINK_LARGE_EVENTS,
            # ~10-20 s at the rates seen on 2 cores: over 4 s (events // 10 before) the last
            # batch's trip through every stage, which nothing overlaps, weighed ~10%.
            e2e_events=max(2_000, events // 2),
            e2e_seconds=3.0 if quick else 20.0,
            concurrency=concurrency,
            rounds=rounds or (1 if quick else 3),
        )


def run(
    plan: Plan, only: list[str], workdir: Path, console: Console, quick: bool = False
) -> list[StageResult]:
    results: list[StageResult] = []
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[stage]}[/] {task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("starting", total=len(only), stage="bench")

        def say(message: str) -> None:
            progress.update(task, description=message)

        def measure(name: str) -> list[StageResult]:
            if name == "edge":
                return edge.run(
                    workdir, plan.edge_events, plan.edge_singles, plan.concurrency, say
                )[0]
            if name == "agents":
                return agents.run(workdir, plan.agent_events, say)[0]
            if name == "sink":
                return sink.run(workdir, (plan.sink_events, plan.sink_large_events), say)[0]
            if name == "state":
                return state.run(workdir, quick, say)[0]
            if name == "scale":
                return scale.run(workdir, plan.e2e_events, min(plan.concurrency, 4), say)[0]
            if name == "replay":
                return replay.run(workdir, plan.agent_events, say)[0]
            e2e_concurrency = min(plan.concurrency, 4)
            return e2e.run(workdir, plan.e2e_events, plan.e2e_seconds, e2e_concurrency, say)[0]

        for name in only:
            progress.update(task, stage=name)
            rounds = plan.rounds if name in ROUNDED else 1
            measured = []
            for n in range(rounds):
                if rounds > 1:
                    progress.update(task, stage=f"{name} (round {n + 1}/{rounds})")
                measured.append(measure(name))
            got = [report.median_of(same) for same in zip(*measured, strict=True)]
            results.extend(got)
            for r in got:
                console.log(f"{r.stage}: {report.format_figure(r.figure, r.unit)}")
            progress.advance(task)
    return results


def main(
    quick: Annotated[bool, typer.Option(help="small counts, under a minute (CI smoke)")] = False,
    events: Annotated[
        int | None, typer.Option(help="edge events; other stages scale from it")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="requests in flight at the edge")] = 8,
    out: Annotated[Path | None, typer.Option(help="JSON path (default bench/results/)")] = None,
    only: Annotated[
        list[str] | None, typer.Option(help=f"run only these stages: {', '.join(STAGES)}")
    ] = None,
    rounds: Annotated[
        int | None, typer.Option(help="rounds of the ratio stages (default: 3, quick: 1)")
    ] = None,
) -> None:
    """Benchmark every eventpipe stage against its bare-library ceiling."""
    configure("warning", False)
    stages = [s for s in STAGES if (s in only if only else s in DEFAULT_STAGES)]
    unknown = set(only or ()) - set(STAGES)
    if unknown:
        raise typer.BadParameter(f"unknown stages {sorted(unknown)}", param_hint="--only")
    plan = Plan.make(events or (QUICK_EVENTS if quick else FULL_EVENTS), concurrency, quick, rounds)
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 140))  # keep table rows on one line in logs
    started = datetime.now(UTC)
    workdir = Path(tempfile.mkdtemp(prefix="eventpipe-bench-"))
    try:
        results = run(plan, stages, workdir, console, quick)
    except BaseException:
        console.print(f"[red]benchmark failed[/]; child logs kept in {workdir}")
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    params: dict[str, Any] = {**asdict(plan), "stages": stages}
    doc = report.document(results, quick=quick, started=started, params=params)
    path = report.write(doc, out)
    console.print(report.table(results))
    console.print(f"results: {path}")


if __name__ == "__main__":
    typer.run(main)

"""How a replay shows itself: a progress display while it runs, a summary when it ends."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from replay.rules import Summary
from replay.select import Range


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} records/s")


class Display:
    """One progress bar per partition (done/total offsets), with its records/s."""

    def __init__(self, console: Console, ranges: Sequence[Range], topic: str) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _Rate(),
            TimeElapsedColumn(),
            console=console,
            disable=not console.is_terminal,
        )
        self._tasks = {
            r.partition: self._progress.add_task(f"{topic}[{r.partition}]", total=r.total)
            for r in ranges
        }

    def __enter__(self) -> Display:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def advance(self, r: Range) -> None:
        self._progress.update(self._tasks[r.partition], completed=r.next - r.start)

    def note(self, text: str) -> None:
        self._progress.console.print(text)


def resume_hint(ranges: Sequence[Range]) -> str | None:
    """The ``--resume`` value that reads what is left, or None when nothing is."""
    left = [f"{r.partition}:{r.next}" for r in ranges if not r.done]
    return ",".join(left) if left else None


def summary_table(s: Summary, *, dry_run: bool) -> Table:
    verb = "would be written" if dry_run else "written"
    title = "replay: dry run, nothing written" if dry_run else "replay"
    table = Table(title=title, show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("records read", f"{s.read:,}")
    table.add_row("  outside the selection (time, product)", f"{s.skipped:,}")
    table.add_row("rows new", f"{s.new:,}")
    table.add_row("rows identical (nothing to write)", f"{s.identical:,}")
    table.add_row("rows changed", f"{s.changed:,}")
    for column, n in s.changed_columns.most_common():
        table.add_row(f"  {column}", f"{n:,}")
    table.add_row("identity links new", f"{s.links_new:,}")
    table.add_row("identity conflicts (first link kept)", f"{s.conflicts:,}")
    table.add_row("dropped as duplicates of an accepted event", f"{s.duplicates:,}")
    table.add_row("rejected", f"{sum(s.rejected.values()):,}")
    for (stage, reason), n in s.rejected.most_common(20):
        table.add_row(f"  {stage}: {reason[:90]}", f"{n:,}")
    table.add_row(f"  rejections not stored before ({verb})", f"{s.rejections_new:,}")
    rows = s.new + s.changed if dry_run else s.written
    table.add_row(f"rows {verb} (new + changed)", f"{rows:,}")
    if not dry_run:
        table.add_row("events whose older copies were deleted", f"{s.superseded:,}")
    return table

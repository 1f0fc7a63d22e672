"""``eventpipe replay``'s options turned into a selection and a run (``launch/cli.py`` declares
the command and calls :func:`run_command`)."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console

from eventpipe.settings import Settings
from launch.reach import pipeline
from replay.run import Options, Result, replay
from replay.select import Selection, parse_resume, parse_time


def selection(
    *,
    from_: str | None,
    to: str | None,
    partition: int | None,
    from_offset: int | None,
    to_offset: int | None,
    product: str | None,
    resume: str | None,
    now: datetime | None = None,
) -> Selection:
    """Raises ``replay.select.SelectionError`` naming the option at fault."""
    now = now or datetime.now(UTC)
    return Selection(
        from_ms=parse_time(from_, now, "--from") if from_ else None,
        to_ms=parse_time(to, now, "--to") if to else None,
        partition=partition,
        from_offset=from_offset,
        to_offset=to_offset,
        product=product,
        resume=parse_resume(resume) if resume else None,
    )


def run_command(
    settings: Settings, sel: Selection, *, dry_run: bool | None, wait_s: float
) -> Result:
    """Replay against the pipeline the settings point at (``launch.reach.pipeline``)."""
    settings, store = pipeline(settings)
    try:
        return replay(settings, store, Options(sel, dry_run, wait_s), console=Console(stderr=True))
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()

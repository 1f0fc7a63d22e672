"""Results: one ``StageResult`` per measured figure, rendered as a table and written as JSON.

Every stage carries its figure, the ceiling it is compared with (the same library used bare) or
its peer (the same pipeline with fewer processes) and their ratio; the issue's targets ride along
for information, never as an assertion. A row that could not be measured here keeps its reason
in ``details["skipped"]``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SCHEMA_VERSION = 1


def median_of(rounds: Sequence[StageResult]) -> StageResult:
    """One result from the same stage measured in several rounds: the median figure and the
    median ceiling. Each round measures the figure and then its ceiling, so the rounds
    interleave them, and one slow moment of a shared 2-core machine moves neither much. The
    rounds' own figures, ceilings and ratios stay in ``details["rounds"]``; a row skipped in every
    round keeps the reason in ``details["skipped"]``."""
    first = rounds[0]
    if len(rounds) == 1:
        return first
    ceilings = [r.ceiling for r in rounds if r.ceiling is not None]
    details: dict[str, Any] = {
        "rounds": [
            {"figure": r.figure, "ceiling": r.ceiling, "ratio": r.ratio, "details": r.details}
            for r in rounds
        ]
    }
    skipped = [r.details["skipped"] for r in rounds if "skipped" in r.details]
    if len(skipped) == len(rounds):  # never measured: the row says why, as a single round's
        details["skipped"] = skipped[0]
    return StageResult(
        first.stage,
        statistics.median(r.figure for r in rounds),
        first.unit,
        ceiling=statistics.median(ceilings) if ceilings else None,
        ceiling_name=first.ceiling_name,
        min_ratio=first.min_ratio,
        min_figure=first.min_figure,
        max_figure=first.max_figure,
        details=details,
    )


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class StageResult:
    stage: str
    figure: float
    unit: str
    ceiling: float | None = None
    ceiling_name: str = ""
    min_ratio: float | None = None
    """Target ratio (figure / ceiling), for information."""
    min_figure: float | None = None
    max_figure: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.ceiling is None or not self.ceiling or math.isnan(self.figure):
            return None
        return self.figure / self.ceiling

    @property
    def target(self) -> str:
        parts = []
        if self.min_figure is not None:
            parts.append(f">= {format_figure(self.min_figure, self.unit)}")
        if self.max_figure is not None:
            parts.append(f"<= {format_figure(self.max_figure, self.unit)}")
        if self.min_ratio is not None:
            parts.append(f"ratio >= {self.min_ratio:g}")
        return ", ".join(parts)

    @property
    def met(self) -> bool | None:
        checks: list[bool] = []
        if self.min_figure is not None:
            checks.append(self.figure >= self.min_figure)
        if self.max_figure is not None:
            checks.append(self.figure <= self.max_figure)
        if self.min_ratio is not None:
            ratio = self.ratio
            checks.append(ratio is not None and ratio >= self.min_ratio)
        return all(checks) if checks else None

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "figure": _finite(self.figure),
            "unit": self.unit,
            "ceiling": None if self.ceiling is None else _finite(self.ceiling),
            "ceiling_name": self.ceiling_name,
            "ratio": None if self.ratio is None else round(self.ratio, 4),
            "target": self.target or None,
            "target_met": self.met,
            "details": self.details,
        }


def _finite(x: float) -> float | None:
    return None if math.isnan(x) or math.isinf(x) else round(x, 3)


def format_figure(value: float | None, unit: str) -> str:
    """``123456`` events/s -> ``123.5k events/s``; seconds stay seconds; None/NaN -> a dash."""
    if value is None or math.isnan(value):
        return "-"
    if unit.endswith("/s"):
        if abs(value) >= 1_000_000:
            return f"{value / 1_000_000:.2f}M {unit}"
        if abs(value) >= 1_000:
            return f"{value / 1_000:.1f}k {unit}"
        return f"{value:.0f} {unit}"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
    return f"{value:g} {unit}"


def format_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}"


def table(results: Sequence[StageResult], title: str = "eventpipe benchmark") -> Table:
    t = Table(title=title)
    for name, justify in (
        ("stage", "left"),
        ("figure", "right"),
        ("ceiling or peer", "right"),
        ("ratio", "right"),
        ("target (info)", "left"),
    ):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in results:
        met = {True: " [green]met[/]", False: " [red]not met[/]", None: ""}[r.met]
        ceiling = format_figure(r.ceiling, r.unit)
        if r.ceiling_name and r.ceiling is not None:
            ceiling = f"{ceiling} ({r.ceiling_name})"
        note = (r.target + met) if r.target else ""
        if "skipped" in r.details:
            note = f"[yellow]not measured[/]: {r.details['skipped']}"
        t.add_row(r.stage, format_figure(r.figure, r.unit), ceiling, format_ratio(r.ratio), note)
    return t


def document(
    results: Sequence[StageResult], *, quick: bool, started: datetime, params: dict[str, Any]
) -> dict[str, Any]:
    """The JSON written per run."""
    return {
        "schema_version": SCHEMA_VERSION,
        "started_at": started.isoformat(),
        "quick": quick,
        "params": params,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "stages": [r.to_json() for r in results],
    }


def write(doc: dict[str, Any], out: Path | None = None) -> Path:
    """Write ``doc`` to ``out``, else ``bench/results/<UTC timestamp>.json``."""
    if out is None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        out = RESULTS_DIR / f"{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    return out

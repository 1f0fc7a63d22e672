"""bench.report: ratios, formatting and the JSON document's shape (no timing here)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from bench.data import DISTINCT_CLEAN, clean_records, raw_record
from bench.report import (
    StageResult,
    document,
    format_figure,
    format_ratio,
    percentile,
    table,
    write,
)


def test_ratio_is_figure_over_ceiling() -> None:
    r = StageResult("edge", 50_000.0, "events/s", ceiling=200_000.0, min_ratio=0.5)
    assert r.ratio == 0.25
    assert r.met is False
    assert StageResult("x", 1.0, "events/s").ratio is None
    assert StageResult("x", 1.0, "events/s", ceiling=0.0).ratio is None


def test_targets_combine_figure_and_ratio() -> None:
    r = StageResult("edge", 120_000.0, "events/s", 200_000.0, min_ratio=0.5, min_figure=100_000)
    assert r.met is True
    assert r.target == ">= 100.0k events/s, ratio >= 0.5"
    assert StageResult("p99", 2.5, "s", max_figure=2.0).met is False
    assert StageResult("rss", 80.0, "MiB").met is None


def test_formatting() -> None:
    assert format_figure(123_456, "events/s") == "123.5k events/s"
    assert format_figure(1_500_000, "rows/s") == "1.50M rows/s"
    assert format_figure(950, "requests/s") == "950 requests/s"
    assert format_figure(0.4321, "s") == "432 ms"
    assert format_figure(2.5, "s") == "2.50 s"
    assert format_figure(math.nan, "s") == "-"
    assert format_ratio(None) == "-"
    assert format_ratio(0.756) == "0.76"


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))


def test_json_document_shape(tmp_path: Path) -> None:
    results = [
        StageResult("sink", 90_000.0, "rows/s", 100_000.0, "bare insert", min_ratio=0.8),
        StageResult("e2e p99", math.nan, "s", max_figure=2.0),
    ]
    doc = document(results, quick=True, started=datetime(2026, 1, 1, tzinfo=UTC), params={})
    path = write(doc, tmp_path / "out" / "r.json")
    loaded = json.loads(path.read_text())
    assert loaded["schema_version"] == 1
    assert loaded["quick"] is True
    assert set(loaded["machine"]) == {"cpus", "python", "platform"}
    sink, e2e = loaded["stages"]
    assert sink == {
        "stage": "sink",
        "figure": 90_000.0,
        "unit": "rows/s",
        "ceiling": 100_000.0,
        "ceiling_name": "bare insert",
        "ratio": 0.9,
        "target": "ratio >= 0.8",
        "target_met": True,
        "details": {},
    }
    assert e2e["figure"] is None  # NaN is not JSON
    assert e2e["ratio"] is None


def test_the_handler_benchmark_gets_202_for_its_batch() -> None:
    """``python -m bench.handler`` raises unless the edge accepts its batch (so a timing can
    never come from a request the edge refused)."""
    import asyncio

    from bench.handler import _rounds

    times = asyncio.run(_rounds(2))
    assert len(times) == 2 and all(t > 0 for t in times)


def test_rounds_report_the_median_figure_and_ceiling_and_keep_each_round() -> None:
    from bench.report import median_of

    rounds = [
        StageResult("agents", f, "events/s", ceiling=c, min_ratio=0.75)
        for f, c in [(5_000.0, 7_000.0), (3_000.0, 9_000.0), (6_000.0, 6_000.0)]
    ]
    got = median_of(rounds)
    assert (got.figure, got.ceiling) == (5_000.0, 7_000.0)
    assert [r["ratio"] for r in got.details["rounds"]] == [5 / 7, 1 / 3, 1.0]
    assert got.min_ratio == 0.75 and got.met is False
    assert median_of(rounds[:1]) is rounds[0]


def test_table_shows_each_rows_peer_and_why_a_row_was_not_measured() -> None:
    rows = [
        StageResult("scale: 1 worker", 4_000.0, "events/s"),
        StageResult(
            "scale: 2 workers", 5_000.0, "events/s", ceiling=4_000.0, ceiling_name="peer: 1 worker"
        ),
        StageResult("scale: 2 sinks", math.nan, "events/s", details={"skipped": "needs a server"}),
    ]
    console = Console(record=True, width=200)
    console.print(table(rows))
    text = console.export_text()
    assert "4.0k events/s (peer: 1 worker)" in text and "1.25" in text
    assert "not measured: needs a server" in text


def test_clean_records_past_the_distinct_ones_are_copies_under_new_ids() -> None:
    n = DISTINCT_CLEAN + 3
    records = list(clean_records(n, 1_700_000_000_000))
    again = list(clean_records(n, 1_700_000_000_000))
    assert records == again
    assert len({r["event_id"] for r in records}) == n
    assert records[DISTINCT_CLEAN]["external_id"] == f"ext-{DISTINCT_CLEAN}"
    assert records[DISTINCT_CLEAN]["event_id"] == raw_record(DISTINCT_CLEAN, 0)[1]["event_id"]
    same = {k: v for k, v in records[0].items() if k not in ("event_id", "external_id")}
    copy = {
        k: v for k, v in records[DISTINCT_CLEAN].items() if k not in ("event_id", "external_id")
    }
    assert same == copy

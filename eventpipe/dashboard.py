"""What the edge's ``/dashboard`` shows, read from the rollups of migration 007 (never a count
over raw ``events``) and from the processes' Prometheus metrics.

One workspace (``product``) or, for the admin token, all of them (``product=None``: series are
then named ``product/name``). Values reach ClickHouse as query parameters, never as SQL text.
The page (``producers/static/dashboard.js``) turns this into charts and refreshes it.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client
from prometheus_client.metrics_core import Metric

RANGES = {"hour": 60, "day": 24 * 60}
"""The charts' windows, in minutes."""
TOP_SERIES = 8
"""Names charted per minute; the rest are summed as ``other``."""
DAYS = 30
"""Window of the per-day charts (identity links, active persons)."""
ANOMALY_DAYS = 1
"""The anomaly rule over today only: the view reads ``events`` of its window (migration 006)."""

_SCOPE = "({all:Bool} OR product = {product:String})"

EVENTS_PER_MINUTE = f"""
SELECT minute, product, canonical_name AS name, uniqCombinedMerge(14)(events) AS n
FROM events_minutely
WHERE {_SCOPE} AND minute >= {{since:DateTime64(0, 'UTC')}} AND minute <= now()
GROUP BY minute, product, name
ORDER BY minute
"""

REJECTIONS = f"""
SELECT product, stage, field, toUInt64(sum(rejected)) AS n, topKMerge(5)(reasons) AS reasons,
       groupArrayMerge(5)(examples) AS examples
FROM rejections_hourly
WHERE {_SCOPE} AND hour >= dateTrunc('hour', {{since:DateTime64(0, 'UTC')}})
GROUP BY product, stage, field
ORDER BY n DESC
LIMIT 50
"""

REJECTIONS_PER_HOUR = f"""
SELECT hour, stage, toUInt64(sum(rejected)) AS n
FROM rejections_hourly
WHERE {_SCOPE} AND hour >= dateTrunc('hour', now() - INTERVAL 1 DAY)
GROUP BY hour, stage
ORDER BY hour
"""

LINKS_PER_DAY = f"""
SELECT day, status, uniqCombinedMerge(14)(links) AS n
FROM identity_links_daily
WHERE {_SCOPE} AND day >= today() - {{days:UInt32}}
GROUP BY day, status
ORDER BY day
"""

PERSONS_PER_DAY = f"""
SELECT day, toUInt64(sum(persons)) AS n
FROM active_persons_daily
WHERE {_SCOPE} AND day >= today() - {{days:UInt32}}
GROUP BY day
ORDER BY day
"""

ANOMALIES = f"""
SELECT product, canonical_name, version, kind, property, toUInt64(sum(events)) AS n,
       arraySlice(groupArrayArray(example_event_ids), 1, 5) AS examples
FROM catalog_anomalies(share = {{share:Float64}}, days = {{anomaly_days:UInt32}})
WHERE {_SCOPE}
GROUP BY product, canonical_name, version, kind, property
ORDER BY n DESC
LIMIT 20
"""


def _label(product: str, name: str, scoped: bool) -> str:
    return name if scoped else f"{product}/{name}"


def per_minute(
    rows: Iterable[tuple[datetime, str, str, int]], since: datetime, minutes: int, scoped: bool
) -> dict[str, Any]:
    """Rows of (minute, product, name, n) as one zero-filled series per name, the ``TOP_SERIES``
    largest of the window first and the rest summed as ``other``; and the window's top names."""
    start = since.replace(second=0, microsecond=0)
    index = {start + timedelta(minutes=i): i for i in range(minutes + 1)}
    series: dict[str, list[int]] = defaultdict(lambda: [0] * len(index))
    for minute, product, name, n in rows:
        i = index.get(minute.replace(tzinfo=UTC) if minute.tzinfo is None else minute)
        if i is not None:
            series[_label(product, name, scoped)][i] += int(n)
    totals = sorted(((sum(v), k) for k, v in series.items()), key=lambda t: (-t[0], t[1]))
    shown = [k for _, k in totals[:TOP_SERIES]]
    out = [{"name": k, "counts": series[k]} for k in shown]
    rest = [series[k] for _, k in totals[TOP_SERIES:]]
    if rest:
        out.append({"name": "other", "counts": [sum(c) for c in zip(*rest, strict=True)]})
    return {
        "minutes": [m.isoformat() for m in index],
        "series": out,
        "top": [{"name": k, "events": t} for t, k in totals[:20]],
        "total": sum(t for t, _ in totals),
    }


@dataclass
class Dashboard:
    """The dashboard's reads, on a read-only client of their own behind one lock (a chDB client
    is not shared mid-query)."""

    client: Client
    typical_share: float = 0.95
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def _rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        with self._lock:
            return [tuple(r) for r in self.client.query(sql, parameters=params).result_rows]

    def data(self, product: str | None, range_name: str) -> dict[str, Any]:
        """Everything the page charts, for one workspace (or all: ``None``) over ``range_name``."""
        minutes = RANGES[range_name]
        now = datetime.fromtimestamp(self.clock(), UTC).replace(second=0, microsecond=0)
        since = now - timedelta(minutes=minutes)
        scoped = product is not None
        params: dict[str, Any] = {
            "all": not scoped,
            "product": product or "",
            "since": since.replace(tzinfo=None),
            "days": DAYS,
            "share": self.typical_share,
            "anomaly_days": ANOMALY_DAYS,
        }
        events = per_minute(self._rows(EVENTS_PER_MINUTE, params), since, minutes, scoped)
        rejections = [
            {
                "stage": stage,
                "field": field,
                "product": prod,
                "rejected": n,
                "reasons": list(reasons),
                "examples": [{"event_id": e, "reason": r} for e, r in examples],
            }
            for prod, stage, field, n, reasons, examples in self._rows(REJECTIONS, params)
        ]
        by_stage: dict[str, int] = defaultdict(int)
        for r in rejections:
            by_stage[str(r["stage"])] += int(r["rejected"])
        return {
            "product": product,
            "range": range_name,
            "generated_at": datetime.fromtimestamp(self.clock(), UTC).isoformat(),
            "events": events,
            "rejections": {
                "by_stage": dict(sorted(by_stage.items(), key=lambda kv: -kv[1])),
                "groups": rejections,
                "per_hour": [
                    {"hour": h.isoformat(), "stage": s, "rejected": n}
                    for h, s, n in self._rows(REJECTIONS_PER_HOUR, params)
                ],
            },
            "duplicates": by_stage.get("dedupe", 0),
            "identity_links": [
                {"day": d.isoformat(), "status": s, "links": n}
                for d, s, n in self._rows(LINKS_PER_DAY, params)
            ],
            "active_persons": [
                {"day": d.isoformat(), "persons": n} for d, n in self._rows(PERSONS_PER_DAY, params)
            ],
            "anomalies": [
                {
                    "name": _label(prod, name, scoped),
                    "version": version,
                    "kind": kind,
                    "property": prop,
                    "events": n,
                    "examples": list(examples),
                }
                for prod, name, version, kind, prop, n, examples in self._rows(ANOMALIES, params)
            ],
        }


# --- pipeline health, from the processes' metrics -------------------------------------------------

HEALTH_SUMS = {
    "edge_requests": ("eventpipe_edge_requests_total", None),
    "edge_errors": ("eventpipe_edge_requests_total", ("status", "5")),
    "edge_rate_limited": ("eventpipe_edge_rate_limited_total", None),
    "edge_events": ("eventpipe_edge_events_total", None),
    "worker_records": ("eventpipe_worker_records_total", None),
    "worker_rejected": ("eventpipe_worker_records_total", ("outcome", "rejected")),
    "worker_duplicates": ("eventpipe_worker_records_total", ("outcome", "duplicate")),
    "worker_refused": ("eventpipe_worker_refused_total", None),
    "sink_rows": ("eventpipe_sink_rows_total", None),
    "sink_insert_failures": ("eventpipe_sink_insert_failures_total", None),
    "worker_lag": ("eventpipe_worker_consumer_lag_records", None),
    "sink_lag": ("eventpipe_sink_consumer_lag_records", None),
}
"""Figure -> (sample name, (label, value prefix) it must match): summed over the samples. The
page turns the counters into rates between two refreshes."""


def health(families: Iterable[Metric]) -> dict[str, Any]:
    """Sum the :data:`HEALTH_SUMS` figures (``None`` for a metric no process exports) and read
    the sink's last commit age, over the metric families of every process read."""
    sums: dict[str, float | None] = dict.fromkeys(HEALTH_SUMS)
    commit_age: float | None = None
    for family in families:
        for sample in family.samples:
            if sample.name == "eventpipe_sink_seconds_since_last_commit":
                commit_age = sample.value if commit_age is None else min(commit_age, sample.value)
            for figure, (name, match) in HEALTH_SUMS.items():
                if sample.name != name:
                    continue
                if match is not None and not sample.labels.get(match[0], "").startswith(match[1]):
                    sums[figure] = sums[figure] or 0.0
                    continue
                sums[figure] = (sums[figure] or 0.0) + sample.value
    return {**sums, "sink_last_commit_age_s": commit_age}

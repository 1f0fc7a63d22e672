"""The Grafana dashboards of deploy/ are real: after some traffic every ClickHouse panel's SQL
returns rows from chDB (the rollups of migration 007, through a read-only client), every metric a
Prometheus panel reads is exported by the processes, and, where Debian's ``prometheus`` is
installed (``make test`` installs it when it can), a real Prometheus scrapes ``eventpipe dev``
and answers a query about it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from eventpipe.embedded import free_port
from launch.dev import DevState
from tests.conftest import Stack, Workspace
from tests.e2e.traffic import send_traffic, wait_for_rollups

DASHBOARDS = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"
METRIC = re.compile(r"\beventpipe_[a-z0-9_]+")


def targets(kind: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path in sorted(DASHBOARDS.glob("*.json")):
        dash = json.loads(path.read_text())
        for panel in dash["panels"]:
            for target in panel["targets"]:
                if target["datasource"]["type"] == kind:
                    yield dash["title"], panel["title"], target
        for var in dash["templating"]["list"]:
            if var.get("datasource", {}).get("type") == kind:
                yield dash["title"], f"variable {var['name']}", {"rawSql": var["query"]}


def grafana_sql(sql: str, product: str) -> str:
    """Expand the ClickHouse plugin's macros and the dashboard's variable as Grafana would, over
    the last day."""
    sql = re.sub(
        r"\$__timeFilter\((\w+)\)",
        r"(\1 >= now() - INTERVAL 1 DAY AND \1 <= now() + INTERVAL 1 MINUTE)",
        sql,
    )
    sql = sql.replace("$__fromTime", "(now() - INTERVAL 1 DAY)").replace("$__toTime", "now()")
    sql = sql.replace("${product}", product)
    assert "$" not in sql, f"a macro this test does not know: {sql}"
    return sql


def test_every_clickhouse_panel_returns_rows_after_traffic(stack: Stack, ws: Workspace) -> None:
    sent = send_traffic(ws)
    wait_for_rollups(stack, ws, sent)
    panels = list(targets("grafana-clickhouse-datasource"))
    assert len(panels) >= 10
    for dashboard, title, target in panels:
        rows = stack.query(grafana_sql(target["rawSql"], ws.product))
        assert rows, f"{dashboard} / {title}: no rows"
        numbers = [v for r in rows for v in r.values() if isinstance(v, int | float)]
        assert title.startswith("variable") or any(n > 0 for n in numbers), (title, rows)


def exported(text: str) -> set[str]:
    """Every series name a scrape of ``text`` gives Prometheus, with or without samples yet."""
    out: set[str] = set()
    for family in text_string_to_metric_families(text):
        out.add(family.name)
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
        out.update(family.name + s for s in suffixes.get(family.type, []))
        out.update(s.name for s in family.samples)
    return out


def test_every_prometheus_panel_reads_metrics_the_processes_export(
    stack: Stack, ws: Workspace
) -> None:
    assert ws.post("/api/v2/events", {"event": "grafana.checked"}).status_code == 202
    state = DevState.read(stack.data_dir)
    assert state is not None and state.worker_metrics_url
    names = exported(httpx.get(f"{stack.url}/metrics").text)
    names |= exported(httpx.get(state.worker_metrics_url).text)
    exprs = list(targets("prometheus"))
    assert len(exprs) >= 15
    for dashboard, title, target in exprs:
        used = METRIC.findall(target["expr"])
        assert used, (dashboard, title)
        missing = set(used) - names
        assert not missing, f"{dashboard} / {title}: {missing}"


@pytest.fixture
def prometheus(stack: Stack, tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Debian's prometheus is not installed (make test installs it where it can)")
    state = DevState.read(stack.data_dir)
    assert state is not None and state.worker_metrics_url
    worker = urlparse(state.worker_metrics_url)
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            {"job_name": "eventpipe-edge", "static_configs": [{"targets": [stack.url[7:]]}]},
            {"job_name": "eventpipe-worker", "static_configs": [{"targets": [worker.netloc]}]},
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_a_real_prometheus_scrapes_dev_and_answers_a_query(
    stack: Stack, ws: Workspace, prometheus: str
) -> None:
    assert ws.post("/api/v2/events", {"event": "prometheus.checked"}).status_code == 202
    query = 'sum(eventpipe_worker_records_total{outcome="clean"}) and on() up{job="eventpipe-edge"}'
    deadline = time.monotonic() + 60
    while True:
        try:
            body = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}).json()
            result = body["data"]["result"]
        except (httpx.TransportError, ValueError, KeyError):
            result = []
        if result and float(result[0]["value"][1]) >= 1:
            break
        assert time.monotonic() < deadline, f"Prometheus has no answer to {query!r}"
        time.sleep(0.5)
    up = httpx.get(f"{prometheus}/api/v1/query", params={"query": "up"}).json()
    jobs = {r["metric"]["job"]: r["value"][1] for r in up["data"]["result"]}
    assert jobs == {"eventpipe-edge": "1", "eventpipe-worker": "1"}

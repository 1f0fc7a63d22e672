"""docker-compose.yml and deploy/ are checked by parsing: no Docker engine runs on the development
machines. Whether the dashboards' queries and metrics are real is tests/e2e/test_grafana.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from eventpipe.settings import Settings
from launch.cli import app

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return doc


def cli_commands() -> set[str]:
    return {c.name or c.callback.__name__ for c in app.registered_commands if c.callback}


def test_compose_runs_each_process_with_settings_that_exist() -> None:
    services = compose()["services"]
    assert {"kafka", "clickhouse", "schema-registry", "edge", "worker", "sink"} <= services.keys()
    fields = set(Settings.model_fields)
    for name in ("edge", "worker", "sink"):
        svc = services[name]
        assert svc["command"][0] == name
        assert svc["depends_on"]["schema-registry"] == {"condition": "service_healthy"}
        registry = svc["environment"]["EVENTPIPE_SCHEMA_REGISTRY_URL"]
        assert registry == "http://schema-registry:8081", "every process writes one framing"
        for var in svc["environment"]:
            assert var.startswith("EVENTPIPE_")
            assert var.removeprefix("EVENTPIPE_").lower() in fields, var


def test_every_command_of_this_repos_image_is_one_the_cli_has() -> None:
    services = compose()["services"]
    ours = {name: svc for name, svc in services.items() if svc.get("build") == "."}
    assert {"migrate", "edge", "worker", "sink"} <= ours.keys()
    for name, svc in ours.items():
        assert svc["command"][0] in cli_commands(), name
    # migrations run first: whatever touches ClickHouse waits for them
    for name in ("edge", "sink"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }


def test_the_production_shape_has_prometheus_and_grafana_with_the_plugin() -> None:
    services = compose()["services"]
    kafka = services["kafka"]["environment"]
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"], "KRaft mode"
    assert (
        "grafana-clickhouse-datasource" in services["grafana"]["environment"]["GF_INSTALL_PLUGINS"]
    )
    for svc in ("prometheus", "grafana", "clickhouse"):
        for volume in services[svc]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), volume
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = {
        t
        for job in prometheus["scrape_configs"]
        for c in job["static_configs"]
        for t in c["targets"]
    }
    worker_port = services["worker"]["environment"]["EVENTPIPE_WORKER_METRICS_PORT"]
    sink_port = services["sink"]["environment"]["EVENTPIPE_SINK_METRICS_PORT"]
    assert targets == {"edge:8000", f"worker:{worker_port}", f"sink:{sink_port}"}
    urls = json.loads(services["edge"]["environment"]["EVENTPIPE_DASHBOARD_METRICS_URLS"])
    assert urls == [f"http://worker:{worker_port}/metrics", f"http://sink:{sink_port}/metrics"]


def test_grafana_provisions_both_datasources_and_the_dashboards_use_them() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "eventpipe.yml").read_text())
    by_uid = {d["uid"]: d for d in sources["datasources"]}
    assert by_uid["eventpipe-clickhouse"]["type"] == "grafana-clickhouse-datasource"
    assert by_uid["eventpipe-clickhouse"]["jsonData"]["username"] == "grafana"
    users = (DEPLOY / "clickhouse" / "users.d" / "grafana.xml").read_text()
    assert "<grafana>" in users and "<readonly>2</readonly>" in users, "a read-only user"
    assert by_uid["eventpipe-prometheus"]["type"] == "prometheus"
    titles = set()
    for path in (DEPLOY / "grafana" / "dashboards").glob("*.json"):
        dash = json.loads(path.read_text())
        titles.add(dash["title"])
        for panel in dash["panels"]:
            for target in panel["targets"]:
                assert target["datasource"]["uid"] in by_uid, (path.name, panel["title"])
    assert titles == {"Product events", "Pipeline health"}

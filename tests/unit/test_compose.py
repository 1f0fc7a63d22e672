"""docker-compose.yml is checked by parsing: no Docker engine runs on the development machines."""

from __future__ import annotations

from pathlib import Path

import yaml

from eventpipe.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_compose_runs_each_process_with_settings_that_exist() -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
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

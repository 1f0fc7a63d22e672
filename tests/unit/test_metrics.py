"""Metrics: consumer lag is right on Tansu despite its short watermark, the worker's and the
sink's ``/metrics`` server, the edge's route label, and the dashboard's health summary."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from eventpipe.broker import BrokerProfile
from eventpipe.dashboard import health
from eventpipe.drain import Offsets
from eventpipe.embedded import TansuBroker
from eventpipe.kafka import create_topics
from eventpipe.lag import LagMonitor, partition_lags
from eventpipe.metrics import MetricsServer, labelled
from eventpipe.settings import Settings
from producers.metrics import REQUESTS, RequestMetrics
from tests.unit.test_drain import produce_batches


@pytest.fixture
def broker() -> Iterator[TansuBroker]:
    b = TansuBroker()
    b.start()
    try:
        yield b
    finally:
        b.stop()


def test_lag_on_the_embedded_broker_counts_the_whole_last_batch(broker: TansuBroker) -> None:
    settings = Settings(kafka_bootstrap=broker.bootstrap, topic_partitions=2)
    create_topics(settings, ["t"])
    end = produce_batches(broker.bootstrap, "t", 0, [10, 7])  # 17: Tansu's watermark says 11
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g"})
    consumer.commit(offsets=[TopicPartition("t", 0, 12)], asynchronous=False)
    consumer.close()
    registry = CollectorRegistry()
    offsets = Offsets(broker.bootstrap)
    try:
        for profile, want in ((BrokerProfile.EMBEDDED, end - 12), (BrokerProfile.KAFKA, 0)):
            gauge = Gauge(f"lag_{profile}", "lag", ["topic", "partition"], registry=registry)
            s = settings.model_copy(update={"broker_profile": profile})
            lags = LagMonitor(s, "g", ["t"], gauge).measure(offsets)
            assert lags == {("t", 0): want, ("t", 1): 0}, profile
            assert (
                registry.get_sample_value(f"lag_{profile}", {"topic": "t", "partition": "0"})
                == want
            )
    finally:
        offsets.close()


def test_partition_lag_is_never_negative() -> None:
    assert partition_lags({("t", 0): 5, ("t", 1): 3}, {("t", 0): 9}) == {("t", 0): 0, ("t", 1): 3}


def test_metrics_server_answers_metrics_healthz_and_404() -> None:
    registry = CollectorRegistry()
    Counter("demo_things", "things", registry=registry).inc(3)
    server = MetricsServer("127.0.0.1", 0, registry=registry).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        text = httpx.get(f"{base}/metrics").text
        values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
        assert values["demo_things_total"] == 3
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{base}/other").status_code == 404
    finally:
        server.close()


def get(app: Starlette, *paths: str) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://edge") as http:
            return [await http.get(p) for p in paths]

    return asyncio.run(run())


def test_requests_are_labelled_by_route_template_never_by_path() -> None:
    async def one(request: Request) -> PlainTextResponse:
        return PlainTextResponse("x", status_code=201)

    app = Starlette(
        routes=[Route("/things/{thing_id}", one)], middleware=[Middleware(RequestMetrics)]
    )
    before = REQUESTS.labels("/things/{thing_id}", "GET", "201")._value.get()
    ok, missing = get(app, "/things/evt_secret_id", "/nowhere/evt_secret_id")
    assert (ok.status_code, missing.status_code) == (201, 404)
    assert REQUESTS.labels("/things/{thing_id}", "GET", "201")._value.get() == before + 1
    assert REQUESTS.labels("unmatched", "GET", "404")._value.get() >= 1
    exposed = {s.labels.get("route") for m in REQUESTS.collect() for s in m.samples}
    assert not any("evt_secret_id" in str(r) for r in exposed)


def test_a_remembered_child_is_the_metric_s_own_and_counts_there() -> None:
    registry = CollectorRegistry()
    counter = Counter("unit_labelled_total", "labelled", ["route", "status"], registry=registry)
    child = labelled(counter, "/a", "202")
    assert child is counter.labels("/a", "202")
    assert labelled(counter, "/a", "202") is child
    assert labelled(counter, "/a", "400") is not child
    child.inc(2)
    assert registry.get_sample_value("unit_labelled_total", {"route": "/a", "status": "202"}) == 2


def test_health_sums_each_figure_over_every_process() -> None:
    worker, sink = CollectorRegistry(), CollectorRegistry()
    lag = Gauge(
        "eventpipe_worker_consumer_lag_records", "", ["topic", "partition"], registry=worker
    )
    lag.labels("raw", "0").set(4)
    lag.labels("raw", "1").set(6)
    rec = Counter("eventpipe_worker_records", "", ["outcome", "stage"], registry=worker)
    rec.labels("clean", "").inc(10)
    rec.labels("rejected", "normalize").inc(2)
    Gauge("eventpipe_sink_seconds_since_last_commit", "", registry=sink).set(7.5)
    got = health([*worker.collect(), *sink.collect()])
    assert got["worker_lag"] == 10
    assert (got["worker_records"], got["worker_rejected"]) == (12, 2)
    assert got["sink_last_commit_age_s"] == 7.5
    assert got["sink_lag"] is None, "no process exports it: unknown, not 0"

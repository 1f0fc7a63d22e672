"""Confluent framing through the real pipeline, read by confluent-kafka's ``AvroDeserializer``
(the reader teams run), and topics holding both framings.

Which registry. Two, the test's module runs once per registry:

* ``mock``: ``EVENTPIPE_SCHEMA_REGISTRY_URL=mock://...``, confluent-kafka's in-memory registry.
  It cannot be shared: its store belongs to one client object (``MockSchemaRegistryClient``
  makes a new one in ``__init__``), so the edge and the sink (one process), the worker (another)
  and this test (a third) each have their own. What makes them agree is what every eventpipe
  process does when it starts: register the newest schema of each record in one fixed order
  (``eventpipe.registry.RECORDS``), and the mock numbers ids 1, 2, ... in registration order.
  This test registers the shipped ``.avsc`` files itself, in that order, under
  ``<topic>-value``, without eventpipe's code: a framing, subject or order the processes got
  wrong makes its ``AvroDeserializer`` fail or read the wrong record. What the mock cannot show
  is ids agreeing through one registry: that is the next case.
* ``confluent``: Confluent's own registry (``confluentinc/cp-schema-registry`` with the Kafka it
  stores schemas in) through testcontainers, where a Docker engine answers, or
  ``EVENTPIPE_TEST_SCHEMA_REGISTRY_URL``; skipped otherwise. Every process and the test talk
  to that one registry.

Not chosen: a registry-compatible HTTP server written for the test (it would test itself, not
the protocol), and a registry from PyPI (Karapace, the one Python implementation, is not
published there; the others are JVM images).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from eventpipe.codec import CLEAN_EVENT, AvroCodec
from eventpipe.identity import identity_key
from eventpipe.ids import event_id_for
from eventpipe.kafka import producer_config
from eventpipe.publisher import KafkaPublisher
from eventpipe.settings import Settings
from eventpipe.topics import TopicNames
from schemas import schema_files
from tests.conftest import Stack, _docker_answers, start_stack
from tests.e2e.kafka_read import bootstrap, read_topic, tail

CONFLUENT_IMAGE = "confluentinc/cp-schema-registry:7.9.0"
REGISTRY_ORDER = ("RawEvent", "CleanEvent", "IdentityLink", "RejectedEvent")
"""The shipped records in the order every process registers them (see the module docstring)."""


@contextmanager
def confluent_registry() -> Iterator[str]:
    from testcontainers.core.container import DockerContainer  # type: ignore[import-untyped]
    from testcontainers.core.network import Network  # type: ignore[import-untyped]
    from testcontainers.kafka import KafkaContainer  # type: ignore[import-untyped]

    with Network() as net:
        kafka = KafkaContainer().with_network(net).with_network_aliases("kafka")
        with kafka:
            registry = (
                DockerContainer(CONFLUENT_IMAGE)
                .with_network(net)
                .with_env("SCHEMA_REGISTRY_HOST_NAME", "schema-registry")
                .with_env("SCHEMA_REGISTRY_LISTENERS", "http://0.0.0.0:8081")
                .with_env("SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS", "PLAINTEXT://kafka:9092")
                .with_exposed_ports(8081)
            )
            with registry:
                host = registry.get_container_host_ip()
                url = f"http://{host}:{registry.get_exposed_port(8081)}"
                deadline = time.monotonic() + 120
                while True:
                    try:
                        if httpx.get(f"{url}/subjects", timeout=2).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert time.monotonic() < deadline, "the registry did not answer in 120 s"
                    time.sleep(0.5)
                yield url


@pytest.fixture(scope="module", params=["mock", "confluent"])
def registry_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "mock":
        yield f"mock://eventpipe-{uuid.uuid4().hex[:8]}"
        return
    url = os.environ.get("EVENTPIPE_TEST_SCHEMA_REGISTRY_URL")
    if url:
        yield url
        return
    if os.environ.get("EVENTPIPE_TEST_NO_DOCKER") == "1" or not _docker_answers():
        pytest.skip("Confluent's registry runs in testcontainers, and no Docker engine answers")
    with confluent_registry() as found:
        yield found


@pytest.fixture(scope="module")
def registry_env(registry_url: str, backend_env: dict[str, str]) -> dict[str, str]:
    prefix = f"reg-{uuid.uuid4().hex[:8]}."  # its own topics and groups on a shared Kafka
    return {
        **backend_env,
        "EVENTPIPE_SCHEMA_REGISTRY_URL": registry_url,
        "EVENTPIPE_TOPIC_PREFIX": prefix,
        "EVENTPIPE_WORKER_ID": f"{prefix}eventpipe",
        "EVENTPIPE_SINK_GROUP": f"{prefix}sink",
    }


@pytest.fixture(scope="module")
def registry_stack(
    registry_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("registry-stack"), registry_env)
    try:
        yield s
    finally:
        s.stop()


def topics_of(env: dict[str, str]) -> TopicNames:
    return TopicNames.from_settings(Settings(topic_prefix=env["EVENTPIPE_TOPIC_PREFIX"]))


def readers_client(url: str, topics: TopicNames) -> SchemaRegistryClient:
    """The test's own client, holding the shipped schemas under the topics' subjects."""
    client = SchemaRegistryClient.new_client({"url": url})
    newest: dict[str, tuple[int, str]] = {}
    for path in schema_files():
        raw = json.loads(path.read_text())
        version = int(path.name.removesuffix(".avsc").rpartition(".v")[2])
        if raw["name"] not in newest or version > newest[raw["name"]][0]:
            newest[raw["name"]] = (version, json.dumps(raw))
    topic_of = dict(
        zip(
            REGISTRY_ORDER,
            (topics.raw, topics.clean, topics.identities, topics.rejected),
            strict=True,
        )
    )
    for name in REGISTRY_ORDER:
        client.register_schema(f"{topic_of[name]}-value", Schema(newest[name][1], "AVRO"))
    return client


def test_every_topic_reads_with_avro_deserializer(
    registry_stack: Stack, registry_env: dict[str, str], registry_url: str
) -> None:
    stack, topics = registry_stack, topics_of(registry_env)
    ws = stack.workspace()
    r = ws.post(
        "/v1/events",
        {
            "event": "page_viewed",
            "anonymous_id": "a1",
            "user_id": "u1",
            "timestamp": "2026-03-01T10:00:00Z",
        },
    )
    assert r.status_code == 202, r.text
    linked = r.json()["event_id"]
    paid = ws.post(
        "/api/v2/events", {"event": "order.paid", "subject_type": "user", "subject_id": "u1"}
    )
    assert paid.status_code == 202, paid.text
    paid_id = paid.json()["data"]["uuid"]
    # bytes no codec reads, straight into events.raw: the worker rejects them (stage decode)
    garbage = f"not avro {uuid.uuid4()}".encode()
    publish(stack, topics.raw, [(b"k", garbage)])
    p = ws.product
    stack.wait_for(f"SELECT 1 FROM events WHERE product = '{p}'", lambda rs: len(rs) == 2)
    stack.wait_for(f"SELECT 1 FROM identity_links WHERE product = '{p}'", lambda rs: len(rs) == 1)
    stack.wait_for(
        f"SELECT 1 FROM rejected_events WHERE payload = '{garbage.decode()}'",
        lambda rs: len(rs) == 1,
    )

    servers = bootstrap(stack)
    deserialize = AvroDeserializer(readers_client(registry_url, topics))
    plain = AvroCodec()  # records written single-object encoded (the mixed-framing test's)
    ours: dict[str, list[dict[str, Any]]] = {}
    for topic in topics.all():
        for msg in read_topic(servers, topic):
            value = msg.value()
            assert value is not None
            if value == garbage:
                continue
            if value[:1] != b"\x00":
                _, record = plain.decode(value)
                assert record["product"] != p, "the pipeline wrote single-object encoding"
                continue
            record = deserialize(value, SerializationContext(topic, MessageField.VALUE))
            if record["product"] == p or record.get("payload") == garbage:
                ours.setdefault(topic, []).append(record)
    assert sorted(r["event_id"] for r in ours[topics.raw]) == sorted([linked, paid_id])
    assert sorted(r["event_id"] for r in ours[topics.clean]) == sorted([linked, paid_id])
    assert [(r["anonymous_id"], r["user_id"]) for r in ours[topics.identities]] == [("a1", "u1")]
    assert [r["stage"] for r in ours[topics.rejected]] == ["decode"]


def test_a_topic_with_both_framings_is_read_by_the_worker_and_the_sink(
    registry_stack: Stack, registry_env: dict[str, str]
) -> None:
    """As during a switch to a registry: records of an older edge and an older worker, written
    single-object encoded, in the topics next to the new ones."""
    stack, topics = registry_stack, topics_of(registry_env)
    ws = stack.workspace()
    p = ws.product
    undecoded_before = stack.query(
        "SELECT count() AS n FROM rejected_events WHERE stage IN ('decode', 'sink')"
    )
    r = ws.post(
        "/api/v2/events/batch",
        {
            "events": [
                {"event": "new.sent", "subject_type": "user", "subject_id": f"n{i}"}
                for i in range(3)
            ]
        },
    )
    assert r.status_code == 202, r.text
    framed = [e["uuid"] for e in r.json()["data"]]

    plain, now_ms = AvroCodec(), int(time.time() * 1000)
    raw_ids, raw_records = [], []
    for i in range(3):
        event_id = event_id_for(p, "api", None)
        payload = json.dumps({"event": "old.sent", "subject_type": "user", "subject_id": f"o{i}"})
        value = plain.raw_encoder("v2", p, "api", now_ms)(event_id, None, payload.encode())
        raw_records.append((identity_key(p, None, f"o{i}", event_id), value))
        raw_ids.append(event_id)
    clean_ids, clean_records = [], []
    for i in range(2):
        event_id = event_id_for(p, "api", None)
        clean_records.append(
            (event_id.encode(), plain.encode(CLEAN_EVENT, clean_event(p, event_id, i, now_ms)))
        )
        clean_ids.append(event_id)
    publish(stack, topics.raw, raw_records)
    publish(stack, topics.clean, clean_records)

    everything = sorted(framed + raw_ids + clean_ids)
    rows = stack.wait_for(
        f"SELECT event_id FROM events WHERE product = '{p}' ORDER BY event_id",
        lambda rs: len(rs) >= len(everything),
    )
    assert [row["event_id"] for row in rows] == everything
    assert stack.query(f"SELECT reason FROM rejected_events WHERE product = '{p}'") == []
    undecoded = "SELECT count() AS n FROM rejected_events WHERE stage IN ('decode', 'sink')"
    assert stack.query(undecoded) == undecoded_before, "a record of either framing was refused"
    # and the sink's fast path took both framings (a refused container is decoded row by row)
    assert "avro insert refused" not in stack.log_path.read_text(errors="replace")

    # eventpipe tail reads both framings too
    lines = tail(stack, registry_env, "events.raw", "--product", p, "--from", "0")
    decoded = [line["value"]["event_id"] for line in lines if "error" not in line]
    assert sorted(decoded) == sorted(framed + raw_ids)
    stray = [line for line in lines if "error" in line]  # the other test's garbage, if it ran
    assert all(line["key"] == "k" for line in stray), stray


def publish(stack: Stack, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """As an older edge, worker or a stray client would: past the edge, into the topic."""
    publisher = KafkaPublisher(
        producer_config(Settings(kafka_bootstrap=bootstrap(stack)), log_level=0)
    )
    try:
        assert asyncio.run(publisher.publish(topic, records)) == [None] * len(records)
    finally:
        publisher.close()


def clean_event(product: str, event_id: str, i: int, now_ms: int) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "product": product,
        "source": "api",
        "dialect": "v2",
        "event_type": "old",
        "action": "cleaned",
        "canonical_name": "old_cleaned",
        "name_format": "unified",
        "occurred_at": now_ms,
        "received_at": now_ms,
        "external_id": None,
        "subject_type": "user",
        "subject_id": f"c{i}",
        "user_id": f"c{i}",
        "anonymous_id": None,
        "person_id": f"c{i}",
        "version": None,
        "properties": "{}",
        "traits": "{}",
    }

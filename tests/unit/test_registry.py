"""Confluent framing against confluent-kafka's own serde and its in-memory registry (``mock://``).

Readers teams run decode what we write (``AvroDeserializer``), we decode what their writers
write (``AvroSerializer``), and either framing decodes in one codec."""

from __future__ import annotations

import functools
import io
import json
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from hypothesis import given, settings
from hypothesis import strategies as st

from eventpipe.codec import (
    CLEAN_EVENT,
    CONFLUENT_HEADER_LEN,
    DEDUPE_NOTICE,
    IDENTITY_LINK,
    RAW_EVENT,
    REDRIVE_OUTCOME,
    REJECTED_EVENT,
    AvroCodec,
    CodecError,
)
from eventpipe.registry import IncompatibleSchema, Registry, codec_for, subjects
from eventpipe.retry import registry_http, registry_retryable
from eventpipe.settings import Settings
from eventpipe.topics import TopicNames

TOPICS = TopicNames.from_settings(Settings(topic_prefix="p."))
TOPIC_OF = {
    RAW_EVENT: TOPICS.raw,
    CLEAN_EVENT: TOPICS.clean,
    IDENTITY_LINK: TOPICS.identities,
    REJECTED_EVENT: TOPICS.rejected,
    DEDUPE_NOTICE: TOPICS.rejected,
    REDRIVE_OUTCOME: TOPICS.rejected,
}
MS = 1_700_000_000_123
VALUES: dict[str, dict[str, Any]] = {
    RAW_EVENT: {
        "event_id": "evt_1",
        "dialect": "v2",
        "product": "p",
        "source": "api",
        "external_id": None,
        "received_at": MS,
        "payload": b'{"event":"a.b"}',
    },
    CLEAN_EVENT: {
        "event_id": "evt_1",
        "product": "p",
        "source": "api",
        "dialect": "v2",
        "event_type": "a",
        "action": "b",
        "canonical_name": "a.b",
        "name_format": "unified",
        "occurred_at": MS,
        "received_at": MS,
        "external_id": "x",
        "subject_type": None,
        "subject_id": None,
        "user_id": "u1",
        "anonymous_id": None,
        "person_id": "u1",
        "version": None,
        "properties": "{}",
        "traits": "{}",
    },
    IDENTITY_LINK: {
        "product": "p",
        "anonymous_id": "a1",
        "user_id": "u1",
        "linked_at": MS,
        "event_id": "evt_1",
        "status": "linked",
    },
    REJECTED_EVENT: {
        "event_id": "evt_1",
        "product": "p",
        "source": "api",
        "dialect": "v2",
        "stage": "normalize",
        "field": "event",
        "reason": "bad",
        "received_at": MS,
        "payload": b"{}",
        "external_id": None,
        "source_topic": "",
        "source_partition": -1,
        "source_offset": -1,
    },
    DEDUPE_NOTICE: {
        "event_id": "evt_1",
        "product": "p",
        "source": "api",
        "dialect": "v2",
        "external_id": "x1",
        "received_at": MS,
        "first_received_at": MS,
        "source_topic": "events.raw",
        "source_partition": 0,
        "source_offset": 7,
    },
    REDRIVE_OUTCOME: {
        "event_id": "evt_1",
        "product": "p",
        "stage": "normalize",
        "reason": "bad name",
        "outcome": "accepted",
        "detail": "",
        "redriven_at": MS,
    },
}


def mock_client() -> SchemaRegistryClient:
    return SchemaRegistryClient.new_client({"url": "mock://unit"})


def registry_codec(client: SchemaRegistryClient | None = None) -> AvroCodec:
    return AvroCodec(Registry(client or mock_client(), subjects(TOPICS)))


def ctx(record: str) -> SerializationContext:
    return SerializationContext(TOPIC_OF[record], MessageField.VALUE)


def millis(value: dict[str, Any]) -> dict[str, Any]:
    return {
        k: int(v.timestamp() * 1000) if hasattr(v, "timestamp") else v for k, v in value.items()
    }


@pytest.mark.parametrize("record", list(VALUES))
def test_avro_deserializer_reads_every_record_we_write(record: str) -> None:
    client = mock_client()
    data = registry_codec(client).encode(record, VALUES[record])
    got = AvroDeserializer(client)(data, ctx(record))
    assert millis(got) == VALUES[record]
    # topic-name strategy: the id in the header is the subject's, <topic>-value (records that
    # share a topic with another record's subject: <topic>-<record>)
    registered = client.get_latest_version(subjects(TOPICS)[record])
    assert data[:CONFLUENT_HEADER_LEN] == b"\x00" + registered.schema_id.to_bytes(4, "big")


@settings(max_examples=50, deadline=None)
@given(
    event_id=st.text(max_size=40),
    external_id=st.none() | st.text(max_size=100),
    received_at=st.integers(min_value=-(2**62), max_value=2**62),
    payload=st.binary(max_size=200),
)
def test_fast_raw_encoder_writes_avro_serializers_bytes(
    event_id: str, external_id: str | None, received_at: int, payload: bytes
) -> None:
    """The edge's hand-written encoder, under Confluent framing, against Confluent's writer."""
    _, codec = _shared()
    value = {**VALUES[RAW_EVENT], "event_id": event_id, "external_id": external_id}
    value |= {"received_at": received_at, "payload": payload}
    ours = codec.raw_encoder("v2", "p", "api", received_at)(event_id, external_id, payload)
    assert ours == _raw_serializer()(value, ctx(RAW_EVENT))


@functools.cache
def _shared() -> tuple[SchemaRegistryClient, AvroCodec]:
    client = mock_client()
    return client, registry_codec(client)


@functools.cache
def _raw_serializer() -> AvroSerializer:
    client, codec = _shared()
    schema = codec._newest[RAW_EVENT].text.decode()
    conf = {"auto.register.schemas": False, "use.latest.version": True}
    return AvroSerializer(client, schema, conf=conf)


def test_either_framing_decodes_and_both_go_in_one_container() -> None:
    plain, framed = AvroCodec(), registry_codec()
    value = VALUES[CLEAN_EVENT]
    messages = [plain.encode(CLEAN_EVENT, value), framed.encode(CLEAN_EVENT, value)]
    assert messages[0][:2] == b"\xc3\x01" and messages[1][:1] == b"\x00"
    for m in messages:
        assert framed.decode(m, millis=True) == (CLEAN_EVENT, value)
        assert framed.is_newest(CLEAN_EVENT, m)
        assert not framed.is_newest(RAW_EVENT, m)
    # the sink's fast path: each message loses its own header
    back = list(fastavro.reader(io.BytesIO(framed.container(CLEAN_EVENT, messages))))
    assert [millis(r) for r in back] == [value, value]


def test_confluent_framing_without_a_registry_names_the_setting() -> None:
    data = registry_codec().encode(RAW_EVENT, VALUES[RAW_EVENT])
    with pytest.raises(CodecError, match="EVENTPIPE_SCHEMA_REGISTRY_URL"):
        AvroCodec().decode(data)
    assert not AvroCodec().is_newest(RAW_EVENT, data)


def test_an_unknown_schema_id_is_a_codec_error() -> None:
    codec = registry_codec()
    with pytest.raises(CodecError, match="schema id 99"):
        codec.decode(b"\x00\x00\x00\x00\x63" + b"\x02")
    with pytest.raises(CodecError):
        codec.decode(b"\x00\x00\x00")


def test_a_newer_writers_version_is_read_with_our_newest() -> None:
    """A producer with a v2 of CleanEvent (a field we do not know) registered it; we read it."""
    client = mock_client()
    codec = registry_codec(client)
    v2 = json.loads(codec._newest[CLEAN_EVENT].text)
    v2["fields"].append({"name": "plan", "type": "string", "default": "free"})
    their = AvroSerializer(client, json.dumps(v2))  # auto-registers under the topic's subject
    data = their({**VALUES[CLEAN_EVENT], "plan": "pro"}, ctx(CLEAN_EVENT))
    assert codec.decode(data, millis=True) == (CLEAN_EVENT, VALUES[CLEAN_EVENT])
    assert not codec.is_newest(CLEAN_EVENT, data), "not our schema: decoded, not passed on"


def test_a_schema_that_evolves_is_checked_backward_before_it_is_registered() -> None:
    client = mock_client()
    text = registry_codec(client)._newest[CLEAN_EVENT].text.decode()
    subject = f"{TOPICS.clean}-value"
    registry = Registry(client, {CLEAN_EVENT: subject})
    v2 = json.loads(text)
    v2["fields"].append({"name": "plan", "type": "string"})  # no default: old records lack it
    with pytest.raises(IncompatibleSchema, match=r"BACKWARD.*CleanEvent\.plan"):
        registry.register({CLEAN_EVENT: json.dumps(v2)})
    assert client.get_versions(subject) == [1], "nothing was registered"
    v2["fields"][-1]["default"] = "free"
    new_id = registry.register({CLEAN_EVENT: json.dumps(v2)})[CLEAN_EVENT]
    assert client.get_latest_version(subject).schema_id == new_id
    assert sorted(client.get_versions(subject)) == [1, 2]
    # registering again gets the same id back, without a new version
    assert registry.register({CLEAN_EVENT: json.dumps(v2)})[CLEAN_EVENT] == new_id


def test_processes_registering_in_one_order_get_the_same_ids_from_separate_mocks() -> None:
    """What lets mock:// stand in for a registry shared by a pipeline's processes (tests only):
    each process has its own in-memory store, and the ids agree because the order does."""
    ids = [registry_codec()._header for _ in range(2)]
    assert ids[0] == ids[1]
    assert Registry(mock_client(), subjects(TOPICS)).client is not None


def test_a_record_without_a_subject_stops_the_codec_rather_than_write_another_framing() -> None:
    partial = {k: v for k, v in subjects(TOPICS).items() if k != IDENTITY_LINK}
    with pytest.raises(RuntimeError, match="IdentityLink"):
        AvroCodec(Registry(mock_client(), partial))


def test_codec_for_settings() -> None:
    assert AvroCodec().encode(RAW_EVENT, VALUES[RAW_EVENT])[:2] == b"\xc3\x01"
    plain = codec_for(Settings())
    assert plain.encode(RAW_EVENT, VALUES[RAW_EVENT])[:2] == b"\xc3\x01"
    framed = codec_for(Settings(schema_registry_url="mock://settings"))
    assert framed.encode(RAW_EVENT, VALUES[RAW_EVENT])[:1] == b"\x00"
    with pytest.raises(TypeError, match="codec_for"):
        AvroCodec("http://registry:8081")  # type: ignore[arg-type]


def test_registry_failures_split_retryable_and_final() -> None:
    assert registry_retryable(SchemaRegistryError(503, 50003, "unavailable"))
    assert registry_retryable(SchemaRegistryError(429, 42900, "slow down"))
    assert registry_retryable(registry_http.ConnectError("refused"))
    assert not registry_retryable(SchemaRegistryError(404, 40403, "Schema not found"))
    assert not registry_retryable(SchemaRegistryError(409, 409, "incompatible"))
    assert not registry_retryable(ValueError("x"))


def test_lookup_answers_the_registered_id_without_a_new_version() -> None:
    client = mock_client()
    registry_codec(client)
    before = {s: client.get_versions(s) for s in client.get_subjects()}
    registry_codec(client)  # a second process on the same registry, or a restart
    assert {s: client.get_versions(s) for s in client.get_subjects()} == before
    schema = Schema(AvroCodec()._newest[RAW_EVENT].text.decode(), "AVRO")
    assert client.lookup_schema(f"{TOPICS.raw}-value", schema).schema_id == 1

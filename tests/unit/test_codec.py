from __future__ import annotations

import functools
import io
import json
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventpipe.avro_fast import LENGTHS, long_bytes
from eventpipe.codec import (
    CLEAN_EVENT,
    DEDUPE_NOTICE,
    HEADER_LEN,
    IDENTITY_LINK,
    RAW_EVENT,
    REDRIVE_OUTCOME,
    REJECTED_EVENT,
    AvroCodec,
    CodecError,
)
from schemas import schema_files

RAW = {
    "event_id": "evt_x",
    "dialect": "v2",
    "product": "p",
    "source": "api",
    "external_id": "e1",
    "received_at": 1_700_000_000_123,
    "payload": b'{"event":"a.b", "x": "\xc3\xa9"}',
}


def test_raw_event_round_trip_keeps_the_payload_bytes() -> None:
    codec = AvroCodec()
    value = RAW
    data = codec.encode(RAW_EVENT, value)
    assert data[:2] == b"\xc3\x01"
    name, back = codec.decode(data)
    assert name == RAW_EVENT
    assert back["payload"] == value["payload"]
    assert int(back["received_at"].timestamp() * 1000) == value["received_at"]


def test_single_object_header_is_the_spec_fingerprint() -> None:
    # Avro spec: the CRC-64-AVRO fingerprint of "string" is 0x8F014872634503C7, little-endian.
    pcf = fastavro.schema.to_parsing_canonical_form("string")
    assert fastavro.schema.fingerprint(pcf, "CRC-64-AVRO") == "c70345637248018f"


@pytest.mark.parametrize("data", [b"", b"\x00\x00\x00\x00\x01", b"\xc3\x01" + b"\x00" * 8 + b"x"])
def test_garbage_is_a_codec_error(data: bytes) -> None:
    with pytest.raises(CodecError):
        AvroCodec().decode(data)


def test_every_shipped_schema_parses_and_later_versions_read_earlier_ones() -> None:
    by_name: dict[str, list[dict[str, object]]] = {}
    for path in schema_files():
        raw = json.loads(path.read_text())
        fastavro.parse_schema(raw)
        by_name.setdefault(raw["name"], []).append(raw)
    assert {"RawEvent", "CleanEvent", "RejectedEvent", "IdentityLink"} <= by_name.keys()
    for versions in by_name.values():
        newest = fastavro.parse_schema(versions[-1])
        for old in versions:
            # backward compatibility: every field the newest adds has a default
            old_fields = {f["name"] for f in old["fields"]}  # type: ignore[index]
            for f in versions[-1]["fields"]:  # type: ignore[union-attr]
                assert f["name"] in old_fields or "default" in f, f
        assert newest


def test_millis_decoding_keeps_timestamps_as_integers() -> None:
    codec = AvroCodec()
    value = RAW
    _, back = codec.decode(codec.encode(RAW_EVENT, value), millis=True)
    assert back == value


def test_container_holds_the_bodies_any_avro_reader_reads_back() -> None:
    """The sink's fast path: bodies copied into an object container, never decoded."""
    codec = AvroCodec()
    values = [{**RAW, "event_id": f"evt_{i}", "received_at": 1_700_000_000_000 + i} for i in (1, 2)]
    messages = [codec.encode(RAW_EVENT, v) for v in values]
    assert all(codec.is_newest(RAW_EVENT, m) for m in messages)
    assert not codec.is_newest(CLEAN_EVENT, messages[0])
    assert not codec.is_newest(RAW_EVENT, b"\x00" + messages[0][1:])
    container = io.BytesIO(codec.container(RAW_EVENT, messages))
    back: list[Any] = list(fastavro.reader(container))
    for got in back:
        got["received_at"] = int(got["received_at"].timestamp() * 1000)
    assert back == values


@given(
    event_id=st.text(max_size=40),
    external_id=st.none() | st.text(max_size=300),
    received_at=st.integers(min_value=-(2**62), max_value=2**62),
    payload=st.binary(max_size=300),
)
def test_hand_written_raw_encoder_writes_fastavros_bytes(
    event_id: str, external_id: str | None, received_at: int, payload: bytes
) -> None:
    codec = AvroCodec()
    value = {**RAW, "event_id": event_id, "external_id": external_id}
    value |= {"received_at": received_at, "payload": payload}
    assert codec._raw_header is not None, "the fast raw encoder is in use, not its fallback"
    encode = codec.raw_encoder(value["dialect"], value["product"], value["source"], received_at)
    encoded = encode(event_id, external_id, payload)
    assert encoded[HEADER_LEN:] == _fastavro_bytes(RAW_EVENT, value)
    assert encoded[:HEADER_LEN] == codec.encode(RAW_EVENT, value)[:HEADER_LEN]


def _fastavro_bytes(record: str, value: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, _newest_schema(record), value)
    return buf.getvalue()


@functools.cache
def _newest_schema(record: str) -> Any:
    """The newest shipped schema of ``record`` (full name), as fastavro parses it."""
    versions: dict[int, Any] = {}
    for path in schema_files():
        raw = json.loads(path.read_text())
        if f"{raw['namespace']}.{raw['name']}" == record:
            versions[int(path.name.removesuffix(".avsc").rpartition(".v")[2])] = raw
    return fastavro.parse_schema(versions[max(versions)])


_FIELD_VALUES: dict[str, Any] = {
    '"string"': st.text(max_size=300),
    '["null", "string"]': st.none() | st.text(max_size=300),
    '"bytes"': st.binary(max_size=300),
    '{"type": "long", "logicalType": "timestamp-millis"}': st.integers(-(2**63), 2**63 - 1),
    '"long"': st.integers(-(2**63), 2**63 - 1),
}


@pytest.mark.parametrize(
    "record",
    [RAW_EVENT, CLEAN_EVENT, REJECTED_EVENT, IDENTITY_LINK, DEDUPE_NOTICE, REDRIVE_OUTCOME],
)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_flat_encoder_writes_fastavros_bytes_for_every_record(
    record: str, data: st.DataObject
) -> None:
    codec = AvroCodec()
    fields = json.loads(codec._newest[record].text)["fields"]
    value = {f["name"]: data.draw(_FIELD_VALUES[json.dumps(f["type"])]) for f in fields}
    flat = codec._flat[record]
    assert flat is not None, "every shipped schema is flat"
    # the flat encoder itself: encode() would hide a failing one behind its fastavro fallback
    assert flat(value) == _fastavro_bytes(record, value)
    assert codec.encode(record, value)[HEADER_LEN:] == flat(value)


def _fastavro_schemaless(schema: Any, value: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), value)
    return buf.getvalue()


@settings(max_examples=500, deadline=None)
@given(n=st.integers(-(2**63), 2**63 - 1) | st.sampled_from([0, -1, 63, -64, 64, -65, 2**63 - 1]))
def test_long_bytes_writes_fastavros_long(n: int) -> None:
    """Every varint size, 1 to 10 bytes, both signs."""
    assert long_bytes(n) == _fastavro_schemaless("long", n)


@settings(max_examples=60, deadline=None)
@given(
    size=st.sampled_from([0, 1, 63, 64, len(LENGTHS) - 1, len(LENGTHS), 70_000])
    | st.integers(0, 3 * len(LENGTHS)),
    text=st.booleans(),
)
def test_flat_encoder_writes_fastavros_lengths_past_the_table(size: int, text: bool) -> None:
    """A string or bytes past the cached length prefixes (``LENGTHS``) still writes exactly."""
    codec = AvroCodec()
    value = {**RAW, "event_id": "é" * size if text else "e", "payload": b"x" * size}
    assert codec._flat[RAW_EVENT] is not None
    assert codec._flat[RAW_EVENT](value) == _fastavro_bytes(RAW_EVENT, value)


def test_flat_encoder_names_the_field_it_cannot_write() -> None:
    codec = AvroCodec()
    flat = codec._flat[CLEAN_EVENT]
    assert flat is not None
    value = {**clean_value(), "occurred_at": datetime(2026, 5, 1, tzinfo=UTC)}
    with pytest.raises(TypeError, match="occurred_at: not an int64"):
        flat(value)
    with pytest.raises(TypeError, match="user_id: not a str or null"):
        flat({**clean_value(), "user_id": 5})
    with pytest.raises(KeyError, match="traits"):
        flat({k: v for k, v in clean_value().items() if k != "traits"})


def clean_value() -> dict[str, Any]:
    fields = json.loads(AvroCodec()._newest[CLEAN_EVENT].text)["fields"]
    return {f["name"]: (0 if "long" in json.dumps(f["type"]) else "x") for f in fields}


def test_flat_encoder_leaves_what_it_cannot_write_exactly_to_fastavro() -> None:
    codec = AvroCodec()
    value = {**RAW, "received_at": datetime(2026, 5, 1, tzinfo=UTC)}  # a datetime: fastavro's
    assert codec.encode(RAW_EVENT, value)[HEADER_LEN:] == _fastavro_bytes(RAW_EVENT, value)
    with pytest.raises(Exception):  # noqa: B017  # fastavro's own error, whichever type
        codec.encode(RAW_EVENT, {**RAW, "received_at": 2**63})  # over int64
    with pytest.raises(Exception):  # noqa: B017
        codec.encode(RAW_EVENT, {**RAW, "event_id": None})

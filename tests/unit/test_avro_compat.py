"""BACKWARD compatibility rules (``eventpipe.avro_compat``), each checked against fastavro: what the
rules call compatible, fastavro reads; what they refuse, it fails to read."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
import pytest

from eventpipe.avro_compat import backward_problems
from schemas import schema_files


def record(*fields: dict[str, Any], name: str = "R") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "t", "fields": list(fields)}


def field(name: str, type_: Any, **kw: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **kw}


def reads(reader: Any, writer: Any, value: Any) -> bool:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(writer), value)
    buf.seek(0)
    try:
        fastavro.schemaless_reader(
            buf, fastavro.parse_schema(writer), fastavro.parse_schema(reader)
        )
    except Exception:  # fastavro's resolution errors are of several types
        return False
    return True


V1 = record(field("a", "string"), field("n", "int"))

CASES = [
    # (reader, writer, a value of the writer, compatible)
    (record(field("a", "string"), field("n", "int"), field("b", "long", default=0)), V1, True),
    (record(field("a", "string"), field("n", "int"), field("b", "long")), V1, False),
    (record(field("a", "string")), V1, True),  # a removed field is skipped
    (record(field("a", "string"), field("n", "long")), V1, True),  # int -> long
    (record(field("a", "string"), field("n", "double")), V1, True),
    (record(field("a", "string"), field("n", "string")), V1, False),
    (record(field("a", "bytes"), field("n", "int")), V1, True),  # string -> bytes
    (record(field("a", ["null", "string"]), field("n", "int")), V1, True),  # into a union
    (record(field("a", "string"), field("n", "int"), name="Other"), V1, False),
]


@pytest.mark.parametrize(("reader", "writer", "compatible"), CASES)
def test_rules_agree_with_fastavro(reader: Any, writer: Any, compatible: bool) -> None:
    problems = backward_problems(reader, writer)
    assert (problems == []) is compatible, problems
    assert reads(reader, writer, {"a": "x", "n": 7}) is compatible


def test_a_union_writer_needs_every_branch_readable() -> None:
    writer = record(field("a", ["null", "string"]))
    assert backward_problems(record(field("a", "string")), writer) != []
    assert not reads(record(field("a", "string")), writer, {"a": None})
    assert backward_problems(record(field("a", ["string", "null"])), writer) == []


def test_enum_symbols_and_nested_types() -> None:
    enum = {"type": "enum", "name": "E", "symbols": ["A", "B"]}
    writer = record(field("e", enum), field("xs", {"type": "array", "items": "int"}))
    fewer = {"type": "enum", "name": "E", "symbols": ["A"]}
    reader = record(field("e", fewer), field("xs", {"type": "array", "items": "long"}))
    assert backward_problems(reader, writer) == ["R.e: symbols ['B'] are not in the reader's enum"]
    reader_ok = record(field("e", enum), field("xs", {"type": "array", "items": "long"}))
    assert backward_problems(reader_ok, writer) == []
    assert reads(reader_ok, writer, {"e": "B", "xs": [1, 2]})


def test_problems_name_the_field() -> None:
    reader = record(field("a", "string"), field("n", "int"), field("plan", "string"))
    assert backward_problems(reader, V1) == ["R.plan: a new field without a default"]


def test_logical_types_resolve_as_their_underlying_type() -> None:
    millis = {"type": "long", "logicalType": "timestamp-millis"}
    assert backward_problems(record(field("t", millis)), record(field("t", "long"))) == []
    assert backward_problems(record(field("t", "long")), record(field("t", millis))) == []


def test_every_shipped_version_reads_every_earlier_one() -> None:
    by_name: dict[str, list[tuple[int, Any]]] = {}
    for path in schema_files():
        raw = json.loads(path.read_text())
        version = int(path.name.removesuffix(".avsc").rpartition(".v")[2])
        by_name.setdefault(raw["name"], []).append((version, raw))
    for versions in by_name.values():
        versions.sort(key=lambda v: v[0])
        for i, (_, newer) in enumerate(versions):
            for _, older in versions[:i]:
                assert backward_problems(newer, older) == []

"""Avro's binary encoding of our flat records, written in Python because fastavro's is slow here.

Why: fastavro's ``schemaless_writer`` sets itself up on every call, which made it the largest
single cost of the worker's own work (every output and rejection is encoded once) and of the
edge's (every accepted event). Only the types our shipped schemas use are written here
(``FIELD_TYPES``); a schema with any other type gets no fast encoder.

Every encoder raises ``TypeError`` on a value it would not write exactly as fastavro does (a
datetime, an int past int64, a missing or mistyped field); ``eventpipe.codec.AvroCodec.encode``
then asks fastavro, which writes it or says why not, and counts the fallback. Unit tests compare
the bytes with fastavro's for every shipped record (``tests/unit/test_codec.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _varint_writer(size: int) -> Callable[[int], bytes]:
    """The base-128 varint of a non-negative int of ``size`` bytes, unrolled: a loop over the
    bytes cost about a third more instructions per timestamp."""
    parts = [f"n >> {7 * i} & 127 | 128" for i in range(size - 1)] + [f"n >> {7 * (size - 1)}"]
    writer: Callable[[int], bytes] = eval(f"lambda n: bytes(({', '.join(parts)},))")
    return writer


_VARINT = [_varint_writer(max(size, 1)) for size in range(11)]
"""By byte count: a zig-zagged int64 takes 1 to 10 bytes (index 0 is 0's one byte)."""


def long_bytes(n: int) -> bytes:
    """Avro's long: zig-zag, then base-128 varint (``n`` within int64)."""
    n = (n << 1) ^ (n >> 63)
    return _VARINT[(n.bit_length() + 6) // 7](n)


CACHED_LENGTHS = 8192
LENGTHS = tuple(long_bytes(n) for n in range(CACHED_LENGTHS))
"""The prefix of every string or bytes shorter than 8 KiB, the lengths almost every field has."""


def length_bytes(n: int) -> bytes:
    return LENGTHS[n] if n < CACHED_LENGTHS else long_bytes(n)


# Each Avro type's rule, written once: the code that checks the value ``{x}`` and writes its
# prefix ``{p}`` and body ``{x}``, naming ``{where}`` in its error. Both the record encoders
# (every field inline) and the single-field functions below are generated from these.
_STRING = """\
    if type({x}) is not str:
        raise TypeError({where!r} "not a str")
    {x} = {x}.encode()
    {p} = length_bytes(len({x}))"""
_OPTIONAL_STRING = """\
    if {x} is None:
        {p}, {x} = b"\\x00", b""
    elif type({x}) is not str:
        raise TypeError({where!r} "not a str or null")
    else:
        {x} = {x}.encode()
        {p} = b"\\x02" + length_bytes(len({x}))"""
_BYTES = """\
    if type({x}) is not bytes:
        raise TypeError({where!r} "not bytes")
    {p} = length_bytes(len({x}))"""
_LONG = """\
    if type({x}) is not int or not INT64_MIN <= {x} <= INT64_MAX:
        raise TypeError({where!r} "not an int64")
    {p}, {x} = b"", long_bytes({x})"""

FIELD_TYPES: dict[str, str] = {
    '"string"': _STRING,
    '["null", "string"]': _OPTIONAL_STRING,
    '"bytes"': _BYTES,
    '"long"': _LONG,
    '{"type": "long", "logicalType": "timestamp-millis"}': _LONG,
}
"""The Avro types a flat record's fields may have (as ``json.dumps`` writes them), each with its
rule; only the exact Python types are written."""

_SCOPE: dict[str, Any] = {
    "length_bytes": length_bytes,
    "long_bytes": long_bytes,
    "INT64_MIN": INT64_MIN,
    "INT64_MAX": INT64_MAX,
}


def _compiled(source: str, name: str) -> Callable[[Any], bytes]:
    scope = dict(_SCOPE)
    exec(compile(source, f"<avro encoder of {name}>", "exec"), scope)
    encoder: Callable[[Any], bytes] = scope["encode"]
    return encoder


def _field_function(rule: str) -> Callable[[Any], bytes]:
    """One value of one type, for the fields :meth:`AvroCodec.raw_encoder` writes itself."""
    body = rule.format(x="x", p="p", where="")
    return _compiled(f"def encode(x):\n{body}\n    return p + x", "a field")


str_field = _field_function(_STRING)
optional_str_field = _field_function(_OPTIONAL_STRING)
bytes_field = _field_function(_BYTES)
long_field = _field_function(_LONG)


def flat_encoder(schema_text: bytes | str) -> Callable[[dict[str, Any]], bytes] | None:
    """A body encoder for a record whose fields all have a type of ``FIELD_TYPES``, else None.

    The encoder is one generated function, every field inline: a function call per field was
    a third of its instructions (``python -m bench.instructions rules``, before and after).
    """
    schema = json.loads(schema_text)
    body, parts = [], []
    for i, field in enumerate(schema["fields"]):
        rule = FIELD_TYPES.get(json.dumps(field["type"]))
        if rule is None:
            return None
        body.append(f"    x{i} = v[{field['name']!r}]")
        body.append(rule.format(x=f"x{i}", p=f"p{i}", where=f"{field['name']}: "))
        parts += [f"p{i}", f"x{i}"]
    source = "def encode(v):\n" + "\n".join(body) + f"\n    return b''.join(({', '.join(parts)},))"
    return _compiled(source, schema["name"])

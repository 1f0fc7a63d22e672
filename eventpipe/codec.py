"""The Avro codec: the only code that turns records into Kafka bytes and back.

Framing is Avro single-object encoding (Avro specification: ``C3 01``, then the 8-byte
little-endian CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form, then the
binary body). Writer schemas are resolved against every version shipped in ``schemas/``, and a
record is read with the newest version of its name, so old records in ``events.raw`` stay readable
after a schema evolves.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import fastavro
import fastavro.schema

from schemas import schema_files

MAGIC = b"\xc3\x01"
HEADER_LEN = 10


class CodecError(ValueError):
    """Bytes that are not a record of a known schema; carries what was wrong."""


@dataclass(frozen=True)
class _Schema:
    name: str
    version: int
    parsed: Any
    parsed_millis: Any
    """The same schema read without logical types: timestamp-millis stay integers."""
    fingerprint: bytes


def _without_logical_types(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_without_logical_types(s) for s in schema]
    if isinstance(schema, dict):
        if "logicalType" in schema and schema.get("type") in ("long", "int"):
            return schema["type"]
        return {k: _without_logical_types(v) for k, v in schema.items()}
    return schema


def _load() -> list[_Schema]:
    out = []
    for path in schema_files():
        stem = path.name.removesuffix(".avsc")  # e.g. raw_event.v1
        _, _, v = stem.rpartition(".v")
        raw = json.loads(path.read_text())
        parsed = fastavro.parse_schema(raw)
        millis = fastavro.parse_schema(_without_logical_types(raw))
        pcf = fastavro.schema.to_parsing_canonical_form(raw)
        fp = bytes.fromhex(fastavro.schema.fingerprint(pcf, "CRC-64-AVRO"))
        out.append(_Schema(f"{raw['namespace']}.{raw['name']}", int(v), parsed, millis, fp))
    return out


class AvroCodec:
    """Encode by record name (newest version), decode by fingerprint (any shipped version)."""

    def __init__(self, registry_url: str | None = None) -> None:
        if registry_url:
            # Confluent framing needs a registry client; until it ships, refuse loudly rather
            # than write bytes that registry-aware consumers would misread.
            raise NotImplementedError(
                "EVENTPIPE_SCHEMA_REGISTRY_URL is set, but Confluent framing is not implemented "
                "yet; unset it to use Avro single-object encoding"
            )
        schemas = _load()
        self._by_fp = {s.fingerprint: s for s in schemas}
        self._newest: dict[str, _Schema] = {}
        for s in schemas:
            cur = self._newest.get(s.name)
            if cur is None or s.version > cur.version:
                self._newest[s.name] = s

    def schema(self, record: str) -> Any:
        return self._newest[record].parsed

    def encode(self, record: str, value: dict[str, Any]) -> bytes:
        """``record`` is the full name, e.g. ``eventpipe.RawEvent``."""
        s = self._newest[record]
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(s.fingerprint)
        fastavro.schemaless_writer(buf, s.parsed, value)
        return buf.getvalue()

    def decode(self, data: bytes, *, millis: bool = False) -> tuple[str, dict[str, Any]]:
        """Return (record name, value) read with the newest schema of that name.

        ``millis=True`` leaves timestamp-millis fields as integers: fastavro's conversion to
        tz-aware datetimes is half of its decode time, and the sink needs no datetime from it.
        """
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise CodecError("not Avro single-object encoded (missing C3 01 header)")
        writer = self._by_fp.get(bytes(data[2:HEADER_LEN]))
        if writer is None:
            raise CodecError(f"unknown schema fingerprint {bytes(data[2:HEADER_LEN]).hex()}")
        reader = self._newest[writer.name]
        writer_schema = writer.parsed_millis if millis else writer.parsed
        reader_schema = reader.parsed_millis if millis else reader.parsed
        try:
            value = fastavro.schemaless_reader(
                io.BytesIO(data[HEADER_LEN:]),
                writer_schema,
                None if reader is writer else reader_schema,
            )
        except Exception as exc:  # fastavro raises several types on corrupt input
            raise CodecError(f"corrupt {writer.name} v{writer.version} body: {exc}") from exc
        if not isinstance(value, dict):
            raise CodecError(f"{writer.name} did not decode to a record")
        return writer.name, value


RAW_EVENT = "eventpipe.RawEvent"
CLEAN_EVENT = "eventpipe.CleanEvent"
REJECTED_EVENT = "eventpipe.RejectedEvent"
IDENTITY_LINK = "eventpipe.IdentityLink"

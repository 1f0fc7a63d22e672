"""The Avro codec: the only code that turns records into Kafka bytes and back.

Two framings of the same Avro binary body:

* Avro single-object encoding (the Avro specification: ``C3 01``, then the 8-byte little-endian
  CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form), resolved against the
  versions shipped in ``schemas/``: no registry process is needed. Written without a registry.
* Confluent's wire format (``00``, then the 4-byte big-endian schema id), resolved through a
  Confluent Schema Registry (``eventpipe.registry``). Written when a registry is configured.

Decoding takes either, whichever the codec writes, so a topic can switch framing while records
of both are in it; a Confluent-framed record needs a registry to be read. A record is read with
the newest shipped version of its name, so old records in ``events.raw`` stay readable after a
schema evolves (and so do records of a version a newer producer registered).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import fastavro
import fastavro.schema
from prometheus_client import Counter

from eventpipe.avro_fast import (
    bytes_field,
    flat_encoder,
    long_bytes,
    long_field,
    optional_str_field,
    str_field,
)
from schemas import schema_files

MAGIC = b"\xc3\x01"
HEADER_LEN = 10
CONFLUENT_MAGIC = b"\x00"
CONFLUENT_HEADER_LEN = 5


ENCODE_FALLBACKS = Counter(
    "eventpipe_avro_encode_fallbacks_total",
    "Records the flat encoder could not write, handed to fastavro (which writes them or raises)",
    ["record", "reason"],
)
"""Counted, not swallowed: a rise means the fast path no longer covers what is sent."""


class CodecError(ValueError):
    """Bytes that are not a record of a known schema; carries what was wrong."""


class SchemaRegistry(Protocol):
    """What the codec needs of a schema registry (``eventpipe.registry.Registry``)."""

    def register(self, schemas: dict[str, str]) -> dict[str, int]:
        """Schema ids of the schemas (JSON text by record name), registered if need be."""
        ...

    def writer_schema(self, schema_id: int) -> str:
        """The schema (JSON text) of an id; raises ``CodecError`` when there is none."""
        ...


@dataclass(frozen=True)
class _Schema:
    name: str
    version: int
    parsed: Any
    parsed_millis: Any
    """The same schema read without logical types: timestamp-millis stay integers."""
    fingerprint: bytes
    text: bytes
    """The schema as JSON, for an object container's header."""


def _without_logical_types(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_without_logical_types(s) for s in schema]
    if isinstance(schema, dict):
        if "logicalType" in schema and schema.get("type") in ("long", "int"):
            return schema["type"]
        return {k: _without_logical_types(v) for k, v in schema.items()}
    return schema


def _schema(raw: Any, version: int) -> _Schema:
    parsed = fastavro.parse_schema(raw)
    millis = fastavro.parse_schema(_without_logical_types(raw))
    pcf = fastavro.schema.to_parsing_canonical_form(raw)
    fp = bytes.fromhex(fastavro.schema.fingerprint(pcf, "CRC-64-AVRO"))
    name = raw["name"] if "." in raw["name"] else f"{raw.get('namespace', '')}.{raw['name']}"
    return _Schema(name, version, parsed, millis, fp, json.dumps(raw).encode())


def _load() -> list[_Schema]:
    out = []
    for path in schema_files():
        stem = path.name.removesuffix(".avsc")  # e.g. raw_event.v1
        _, _, v = stem.rpartition(".v")
        out.append(_schema(json.loads(path.read_text()), int(v)))
    return out


_RAW_LAYOUT = (
    ("event_id", "string"),
    ("dialect", "string"),
    ("product", "string"),
    ("source", "string"),
    ("external_id", ["null", "string"]),
    ("received_at", {"type": "long", "logicalType": "timestamp-millis"}),
    ("payload", "bytes"),
)
"""The RawEvent fields :meth:`AvroCodec.raw_encoder` writes in this order."""


def _container_header(schema: _Schema, sync: bytes) -> bytes:
    meta = ((b"avro.schema", schema.text), (b"avro.codec", b"null"))
    parts = [b"Obj\x01", long_bytes(len(meta))]
    for key, value in meta:
        parts += [long_bytes(len(key)), key, long_bytes(len(value)), value]
    return b"".join([*parts, b"\x00", sync])


class AvroCodec:
    """Encode by record name (newest version), decode by fingerprint or schema id.

    Without ``registry`` it writes single-object encoding; with one, Confluent framing, with
    the newest schema of each record registered (``SchemaRegistry.register``) when the codec
    is made, so a process that cannot register fails at its start, not at its first record.
    Build it from settings with ``eventpipe.registry.codec_for``.
    """

    def __init__(self, registry: SchemaRegistry | None = None) -> None:
        if isinstance(registry, str):
            raise TypeError("AvroCodec takes a registry client: eventpipe.registry.codec_for")
        schemas = _load()
        self._by_fp = {s.fingerprint: s for s in schemas}
        self._newest: dict[str, _Schema] = {}
        for s in schemas:
            cur = self._newest.get(s.name)
            if cur is None or s.version > cur.version:
                self._newest[s.name] = s
        self._registry = registry
        self._by_id: dict[bytes, _Schema] = {}
        """Writer schemas by the 4 bytes of their id, as resolved so far (ids never change)."""
        self._header = {name: MAGIC + s.fingerprint for name, s in self._newest.items()}
        if registry is not None:
            texts = {name: s.text.decode() for name, s in self._newest.items()}
            for name, schema_id in registry.register(texts).items():
                id_bytes = schema_id.to_bytes(4, "big")
                self._by_id[id_bytes] = self._newest[name]
                self._header[name] = CONFLUENT_MAGIC + id_bytes
        self._flat = {name: flat_encoder(s.text) for name, s in self._newest.items()}
        raw = self._newest[RAW_EVENT]
        layout = tuple((f["name"], f["type"]) for f in json.loads(raw.text)["fields"])
        self._raw_header = self._header[RAW_EVENT] if layout == _RAW_LAYOUT else None

    def encode(self, record: str, value: dict[str, Any]) -> bytes:
        """``record`` is the full name, e.g. ``eventpipe.RawEvent``."""
        header = self._header[record]
        flat = self._flat[record]
        if flat is not None:
            try:
                return header + flat(value)
            except Exception as exc:  # fastavro writes it, or says exactly why not
                ENCODE_FALLBACKS.labels(record, type(exc).__name__).inc()
        buf = io.BytesIO()
        buf.write(header)
        fastavro.schemaless_writer(buf, self._newest[record].parsed, value)
        return buf.getvalue()

    def raw_encoder(
        self, dialect: str, product: str, source: str, received_at_ms: int
    ) -> Callable[[str, str | None, bytes], bytes]:
        """``encode(RAW_EVENT, ...)`` for the events of one request, which share these fields:
        ``encode(event_id, external_id, payload)``.

        The flat encoder's field encoders, with the shared fields encoded once per request: the
        edge encodes every event it accepts, and encoding every field of every event was ~30%
        of the batch handler's time. Used only while the newest RawEvent schema has exactly
        ``_RAW_LAYOUT`` (a unit test compares the bytes with fastavro's).
        """
        if self._raw_header is None:

            def slow(event_id: str, external_id: str | None, payload: bytes) -> bytes:
                value = {
                    "event_id": event_id,
                    "dialect": dialect,
                    "product": product,
                    "source": source,
                    "external_id": external_id,
                    "received_at": received_at_ms,
                    "payload": payload,
                }
                return self.encode(RAW_EVENT, value)

            return slow
        header = self._raw_header
        shared = str_field(dialect) + str_field(product) + str_field(source)
        received = long_field(received_at_ms)
        join = b"".join

        def encode(event_id: str, external_id: str | None, payload: bytes) -> bytes:
            fields = (str_field(event_id), shared, optional_str_field(external_id), received)
            return join((header, *fields, bytes_field(payload)))

        return encode

    def is_newest(self, record: str, data: bytes) -> bool:
        """True when ``data`` is framed (either way) as a ``record`` of the newest schema, body
        unchecked. A schema id not resolved yet counts as not newest: decoding resolves it."""
        if data[:2] == MAGIC:
            return data[2:HEADER_LEN] == self._newest[record].fingerprint
        return data[:1] == CONFLUENT_MAGIC and self._by_id.get(data[1:5]) is self._newest[record]

    def container(self, record: str, messages: Sequence[bytes]) -> bytes:
        """An Avro object container of the ``messages``' bodies, which are not decoded.

        Why: ClickHouse reads a container (``FORMAT Avro``) in C++, so the sink hands it the
        bytes as they came from Kafka instead of decoding each record in Python (its main cost).
        Every message must pass :meth:`is_newest` (either framing: each loses its own header);
        a corrupt body fails the reader, not this.
        """
        schema = self._newest[record]
        sync = os.urandom(16)
        if self._registry is None:  # is_newest passed: every one is single-object encoded
            body = b"".join([m[HEADER_LEN:] for m in messages])
        else:
            body = b"".join(
                [m[HEADER_LEN if m[0] == 0xC3 else CONFLUENT_HEADER_LEN :] for m in messages]
            )
        return b"".join(
            [
                _container_header(schema, sync),
                long_bytes(len(messages)),
                long_bytes(len(body)),
                body,
                sync,
            ]
        )

    def decode(self, data: bytes, *, millis: bool = False) -> tuple[str, dict[str, Any]]:
        """Return (record name, value) read with the newest schema of that name.

        ``millis=True`` leaves timestamp-millis fields as integers: fastavro's conversion to
        tz-aware datetimes is half of its decode time, and the sink needs no datetime from it.
        """
        if data[:2] == MAGIC and len(data) >= HEADER_LEN:
            writer = self._by_fp.get(bytes(data[2:HEADER_LEN]))
            if writer is None:
                raise CodecError(f"unknown schema fingerprint {bytes(data[2:HEADER_LEN]).hex()}")
            body = data[HEADER_LEN:]
        elif data[:1] == CONFLUENT_MAGIC and len(data) >= CONFLUENT_HEADER_LEN:
            writer = self._writer_by_id(bytes(data[1:CONFLUENT_HEADER_LEN]))
            body = data[CONFLUENT_HEADER_LEN:]
        else:
            raise CodecError(
                "not Avro single-object encoded (missing C3 01 header) nor Confluent framed "
                "(00 and a schema id)"
            )
        reader = self._newest[writer.name]
        writer_schema = writer.parsed_millis if millis else writer.parsed
        reader_schema = reader.parsed_millis if millis else reader.parsed
        try:
            value = fastavro.schemaless_reader(
                io.BytesIO(body),
                writer_schema,
                None if reader is writer else reader_schema,
            )
        except Exception as exc:  # fastavro raises several types on corrupt input
            raise CodecError(f"corrupt {writer.name} v{writer.version} body: {exc}") from exc
        if not isinstance(value, dict):
            raise CodecError(f"{writer.name} did not decode to a record")
        return writer.name, value

    def _writer_by_id(self, id_bytes: bytes) -> _Schema:
        """The writer schema of a Confluent schema id: a shipped one when the registry's text is
        one of them (same fingerprint), else the registry's, read with our newest of its name.

        Only an id no process of ours registered reaches the registry here (once: cached).
        """
        writer = self._by_id.get(id_bytes)
        if writer is not None:
            return writer
        schema_id = int.from_bytes(id_bytes, "big")
        if self._registry is None:
            raise CodecError(
                f"Confluent framed (schema id {schema_id}) but no schema registry is configured "
                "(EVENTPIPE_SCHEMA_REGISTRY_URL)"
            )
        text = self._registry.writer_schema(schema_id)
        try:
            raw = json.loads(text)
            found = _schema(raw, 0)
        except Exception as exc:  # not JSON, or not a schema fastavro parses
            raise CodecError(f"schema id {schema_id} is no Avro record schema: {exc}") from exc
        writer = self._by_fp.get(found.fingerprint, found)
        if writer.name not in self._newest:
            raise CodecError(f"schema id {schema_id} is a {writer.name}, not an eventpipe record")
        self._by_id[id_bytes] = writer
        return writer


RAW_EVENT = "eventpipe.RawEvent"
CLEAN_EVENT = "eventpipe.CleanEvent"
REJECTED_EVENT = "eventpipe.RejectedEvent"
IDENTITY_LINK = "eventpipe.IdentityLink"
DEDUPE_NOTICE = "eventpipe.DedupeNotice"
REDRIVE_OUTCOME = "eventpipe.RedriveOutcome"

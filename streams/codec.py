"""Faust codecs over ``eventpipe.codec.AvroCodec``: topic values are plain dicts in the agents.

One codec is registered per record name (``CODEC_NAMES``), so a topic's ``value_serializer``
says which record it carries, and encoding needs no record name next to each value.

Decoding never raises. Faust answers a value that fails to decode by throwing into the stream,
which would crash the agent on one bad record; instead ``_loads`` returns ``Undecodable`` (the
bytes and the reason), and the agent sends it to ``events.rejected`` like any invalid event.

The topic the agents read has a schema of its own (:class:`RecordSchema`), not Faust's registry:
a record without a value (a tombstone a stray producer wrote) came out of the registry as
``None``, which crashed the agent and left its partition's commits stuck at that offset for good;
and the registry's layers per record (codec lookup, settings reads, a check for a Faust model in
every dict) cost more of the worker's CPU than the Avro decode they wrap.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from faust import Schema
from faust.serializers import codecs
from faust.types import AppT, Message

from eventpipe import suppression
from eventpipe.codec import (
    CLEAN_EVENT,
    DEDUPE_NOTICE,
    IDENTITY_LINK,
    RAW_EVENT,
    REJECTED_EVENT,
    AvroCodec,
    CodecError,
)
from eventpipe.event import to_ms
from eventpipe.ids import derived_event_id

CODEC_NAMES: dict[str, str] = {
    RAW_EVENT: "eventpipe-raw",
    CLEAN_EVENT: "eventpipe-clean",
    REJECTED_EVENT: "eventpipe-rejected",
    IDENTITY_LINK: "eventpipe-identity",
    DEDUPE_NOTICE: "eventpipe-dedupe-notice",
}


class Undecodable(NamedTuple):
    """A value that is not a record of the topic's schema: kept whole so it can be rejected."""

    data: bytes
    reason: str


SOURCE_FIELDS = ("source_topic", "source_partition", "source_offset")
"""Where a raw record was read: the agent (and a replay) set these on the decoded raw record,
so every rejection and notice made of it says where to find it again."""


def mark_source(raw: dict[str, Any], topic: str, partition: int, offset: int) -> None:
    raw["source_topic"], raw["source_partition"], raw["source_offset"] = topic, partition, offset


def _source(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "source_topic": raw.get("source_topic", ""),
        "source_partition": raw.get("source_partition", -1),
        "source_offset": raw.get("source_offset", -1),
    }


def rejected(
    raw: Mapping[str, Any], stage: str, reason: str, field: str | None = None
) -> dict[str, Any]:
    """The ``RejectedEvent`` for a decoded raw record (the agent's, and the outbox's for an
    output Kafka refused). It keeps what a redrive needs to send the event again: the payload,
    its dialect, product, source, external id and receive time (``replay.redrive``)."""
    return {
        "event_id": raw["event_id"],
        "product": raw["product"],
        "source": raw["source"],
        "dialect": raw["dialect"],
        "stage": stage,
        "field": field,
        "reason": reason,
        "received_at": to_ms(raw["received_at"]),
        "payload": raw["payload"],
        "external_id": raw.get("external_id"),
        **_source(raw),
    }


def suppressed(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The ``RejectedEvent`` of a suppressed person's raw record (``eventpipe.suppression``):
    where it was read and when, nothing of what it said (no payload, no field, no external id:
    an SDK's message id can be as telling as the event). It cannot be redriven."""
    return {
        **rejected(raw, suppression.STAGE, suppression.REASON),
        "payload": b"",
        "external_id": None,
    }


def dedupe_notice(raw: Mapping[str, Any], first_received_ms: int) -> dict[str, Any]:
    """The ``DedupeNotice`` for a keyed raw record dropped as a copy of the one accepted at
    ``first_received_ms`` (whose event id it shares)."""
    return {
        "event_id": raw["event_id"],
        "product": raw["product"],
        "source": raw["source"],
        "dialect": raw["dialect"],
        "external_id": raw["external_id"],
        "received_at": to_ms(raw["received_at"]),
        "first_received_at": first_received_ms,
        **_source(raw),
    }


def rejected_undecodable(
    value: Undecodable, topic: str, partition: int, offset: int, timestamp_ms: int
) -> dict[str, Any]:
    """The ``RejectedEvent`` for bytes that are no record of their topic's schema.

    Its id is derived from the record's position, so a replay rejects it under the same id.
    """
    return {
        "event_id": derived_event_id(f"{topic}\x1f{partition}\x1f{offset}"),
        "product": "",
        "source": "",
        "dialect": "",
        "stage": "decode",
        "field": None,
        "reason": value.reason,
        "received_at": timestamp_ms,
        "payload": value.data,
        "external_id": None,
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
    }


class AvroRecordCodec(codecs.Codec):
    """Encode dicts as one Avro record; decode to a dict of that record or ``Undecodable``."""

    def __init__(self, record: str, avro: AvroCodec | None = None, **kwargs: Any) -> None:
        super().__init__(record=record, **kwargs)
        self.record = record
        self.avro = avro or AvroCodec()

    def _dumps(self, obj: Any) -> bytes:
        return self.avro.encode(self.record, obj)

    def _loads(self, s: bytes) -> Any:
        return self.read(s)

    def read(self, s: bytes | None) -> dict[str, Any] | Undecodable:
        """The record, or why the bytes are none (``None``: a record without a value)."""
        if s is None:
            return Undecodable(b"", f"no value (a tombstone), not a {self.record} record")
        try:
            # millis: timestamps stay epoch-ms integers, which is what the agents compute with
            # and what encoding takes back; fastavro's datetime conversion costs both ways.
            name, value = self.avro.decode(s, millis=True)
        except CodecError as exc:
            return Undecodable(bytes(s), str(exc))
        if name != self.record:
            return Undecodable(bytes(s), f"expected a {self.record} record, got {name}")
        return value


class RecordSchema(Schema[bytes, Any]):
    """A topic of ``record``s for an agent: the key as its bytes, the value through
    :meth:`AvroRecordCodec.read`, so every record becomes an event and none raises.

    Encoding (Faust's, unused by the agents) still goes through the registered codec."""

    def __init__(self, record: str, avro: AvroCodec | None = None) -> None:
        super().__init__(key_serializer="raw", value_serializer=CODEC_NAMES[record])
        self.codec = AvroRecordCodec(record, avro)

    def compile(self, app: AppT, **_: Any) -> Any:
        """Faust's per-record decode function (``Channel.decode``)."""
        # What app.create_event builds, its setting read once instead of once per record.
        event: Any = app.conf.Event
        read = self.codec.read

        async def decode(message: Message, *, propagate: bool = False) -> Any:
            return event(app, message.key, read(message.value), message.headers, message)

        return decode


def register_codecs(avro: AvroCodec | None = None) -> None:
    """Register one codec per record name (idempotent: the registry is a plain dict)."""
    avro = avro or AvroCodec()
    for record, name in CODEC_NAMES.items():
        codecs.register(name, AvroRecordCodec(record, avro))

"""Kafka messages as ClickHouse rows: a decoded record's row, or the sink's rejection of it.

Every row the sink inserts travels with the message it came from (an :data:`Entry`), so a row
ClickHouse refuses can still become a ``rejected_events`` row naming that message's topic,
partition and offset and holding its bytes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from confluent_kafka import Message

from eventpipe.codec import AvroCodec, CodecError
from eventpipe.event import to_ms
from sinks.clickhouse import REJECTED, TABLES_BY_RECORD, Table, timestamp_in_range

log = structlog.get_logger(__name__)

SINK_STAGE = "sink"
REASON_MAX_CHARS = 2000
"""ClickHouse's messages can quote whole expressions; a reason is for a person to read."""

Row = tuple[Any, ...]
Entry = tuple[Message, Row]
"""A row to insert and the message it was made from."""


def coordinates(msg: Message) -> tuple[str, int, int]:
    """Topic, partition, offset: always set on a consumed message without an error."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


def decode_row(codec: AvroCodec, msg: Message) -> tuple[Table, Row]:
    """Decode one message into a row of the table its record name selects, or a rejection."""
    value = msg.value()
    try:
        if value is None:
            raise CodecError("message without a value")
        record, data = codec.decode(value, millis=True)
        table = TABLES_BY_RECORD.get(record)
        if table is None:
            raise CodecError(f"{record} records are not written by the sink")
        return table, table.row(data)
    except (CodecError, ValueError, TypeError) as exc:
        return REJECTED, rejection_row(msg, f"{type(exc).__name__}: {exc}")


def rejection_row(msg: Message, reason: str, *, payload: bool = True) -> Row:
    """The sink's ``rejected_events`` row for ``msg``.

    ``payload=False`` is the last resort for a rejection ClickHouse itself refused: nothing of
    the message but its coordinates, and a reason of plain ASCII, so the row has no content
    left to refuse (the bytes stay in Kafka, at the offset the row names).
    """
    topic, partition, offset = coordinates(msg)
    reason = reason[:REASON_MAX_CHARS]
    if not payload:
        reason = reason.encode("ascii", "replace").decode("ascii")
    log.warning("message rejected", topic=topic, partition=partition, offset=offset, reason=reason)
    # The Kafka timestamp is the producer's claim: one DateTime64 cannot hold must not make
    # the rejection itself fail (that raised out of the loop and stopped the sink for good).
    _, ts_ms = msg.timestamp()
    received = ts_ms if ts_ms > 0 and timestamp_in_range(ts_ms) else to_ms(datetime.now(UTC))
    return REJECTED.row(
        {
            # The Kafka coordinates identify it: a redelivered copy gets the same id.
            "event_id": f"{topic}/{partition}/{offset}",
            "product": "",
            "source": "",
            "dialect": "",
            "stage": SINK_STAGE,
            "field": None,
            "reason": reason,
            "received_at": received,
            "payload": (msg.value() or b"") if payload else b"",
        }
    )

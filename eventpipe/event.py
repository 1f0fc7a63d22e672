"""The normalized event every dialect parses into, and its clean (ClickHouse-bound) record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from eventpipe.naming import EventName


@dataclass(slots=True)
class ParsedEvent:
    """One event after its dialect's rules: the same whatever the wire format was."""

    name: EventName
    occurred_at_ms: int
    external_id: str | None = None
    subject_type: str | None = None
    subject_id: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    version: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    traits: dict[str, Any] = field(default_factory=dict)

    @property
    def actor_id(self) -> str:
        """Who did it, before identity linking: user, then subject, then anonymous id."""
        return self.user_id or self.subject_id or self.anonymous_id or ""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def to_ms(value: datetime | int) -> int:
    """Epoch milliseconds of a fastavro ``timestamp-millis`` (exact: no float rounding)."""
    if isinstance(value, int):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _MS


def from_ms(ms: int) -> datetime:
    """The UTC datetime of epoch milliseconds (exact: no float rounding)."""
    return _EPOCH + ms * _MS


def clean_record(raw: Mapping[str, Any], parsed: ParsedEvent, person_id: str) -> dict[str, Any]:
    """The ``eventpipe.CleanEvent`` record for a raw record and its parse.

    ``external_id`` comes from the raw record: the edge resolved it (body field or
    ``Idempotency-Key`` header) and derived the event id from it.
    """
    return {
        "event_id": raw["event_id"],
        "product": raw["product"],
        "source": raw["source"],
        "dialect": raw["dialect"],
        "event_type": parsed.name.event_type,
        "action": parsed.name.action,
        "canonical_name": parsed.name.canonical,
        "name_format": parsed.name.format.value,
        "occurred_at": parsed.occurred_at_ms,
        "received_at": to_ms(raw["received_at"]),
        "external_id": raw["external_id"],
        "subject_type": parsed.subject_type,
        "subject_id": parsed.subject_id,
        "user_id": parsed.user_id,
        "anonymous_id": parsed.anonymous_id,
        "person_id": person_id,
        "version": parsed.version,
        "properties": orjson.dumps(parsed.properties).decode(),
        "traits": orjson.dumps(parsed.traits).decode(),
    }

"""Decoding helpers every dialect shares: msgspec errors to (field, reason), timestamps."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from eventpipe.errors import InvalidEvent
from eventpipe.naming import InvalidName

T = TypeVar("T")

_AT = re.compile(r" - at `\$\.?([^`]*)`$")
_UNKNOWN = re.compile(r"unknown field `([^`]*)`")
_MISSING = re.compile(r"missing required field `([^`]*)`")

MAX_ID_LENGTH = 200
MIN_MS = 0  # 1970-01-01
MAX_MS = 4_102_444_800_000  # 2100-01-01


def decode(payload: bytes, type_: type[T], prefix: str = "") -> T:
    """Decode JSON into ``type_``, turning msgspec's message into field + reason."""
    try:
        return msgspec.json.decode(payload, type=type_)
    except msgspec.ValidationError as exc:
        raise invalid_from(exc, prefix) from None
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"malformed JSON: {exc}", field=prefix.rstrip(".") or None) from None


def invalid_from(exc: msgspec.ValidationError, prefix: str = "") -> InvalidEvent:
    msg = str(exc)
    field: str | None = None
    m = _AT.search(msg)
    if m:
        field = m.group(1) or None
        msg = msg[: m.start()]
    for pat in (_UNKNOWN, _MISSING):
        found = pat.search(msg)
        if found:
            field = f"{field}.{found.group(1)}" if field else found.group(1)
    if field and prefix:
        field = prefix + field
    elif prefix and not field:
        field = prefix.rstrip(".")
    return InvalidEvent(msg[0].lower() + msg[1:] if msg else "invalid", field=field)


def from_name_error(exc: InvalidName) -> InvalidEvent:
    return InvalidEvent(exc.reason, field=exc.field)


def to_ms(dt: datetime, field: str) -> int:
    """Milliseconds since the epoch; a timestamp without zone is taken as UTC."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ms = int(dt.timestamp() * 1000)
    check_ms(ms, field)
    return ms


def check_ms(ms: int, field: str) -> int:
    if not MIN_MS <= ms < MAX_MS:
        raise InvalidEvent("timestamp out of range (1970 to 2100)", field=field)
    return ms


def check_id(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    if not value or len(value) > MAX_ID_LENGTH:
        raise InvalidEvent(f"must be 1 to {MAX_ID_LENGTH} characters", field=field)
    return value


def iso_ms(ms: int) -> str:
    """ISO 8601 in UTC with a Z, milliseconds only when there are some (as the documents show)."""
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    if ms % 1000:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def as_object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidEvent("must be a JSON object", field=field)
    return value


def anonymous_id_property(properties: dict[str, Any], field: str) -> str | None:
    value = properties.get("anonymous_id")
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent("must be a string", field=f"{field}.anonymous_id")
    return check_id(value, f"{field}.anonymous_id")


def traits_property(properties: dict[str, Any], field: str) -> dict[str, Any]:
    """User attributes sent in ``properties.traits`` (v1 and v2), valid from the event's time."""
    traits = properties.get("traits")
    if traits is None:
        return {}
    return as_object(traits, f"{field}.traits")

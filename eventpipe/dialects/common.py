"""Decoding every dialect shares: the limits of one event, msgspec errors to (field, reason),
timestamps.

Limits. Constants, not settings: they protect the edge, the agents and ClickHouse alike, and the
agents re-parse with these same rules, so a replay agrees with what the edge answered.

=====================  =====================================================================
``MAX_DEPTH``          10: free-form objects (v2 ``properties``/``metadata``, v1 ``properties``,
                       named ``data``/``user``) nest at most 10 levels, the object itself being
                       level 1 (so ``{"properties": {"a": {"b": 1}}}`` is 2 levels deep)
``MAX_KEYS``           1,000 keys in one event, counting every object at every depth
``MAX_STRING_LENGTH``  65,536 characters in any free-form string, key or value (ids: 200,
                       ``MAX_ID_LENGTH``; name parts: 64, ``eventpipe.naming``)
integers               -2**63 to 2**63 - 1 (ClickHouse Int64, orjson, Avro long)
floats                 finite 64-bit only: ``1e400`` is out of range; ``NaN`` and ``Infinity``
                       are not JSON and are refused as such
duplicate keys         refused, naming the key: ``{"event": "a.b", "event": "x.y"}`` is ambiguous
encoding               UTF-8 only: invalid bytes and lone surrogate escapes (``"\\ud800"``) are
                       refused
=====================  =====================================================================

Before any of this the edge (``producers/ingest.py``) refuses a Content-Type other than
``application/json`` (charset utf-8 when one is given) and any Content-Encoding but identity, so
it never decompresses and there is no gzip bomb; a body over ``EVENTPIPE_MAX_BODY_BYTES`` is a 413
and a batch over ``EVENTPIPE_MAX_BATCH_EVENTS`` events a 400. Every breach is ``InvalidEvent``
(400, ``field`` naming where), never a 5xx. The Segment routes (``producers/segment.py``) differ
as Segment's SDKs need: any Content-Type, gzip decompressed at most to Segment's 500 KB, and its
limits (``eventpipe.dialects.segment``) answered with a 400.

Cost. The batch path is the hot path, so a valid event pays only C-speed work
(``decode_event``): one typed msgspec decode, whose free-form type (``FreeForm``) carries the
depth, integer and string limits, and one re-encode of the result to count colons. Duplicates
are found by counting: each key owns exactly one ``:`` outside strings, and re-encoding keeps
every ``:`` of the surviving keys and strings, so the body has more colons than its re-encoding
only if a duplicate was dropped. Two things keep the count exact: the dialects' structs omit
their defaults when encoded (``omit_defaults``), so an absent field adds no ``"f":null``, and a
timestamp is decoded as the string sent (``Timestamp``) and parsed after, since a re-encoded
``datetime`` may gain or lose a ``:`` (``+0100`` becomes ``+01:00``) and so hide a dropped
duplicate. Whenever the counts differ (a field sent as ``null`` is one such case), a ``\\u003a``
escape could hide a key's colon, or a limit is hit, the exact but slow ``diagnose`` runs, which
also names the field. ``python -m bench.instructions parse`` counted the typed decode against
the untyped decode and ``msgspec.convert`` it replaced (see the README's edge section).
"""

from __future__ import annotations

import functools
import json
import math
import re
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import msgspec

from eventpipe.errors import InvalidEvent
from eventpipe.event import from_ms
from eventpipe.event import to_ms as epoch_ms
from eventpipe.naming import UNIFIED_PATTERN, EventName, InvalidName, normalize

T = TypeVar("T")

_AT = re.compile(r" - at `\$\.?([^`]*)`$")
_UNKNOWN = re.compile(r"unknown field `([^`]*)`")
_MISSING = re.compile(r"missing required field `([^`]*)`")

MAX_ID_LENGTH = 200
MIN_MS = 0  # 1970-01-01
MAX_MS = 4_102_444_800_000  # 2100-01-01

MAX_DEPTH = 10
MAX_KEYS = 1_000
MAX_STRING_LENGTH = 65_536
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_ECHO = 120  # characters of a client's value an error message repeats

Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_STRING_LENGTH)]
_Scalar = None | bool | Int64 | float | Text

# Field types that carry their rules into the edge's OpenAPI document (``producers/openapi.py``
# generates it from the dialects' types). Only ``extra_json_schema``, description and examples:
# msgspec writes them into the schema and checks none of them, so these rules stay checked by
# the code below and ``eventpipe.naming``, with their messages, in their order.
Id = Annotated[str, msgspec.Meta(extra_json_schema={"minLength": 1, "maxLength": MAX_ID_LENGTH})]
"""An id, held to 1 to ``MAX_ID_LENGTH`` characters by ``check_id``."""
Timestamp = Annotated[
    str,
    msgspec.Meta(
        description="ISO 8601; without a zone, UTC", extra_json_schema={"format": "date-time"}
    ),
]
"""An RFC 3339 time, kept as sent until ``timestamp_ms`` parses it (why: the module docstring)."""
UnifiedName = Annotated[str, msgspec.Meta(extra_json_schema={"pattern": UNIFIED_PATTERN})]
"""A one-string event name (``noun.action``), split and checked by ``event_name``."""


def _nested(levels: int) -> Any:
    """The type of a free-form value holding at most ``levels`` more levels of objects/arrays."""
    t: Any = _Scalar
    for _ in range(levels):
        t = _Scalar | list[t] | dict[Text, t]  # type: ignore[valid-type]
    return t


if TYPE_CHECKING:
    FreeForm = dict[str, Any]
else:
    FreeForm = dict[Text, _nested(MAX_DEPTH - 1)]
"""A free-form object (properties, data, user) within the limits above, checked by msgspec."""

_ANY = msgspec.json.Decoder()
_UNDECODABLE = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError)
_ENCODER = msgspec.json.Encoder()


class Batch(msgspec.Struct, forbid_unknown_fields=True):
    """A batch body of any dialect: ``{"events": [...]}``, each event kept as its raw bytes."""

    events: list[msgspec.Raw]


def decode(payload: bytes, type_: type[T], prefix: str = "") -> T:
    """Decode JSON into ``type_``, turning msgspec's message into field + reason.

    For envelopes (a batch body): it checks syntax, not the limits; ``decode_event`` does both.
    """
    try:
        return msgspec.json.decode(payload, type=type_)
    except msgspec.ValidationError as exc:
        raise invalid_from(exc, prefix) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise malformed(payload, exc, prefix, type_) from None


def decode_event(payload: bytes, type_: type[T]) -> T:
    """Decode one event into ``type_`` (a struct with ``omit_defaults``) within the limits of
    the module docstring."""
    try:
        event = msgspec.json.decode(payload, type=type_)
    except msgspec.ValidationError as exc:
        raise invalid_event(payload, exc) from None
    except _UNDECODABLE as exc:
        raise malformed(payload, exc) from None
    colons = payload.count(b":")
    if (
        colons > MAX_KEYS
        or colons != _ENCODER.encode(event).count(b":")
        or b"\\u003" in payload  # an escaped ':' could balance a dropped duplicate
    ):
        found = diagnose(payload)
        if found is not None:
            raise found
    return event


def invalid_event(payload: bytes, exc: msgspec.ValidationError) -> InvalidEvent:
    """The error for an event the typed decoder refused: it stops at the first wrong field,
    which may come before a syntax error or a broken limit, and those are the reason to give."""
    try:
        _ANY.decode(payload)
    except _UNDECODABLE as syntax:
        return malformed(payload, syntax)
    return diagnose(payload) or invalid_from(exc)


def split_events(body: bytes) -> list[bytes]:
    """The events of a batch body, each as the exact bytes the client sent.

    Every key owns one ``:`` outside strings, and the envelope's only key is ``events``: colons
    the events do not hold are envelope keys, so more than one means ``events`` came twice.
    """
    events = [bytes(raw) for raw in decode(body, Batch).events]
    if body.count(b":") - sum(e.count(b":") for e in events) != 1:
        raise InvalidEvent("duplicate key 'events': the batch is ambiguous", field="events")
    return events


def malformed(
    payload: bytes, exc: Exception, prefix: str = "", type_: type[Any] | None = None
) -> InvalidEvent:
    """A body msgspec could not decode: the exact reason if ``diagnose`` finds one.

    ``type_`` is given for an envelope (a batch body), whose events nest two levels down.
    """
    field = prefix.rstrip(".") or None
    found = diagnose(payload, envelope=type_ is not None)
    if found is not None:
        found.field = _join(field, found.field) if field else found.field
        return found
    if isinstance(exc, RecursionError):
        return InvalidEvent(f"nested deeper than {MAX_DEPTH} levels", field=field)
    return InvalidEvent(f"malformed JSON: {exc}", field=field)


class _Object(dict[str, Any]):
    """An object as the slow parser builds it, remembering its first duplicate key."""

    duplicate: str | None = None

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        if len(self) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    self.duplicate = key
                    break
                seen.add(key)


class _Constant(str):
    """``NaN``, ``Infinity`` or ``-Infinity``: accepted by ``json``, but not JSON."""


def _parse_int(digits: str) -> int | float:
    # Python refuses to parse over 4,300 digits; anything over 20 is out of range anyway.
    return int(digits) if len(digits) <= 20 else math.inf


def diagnose(payload: bytes, *, envelope: bool = False) -> InvalidEvent | None:
    """The exact reason ``payload`` breaks a limit of the module docstring, or None.

    Slow (Python's ``json`` with hooks, then a walk): only for errors and suspicious bodies. In
    an ``envelope`` (a batch body) depth counts from its events and keys are not counted.
    """
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return InvalidEvent(f"body is not valid UTF-8 (byte {exc.start})")
    try:
        tree = json.loads(
            text, object_pairs_hook=_Object, parse_constant=_Constant, parse_int=_parse_int
        )
    except RecursionError:
        return InvalidEvent(f"nested deeper than {MAX_DEPTH} levels")
    except ValueError:
        return None  # malformed in a way msgspec's own message describes
    return _walk(tree, -2 if envelope else 0, None, [-math.inf if envelope else 0])


def _walk(value: Any, depth: int, path: str | None, keys: list[float]) -> InvalidEvent | None:
    if isinstance(value, dict | list) and depth > MAX_DEPTH:
        return InvalidEvent(f"nested deeper than {MAX_DEPTH} levels", field=path)
    if isinstance(value, _Object):
        if value.duplicate is not None:
            return InvalidEvent(
                f"duplicate key {clip(value.duplicate)!r}: its value is ambiguous",
                field=_join(path, value.duplicate),
            )
        keys[0] += len(value)
        if keys[0] > MAX_KEYS:
            return InvalidEvent(f"more than {MAX_KEYS} keys in one event", field=path)
        for key, item in value.items():
            sub = _join(path, key)
            found = _string(key, sub, "key") or _walk(item, depth + 1, sub, keys)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _walk(item, depth + 1, f"{path or ''}[{i}]", keys)
            if found is not None:
                return found
    elif isinstance(value, _Constant):
        return InvalidEvent(f"{value} is not valid JSON: send null or a string", field=path)
    elif isinstance(value, str):
        return _string(value, path, "string")
    elif isinstance(value, bool):
        return None
    elif isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        return InvalidEvent("integer out of the 64-bit range (-2**63 to 2**63-1)", field=path)
    elif isinstance(value, float) and not math.isfinite(value):
        return InvalidEvent("number out of range (not a finite 64-bit float)", field=path)
    return None


def _string(value: str, path: str | None, what: str) -> InvalidEvent | None:
    if len(value) > MAX_STRING_LENGTH:
        return InvalidEvent(f"{what} longer than {MAX_STRING_LENGTH} characters", field=path)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return InvalidEvent(f"{what} has a lone surrogate \\u escape", field=path)
    return None


def _join(path: str | None, key: str | None) -> str | None:
    if key is None:
        return path
    return f"{path}.{clip(key)}" if path else clip(key)


def clip(text: str, limit: int = MAX_ECHO) -> str:
    """A client's value, shortened for an error message."""
    return text if len(text) <= limit else text[:limit] + "…"


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
    msg = clip(msg, 2 * MAX_ECHO)
    return InvalidEvent(
        msg[0].lower() + msg[1:] if msg else "invalid", field=None if field is None else clip(field)
    )


def event_name(
    *,
    event: str | None = None,
    event_type: str | None = None,
    action: str | None = None,
    field: str | None = None,
) -> EventName:
    """``eventpipe.naming.normalize`` with its error as a 400 (``field`` overrides the field)."""
    try:
        return normalize(event=event, event_type=event_type, action=action)
    except InvalidName as exc:
        err = from_name_error(exc)
        raise (err.with_field(field) if field else err) from None


def from_name_error(exc: InvalidName) -> InvalidEvent:
    return InvalidEvent(exc.reason, field=exc.field)


def timestamp_ms(text: str, field: str) -> int:
    """Milliseconds since the epoch of an RFC 3339 ``Timestamp`` (400 naming ``field``)."""
    try:
        moment = msgspec.convert(text, datetime)
    except msgspec.ValidationError as exc:
        raise invalid_from(exc).with_field(field) from None
    return to_ms(moment, field)


def to_ms(dt: datetime, field: str) -> int:
    """Milliseconds since the epoch, exact (a float ``timestamp() * 1000`` lost 1 ms on some
    values); a timestamp without zone is taken as UTC."""
    return check_ms(epoch_ms(dt), field)


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
    """ISO 8601 in UTC with a Z, milliseconds only when there are some (as the documents show).

    Every accepted event's time is formatted for the response (strftime per event was ~5% of
    the edge's CPU): the seconds part is cached, as the events of a request share it."""
    seconds, millis = divmod(ms, 1000)
    return _iso_seconds(seconds) + (f".{millis:03d}Z" if millis else "Z")


@functools.lru_cache(maxsize=4096)
def _iso_seconds(seconds: int) -> str:
    return from_ms(seconds * 1000).isoformat(timespec="seconds")[:-6]


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

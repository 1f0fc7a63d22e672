"""Dialect ``segment``: the messages of Segment's HTTP Tracking API, as its SDKs send them.

The raw record of one message is an envelope the edge builds (:func:`envelope`), holding the
message's bytes as the client sent them and what the request adds to it:

* ``{"type": "track", "message": {...}}`` for ``POST /v1/track`` and the other single calls (the
  path is the call's type);
* ``{"batch": {"context", "integrations", "sentAt"}, "message": {...}}`` for an item of
  ``/v1/batch`` (or ``/v1/import``): the batch's top-level fields that apply to each item.

So the merge rule and the clock-skew correction run here, again on replay. A ``writeKey`` is
never part of an envelope (the edge removes it: it is a secret).

Mapping (Segment spec -> the normalized event):

=================  ===========================================================================
``messageId``      the external id (dedupe: SDKs retry on 5xx and 429)
``userId``         ``user_id``; a string or a number (kept as its decimal string)
``anonymousId``    ``anonymous_id``: with a ``userId`` in the same message it makes a link
``alias``          ``previousId`` is the ``anonymous_id`` and ``userId`` the user: the link
                   ``previousId -> userId``, under the same first-link-wins and placeholder
                   rules (``eventpipe.identity``); the message's own ``anonymousId`` is kept in
                   ``$segment``
``group``          ``groupId`` is the subject (``subject_type`` ``group``); the group's
                   ``traits`` become the user trait ``group:<groupId>`` (one JSON object)
``identify``       ``traits`` are the user's traits, valid from the message's time
``track``          ``event`` mapped by ``eventpipe.naming.segment_name``, never refused
``page/screen``    ``name`` and ``category`` kept in ``$segment``
``properties``     ``properties``, plus ``$segment``: every top-level field of the message that
                   has no column of its own (``type``, ``event``, ``name``, ``context`` and
                   ``integrations`` merged with the batch's, ``timestamp`` as sent, ``sentAt``,
                   ``groupId``, ``previousId``, ...). A message whose own properties hold a
                   ``$segment`` key is rejected (reported in ``rejected_events``), not
                   overwritten
=================  ===========================================================================

Time (the spec's clock-skew correction): ``occurred_at = timestamp + (receivedAt - sentAt)``
when the message (or its batch) has ``sentAt``, else ``timestamp``, else the receive time.
Timestamps are ISO 8601 (RFC 3339; without a zone, UTC).

Batch merge: the batch's ``context`` and ``integrations`` are merged into each item's, key by key
at the top level, the item's own keys winning.

Limits are Segment's (constants, as in ``common``): 32 KB per message (a batch item counted with
the batch's ``context`` and ``integrations``), 500 KB per request; and those of ``common`` on the
envelope, so free-form objects inside a message nest at most ``MAX_DEPTH - 1`` levels.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

from eventpipe.dialects.common import FreeForm, check_id, check_ms, clip, decode_event, to_ms
from eventpipe.errors import InvalidEvent
from eventpipe.event import ParsedEvent
from eventpipe.naming import SEGMENT_CALLS, EventName, segment_name

MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
CALLS = frozenset({"track", *SEGMENT_CALLS})
RESERVED = "$segment"
"""The property that keeps the message's fields without a column of their own."""

_OWN_COLUMNS = frozenset({"messageId", "userId", "anonymousId", "properties", "writeKey"})
_SHARED = ("context", "integrations")


class Shared(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A batch's top-level fields that apply to every item."""

    context: FreeForm | None = None
    integrations: FreeForm | None = None
    sentAt: str | None = None


class Envelope(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    message: FreeForm
    type: str | None = None
    batch: Shared | None = None


_ENCODE = msgspec.json.Encoder()


def shared_bytes(context: Any, integrations: Any, sent_at: Any) -> bytes:
    """A batch's shared part, encoded once per request for :func:`envelope` (None: absent).

    Any JSON value: ``parse`` checks it (``Shared``) for each message."""
    return _ENCODE.encode(
        {
            k: v
            for k, v in (("context", context), ("integrations", integrations), ("sentAt", sent_at))
            if v is not None
        }
    )


def envelope(message: bytes, *, call: str | None = None, shared: bytes | None = None) -> bytes:
    """The raw record's payload for one message: the single call's type or the batch's part."""
    if call is not None:
        return b'{"type":' + _ENCODE.encode(call) + b',"message":' + message + b"}"
    return b'{"batch":' + (shared or b"{}") + b',"message":' + message + b"}"


def parse(payload: bytes, received_at_ms: int) -> ParsedEvent:
    """Parse one envelope; raises ``InvalidEvent`` naming the message's field."""
    try:
        env = decode_event(payload, Envelope)
    except InvalidEvent as exc:
        raise _relative(exc) from None
    msg = env.message
    call = env.type or _string(msg, "type")
    if call is None:
        raise InvalidEvent("'type' is required in a batch item", field="type")
    if call not in CALLS:
        raise InvalidEvent(f"unknown type {clip(call)!r}: one of {sorted(CALLS)}", field="type")
    properties = _object(msg, "properties")
    if RESERVED in properties:
        raise InvalidEvent(
            f"'{RESERVED}' is reserved for the Segment call's own fields",
            field=f"properties.{RESERVED}",
        )
    shared = env.batch or Shared()
    user_id = _id(msg, "userId")
    anonymous_id = _id(msg, "anonymousId")
    subject_type = subject_id = None
    traits: dict[str, Any] = {}
    extra = {k: v for k, v in msg.items() if k not in _OWN_COLUMNS and v is not None}
    extra["type"] = call
    for key, batch_value in zip(_SHARED, (shared.context, shared.integrations), strict=True):
        merged = merge(batch_value, _object(msg, key))
        if merged:
            extra[key] = merged
    if "sentAt" not in extra and shared.sentAt is not None:
        extra["sentAt"] = shared.sentAt
    if call == "alias":
        previous = _id(msg, "previousId")
        if previous is None or user_id is None:
            raise InvalidEvent("an alias needs 'previousId' and 'userId'", field="previousId")
        if anonymous_id is not None:
            extra["anonymousId"] = anonymous_id
        anonymous_id = previous
    elif user_id is None and anonymous_id is None:
        raise InvalidEvent("one of 'userId' or 'anonymousId' is required", field="userId")
    if call in ("identify", "group"):
        extra.pop("traits", None)
    if call == "identify":
        traits = _object(msg, "traits")
    elif call == "group":
        subject_id = _id(msg, "groupId")
        if subject_id is None:
            raise InvalidEvent("a group call needs 'groupId'", field="groupId")
        subject_type = "group"
        traits = {f"group:{subject_id}": _object(msg, "traits")}
    return ParsedEvent(
        name=_name(call, msg),
        occurred_at_ms=occurred_ms(
            _time(msg, "timestamp"),
            _time(extra, "sentAt"),
            received_at_ms,
        ),
        external_id=_id(msg, "messageId"),
        subject_type=subject_type,
        subject_id=subject_id,
        user_id=user_id,
        anonymous_id=anonymous_id,
        properties={**properties, RESERVED: extra},
        traits=traits,
    )


def occurred_ms(timestamp_ms: int | None, sent_at_ms: int | None, received_at_ms: int) -> int:
    """The spec's clock-skew correction: the client's clock is off by ``sentAt - receivedAt``."""
    if timestamp_ms is None:
        return received_at_ms
    if sent_at_ms is None:
        return timestamp_ms
    return check_ms(timestamp_ms + (received_at_ms - sent_at_ms), "timestamp")


def merge(batch: Mapping[str, Any] | None, own: Mapping[str, Any]) -> dict[str, Any]:
    """A batch's ``context`` or ``integrations`` merged into an item's: the item's keys win."""
    return {**(batch or {}), **own}


def _name(call: str, msg: dict[str, Any]) -> EventName:
    if call != "track":
        return SEGMENT_CALLS[call]
    event = _string(msg, "event")
    if not event:
        raise InvalidEvent("a track call needs a non-empty 'event'", field="event")
    return segment_name(event)


def _relative(exc: InvalidEvent) -> InvalidEvent:
    """An envelope's error, named as the client's field (``message.x`` is ``x``)."""
    field = exc.field or ""
    for prefix in ("message.", "batch."):
        if field.startswith(prefix):
            exc.field = field.removeprefix(prefix)
            return exc
    if field in ("message", "batch"):
        exc.field = None
    return exc


def _string(msg: Mapping[str, Any], key: str) -> str | None:
    value = msg.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidEvent("must be a string", field=key)
    return value


def _object(msg: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = msg.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidEvent("must be a JSON object", field=key)
    return value


def _id(msg: Mapping[str, Any], key: str) -> str | None:
    """An id: a string or an integer (as the SDKs allow), ``null`` or ``""`` when absent."""
    value = msg.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidEvent("must be a string or an integer", field=key)
    return check_id(str(value), key)


def _time(msg: Mapping[str, Any], key: str) -> int | None:
    value = _string(msg, key)
    if value is None:
        return None
    try:
        moment = msgspec.convert(value, datetime)
    except msgspec.ValidationError:
        raise InvalidEvent(f"{clip(value)!r} is not an ISO 8601 time", field=key) from None
    return to_ms(moment, key)

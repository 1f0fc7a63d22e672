"""Dialect ``v1`` (document 003): ``POST /v1/events`` and ``POST /v1/batch/events``.

``user_id`` or ``anonymous_id`` is required (400 names ``user_id`` when both are missing);
``timestamp`` is required ISO 8601; ``properties.traits`` (an object) holds user attributes.
The ``Idempotency-Key`` header is not part of the body: the edge turns it into the event's
external id (see ``idempotency_external_id``).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from eventpipe.dialects.common import (
    FreeForm,
    Id,
    Timestamp,
    UnifiedName,
    check_id,
    decode_event,
    event_name,
    timestamp_ms,
    traits_property,
)
from eventpipe.errors import InvalidEvent
from eventpipe.event import ParsedEvent

MAX_KEY_LENGTH = 180
"""Characters of an ``Idempotency-Key`` header (after stripping blanks)."""


class V1Event(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    event: Annotated[UnifiedName, msgspec.Meta(examples=["paywall_viewed"])]
    timestamp: Timestamp
    user_id: Annotated[Id, msgspec.Meta(description="backend user id")] | None = None
    anonymous_id: (
        Annotated[Id, msgspec.Meta(description="pre-login device or session id")] | None
    ) = None
    properties: FreeForm | None = None


def parse(payload: bytes, received_at_ms: int) -> ParsedEvent:
    ev = decode_event(payload, V1Event)
    name = event_name(event=ev.event)
    user_id = check_id(ev.user_id, "user_id")
    anonymous_id = check_id(ev.anonymous_id, "anonymous_id")
    if user_id is None and anonymous_id is None:
        raise InvalidEvent("one of 'user_id' or 'anonymous_id' is required", field="user_id")
    return ParsedEvent(
        name=name,
        occurred_at_ms=timestamp_ms(ev.timestamp, "timestamp"),
        user_id=user_id,
        anonymous_id=anonymous_id,
        properties=ev.properties or {},
        traits=traits_property(ev.properties or {}, "properties"),
    )


def idempotency_external_id(key: str | None, index: int | None) -> str | None:
    """The external id an ``Idempotency-Key`` header gives an event.

    On a single event it is the key itself. On a batch each event gets ``"<key>:<index>"``: a
    retried batch with the same key maps every event onto its earlier self, while different
    events in one batch stay distinct.
    """
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidEvent(f"must be 1 to {MAX_KEY_LENGTH} characters", field="Idempotency-Key")
    return key if index is None else f"{key}:{index}"

"""Dialect ``v2`` (document 000): ``POST /api/v2/events`` and ``/api/v2/events/batch``.

Identity: a user subject (``subject_type: user``) is the user id; ``properties.anonymous_id``,
when present, is the pre-login id it gets linked to; ``properties.traits`` (an object) holds user
attributes.

Unknown top-level fields are rejected (400 naming the field): a typo such as ``ocurred_at``
would otherwise silently become "now". Free-form data belongs in ``properties``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from eventpipe.dialects.common import (
    FreeForm,
    Id,
    Timestamp,
    UnifiedName,
    anonymous_id_property,
    check_id,
    decode_event,
    event_name,
    timestamp_ms,
    traits_property,
)
from eventpipe.errors import InvalidEvent
from eventpipe.event import ParsedEvent
from eventpipe.naming import PART_PATTERN

SubjectType = Literal["user", "account", "subscription"]
EventType = Annotated[
    str,
    msgspec.Meta(
        description="with action, the noun; alone, a legacy flat name (deprecated)",
        examples=["project"],
        extra_json_schema={"pattern": PART_PATTERN},
    ),
]
Action = Annotated[
    str, msgspec.Meta(examples=["created"], extra_json_schema={"pattern": PART_PATTERN})
]
SubjectId = Annotated[Id, msgspec.Meta(description="who the event is about; for a user, its id")]
ExternalId = Annotated[Id, msgspec.Meta(description="idempotency key, per product and source")]


class V2Event(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    event: Annotated[UnifiedName, msgspec.Meta(examples=["user.signed_up"])] | None = None
    event_type: EventType | None = None
    action: Action | None = None
    subject_type: SubjectType | None = None
    subject_id: SubjectId | None = None
    occurred_at: Timestamp | None = None
    properties: FreeForm | None = None
    metadata: FreeForm | None = None
    external_id: ExternalId | None = None


def parse(payload: bytes, received_at_ms: int) -> ParsedEvent:
    """Parse one v2 event; raises ``InvalidEvent`` naming the field."""
    ev = decode_event(payload, V2Event)
    at = received_at_ms if ev.occurred_at is None else timestamp_ms(ev.occurred_at, "occurred_at")
    name = event_name(event=ev.event, event_type=ev.event_type, action=ev.action)
    if ev.properties is not None and ev.metadata is not None:
        raise InvalidEvent("give 'properties' or its alias 'metadata', not both", field="metadata")
    properties = ev.properties if ev.properties is not None else (ev.metadata or {})
    field = "properties" if ev.properties is not None else "metadata"
    external_id = check_id(ev.external_id, "external_id")
    subject_id = check_id(ev.subject_id, "subject_id")
    return ParsedEvent(
        name=name,
        occurred_at_ms=at,
        external_id=external_id,
        subject_type=ev.subject_type,
        subject_id=subject_id,
        user_id=subject_id if ev.subject_type == "user" else None,
        anonymous_id=anonymous_id_property(properties, field),
        properties=properties,
        traits=traits_property(properties, field),
    )

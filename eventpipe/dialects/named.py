"""Dialect ``named`` (document 001): ``{name, data, user?, v?, ts?}``.

``name`` follows the v2 unified rule (``noun.action``); ``v`` must look like ``YYYY-MM-DD.XY``
and is kept on the event; ``ts`` is integer milliseconds (default: receive time). The ``user``
object gives the user id (``external_id``, a string or an integer), optionally the pre-login
``anonymous_id`` to link to it, and user attributes (every other key), valid from the event's
time.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec

from eventpipe.dialects.common import (
    MAX_MS,
    MIN_MS,
    FreeForm,
    UnifiedName,
    check_id,
    check_ms,
    clip,
    decode_event,
    event_name,
)
from eventpipe.errors import InvalidEvent
from eventpipe.event import ParsedEvent

VERSION = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])\.\d{2}$")


Version = Annotated[
    str, msgspec.Meta(examples=["2021-09-15.01"], extra_json_schema={"pattern": VERSION.pattern})
]
EpochMs = Annotated[
    int,
    msgspec.Meta(
        description="epoch milliseconds; absent, the receive time",
        extra_json_schema={"format": "int64", "minimum": MIN_MS, "exclusiveMaximum": MAX_MS},
    ),
]


class NamedEvent(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: Annotated[UnifiedName, msgspec.Meta(examples=["ticket.updated"])]
    data: FreeForm
    user: FreeForm | None = None
    v: Version | None = None
    ts: EpochMs | None = None


def parse(payload: bytes, received_at_ms: int) -> ParsedEvent:
    ev = decode_event(payload, NamedEvent)
    name = event_name(event=ev.name, field="name")
    if ev.v is not None and not VERSION.match(ev.v):
        raise InvalidEvent(f"version {clip(ev.v)!r} must look like YYYY-MM-DD.XY", field="v")
    user_id: str | None = None
    anonymous_id: str | None = None
    traits: dict[str, Any] = {}
    if ev.user is not None:
        traits = dict(ev.user)
        user_id = _id(traits.pop("external_id", None), "user.external_id")
        anonymous_id = _id(traits.pop("anonymous_id", None), "user.anonymous_id")
    return ParsedEvent(
        name=name,
        occurred_at_ms=received_at_ms if ev.ts is None else check_ms(ev.ts, "ts"),
        user_id=user_id,
        anonymous_id=anonymous_id,
        version=ev.v,
        properties=ev.data,
        traits=traits,
    )


def _id(value: Any, field: str) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int | None):
        raise InvalidEvent("must be a string or an integer", field=field)
    return check_id(None if value is None else str(value), field)

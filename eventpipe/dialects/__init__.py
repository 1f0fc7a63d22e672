"""Dialect parsers: the one home of each wire format's rules, used by the edge and the agents.

``parse(dialect, payload, received_at_ms)`` is deterministic, so the agents (and a replay)
re-derive exactly what the edge answered, or what newer rules now say.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from eventpipe.dialects import named, segment, v1, v2
from eventpipe.dialects.common import Batch
from eventpipe.errors import InvalidEvent
from eventpipe.event import ParsedEvent

Parser = Callable[[bytes, int], ParsedEvent]

PARSERS: dict[str, Parser] = {
    "v2": v2.parse,
    "v1": v1.parse,
    "named": named.parse,
    "segment": segment.parse,
}


DECODED: tuple[type[msgspec.Struct], ...] = (
    v2.V2Event,
    v1.V1Event,
    named.NamedEvent,
    segment.Envelope,
    Batch,
)
"""Every struct the dialects decode a body into (a Segment envelope holds ``Shared``)."""


def prepare() -> None:
    """Build msgspec's decoding plan of every dialect's struct now, at a server's start.

    msgspec builds it on first use and keeps it: 70-110 ms of CPU each (the free-form properties
    are a deep union), which the first request of each dialect paid in every edge process, and
    in ``eventpipe dev``, whose other threads share the interpreter, 560-690 ms of waiting. Not
    done at import, which every CLI command pays.
    """
    for struct in DECODED:
        msgspec.json.Decoder(struct)


def parse(dialect: str, payload: bytes, received_at_ms: int) -> ParsedEvent:
    parser = PARSERS.get(dialect)
    if parser is None:
        raise InvalidEvent(f"unknown dialect {dialect!r}", field="dialect")
    return parser(payload, received_at_ms)

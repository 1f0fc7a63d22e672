"""Dialect parsers: the one home of each wire format's rules, used by the edge and the agents.

``parse(dialect, payload, received_at_ms)`` is deterministic, so the agents (and a replay)
re-derive exactly what the edge answered, or what newer rules now say.
"""

from __future__ import annotations

from collections.abc import Callable

from eventpipe.dialects import named, segment, v1, v2
from eventpipe.errors import InvalidEvent
from eventpipe.event import ParsedEvent

Parser = Callable[[bytes, int], ParsedEvent]

PARSERS: dict[str, Parser] = {
    "v2": v2.parse,
    "v1": v1.parse,
    "named": named.parse,
    "segment": segment.parse,
}


def parse(dialect: str, payload: bytes, received_at_ms: int) -> ParsedEvent:
    parser = PARSERS.get(dialect)
    if parser is None:
        raise InvalidEvent(f"unknown dialect {dialect!r}", field="dialect")
    return parser(payload, received_at_ms)

"""``eventpipe tail``'s rules: what ``--from`` means, and how a record is printed."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from eventpipe.settings import Settings
from eventpipe.tail import Start, TailError, _json_default, dumps, parse_from, topic_name

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("0", Start(offset=0)),
        ("1234", Start(offset=1234)),
        ("beginning", Start(offset=0)),
        ("90s", Start(time_ms=NOW_MS - 90_000)),
        ("15m", Start(time_ms=NOW_MS - 15 * 60_000)),
        ("2h", Start(time_ms=NOW_MS - 2 * 3_600_000)),
        ("7d", Start(time_ms=NOW_MS - 7 * 86_400_000)),
        ("2026-05-01T11:00:00Z", Start(time_ms=NOW_MS - 3_600_000)),
        ("2026-05-01T11:00:00", Start(time_ms=NOW_MS - 3_600_000)),  # no zone: UTC
        ("2026-05-01T13:00:00+02:00", Start(time_ms=NOW_MS - 3_600_000)),
    ],
)
def test_from_is_an_offset_a_duration_or_a_time(text: str, start: Start) -> None:
    assert parse_from(text, NOW) == start


@pytest.mark.parametrize("text", ["yesterday", "-5", "15 minutes", "5w", ""])
def test_anything_else_is_refused_with_the_forms_it_takes(text: str) -> None:
    with pytest.raises(TailError, match="offset, a duration"):
        parse_from(text, NOW)


def test_bytes_print_as_text_when_utf8_else_base64() -> None:
    line = {"value": {"payload": '{"event": "é"}'.encode(), "blob": b"\xff\x00"}}
    back = json.loads(dumps(line))
    assert back["value"]["payload"] == '{"event": "é"}'
    assert back["value"]["blob"] == {"base64": "/wA="}
    with pytest.raises(TypeError):
        _json_default(object())


def test_topic_names_get_the_prefix_other_names_are_taken_as_they_are() -> None:
    s = Settings(topic_prefix="p.")
    known = ["p.events.raw", "p.events.clean"]
    assert topic_name(s, "events.raw", known) == "p.events.raw"
    assert topic_name(s, "p.events.raw", known) == "p.events.raw"
    assert topic_name(s, "someone.elses", known) == "someone.elses"

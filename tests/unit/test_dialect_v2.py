from __future__ import annotations

import msgspec
import pytest

from eventpipe import dialects
from eventpipe.dialects import parse
from eventpipe.dialects.common import iso_ms
from eventpipe.errors import InvalidEvent
from eventpipe.ids import dedupe_key, derived_event_id, event_id_for

NOW = 1_770_000_000_000


def test_occurred_at_defaults_to_receive_time_and_metadata_is_properties() -> None:
    p = parse("v2", b'{"event":"a.b","metadata":{"k":1}}', NOW)
    assert p.occurred_at_ms == NOW
    assert p.properties == {"k": 1}


def test_naive_timestamps_are_utc_and_offsets_apply() -> None:
    a = parse("v2", b'{"event":"a.b","occurred_at":"2026-02-10T12:00:00"}', NOW)
    b = parse("v2", b'{"event":"a.b","occurred_at":"2026-02-10T13:00:00+01:00"}', NOW)
    assert a.occurred_at_ms == b.occurred_at_ms
    assert iso_ms(a.occurred_at_ms) == "2026-02-10T12:00:00Z"
    assert iso_ms(a.occurred_at_ms + 5) == "2026-02-10T12:00:00.005Z"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b'{"event":"a.b","external_id":""}', "external_id"),
        (b'{"event":"a.b","external_id":7}', "external_id"),
        (b'{"event":"a.b","occurred_at":"1969-12-31T00:00:00Z"}', "occurred_at"),
        (b'{"event":"a.b","subject_id":"' + b"x" * 201 + b'"}', "subject_id"),
    ],
)
def test_field_rules(payload: bytes, field: str) -> None:
    with pytest.raises(InvalidEvent) as err:
        parse("v2", payload, NOW)
    assert err.value.field == field


def test_keyed_ids_are_derived_and_scoped() -> None:
    a = event_id_for("p", "api", "e1")
    assert a == derived_event_id(dedupe_key("p", "api", "e1")) == event_id_for("p", "api", "e1")
    assert a != event_id_for("q", "api", "e1") != event_id_for("p", "web", "e1")
    assert event_id_for("p", "api", None) != event_id_for("p", "api", None)


def test_timestamps_convert_to_milliseconds_exactly() -> None:
    # found by the property tests: float arithmetic gave ...008 for this value
    p = parse("v1", b'{"event":"a_b","user_id":"u","timestamp":"2038-02-01T00:00:00.009Z"}', NOW)
    assert p.occurred_at_ms == 2_148_595_200_009


def test_the_edge_prepares_the_decoder_of_every_dialect_struct() -> None:
    """A struct left out of ``DECODED`` costs the first request of its dialect 70-110 ms in
    every edge process; ``Shared`` is prepared inside ``Envelope``."""
    modules = (dialects.v2, dialects.v1, dialects.named, dialects.segment, dialects.common)
    defined = {
        value
        for module in modules
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, msgspec.Struct)
        and value.__module__ == module.__name__
    }
    assert defined - {dialects.segment.Shared} == set(dialects.DECODED)
    dialects.prepare()

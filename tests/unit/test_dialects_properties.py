"""Property tests of the three dialect parsers (``eventpipe.dialects.parse``).

* Whatever the bytes, whatever the JSON, a parser raises ``InvalidEvent`` or nothing.
* The cheap checks agree with the exact one: an event is accepted only if ``diagnose`` (the slow,
  exact limit checker) finds nothing, duplicate keys hidden behind ``\\u`` escapes included.
* Valid events round-trip their fields, names normalized as ``eventpipe.naming`` says.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from eventpipe.dialects import PARSERS, parse
from eventpipe.dialects.common import (
    INT64_MAX,
    INT64_MIN,
    MAX_ID_LENGTH,
    decode_event,
    diagnose,
    iso_ms,
    split_events,
)
from eventpipe.dialects.named import NamedEvent
from eventpipe.dialects.segment import Envelope
from eventpipe.dialects.v1 import V1Event
from eventpipe.dialects.v2 import V2Event
from eventpipe.errors import InvalidEvent
from eventpipe.event import ParsedEvent
from eventpipe.naming import MAX_PART_LENGTH, normalize

NOW = 1_770_000_000_000
DIALECTS = sorted(PARSERS)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIELDS = [
    *("event", "event_type", "action", "subject_type", "subject_id", "occurred_at"),
    *("properties", "metadata", "external_id", "timestamp", "user_id", "anonymous_id"),
    *("name", "data", "user", "v", "ts", "traits", "external_id"),
]

any_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # beyond int64 too
    | st.floats()  # NaN and Infinity too: json.dumps writes them as tokens
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)
# Objects whose keys are mostly the dialects' own, so parsing gets past the first check.
event_like = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), any_json, max_size=8)


def _only_invalid_event(dialect: str, payload: bytes) -> ParsedEvent | None:
    try:
        return parse(dialect, payload, NOW)
    except InvalidEvent as exc:
        assert exc.message
        return None


@pytest.mark.parametrize("dialect", DIALECTS)
@SETTINGS
@given(payload=st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_invalid_event(dialect: str, payload: bytes) -> None:
    _only_invalid_event(dialect, payload)
    with contextlib.suppress(InvalidEvent):
        split_events(payload)


@pytest.mark.parametrize("dialect", DIALECTS)
@SETTINGS
@given(value=any_json | event_like)
def test_arbitrary_json_raises_only_invalid_event(dialect: str, value: Any) -> None:
    payload = json.dumps(value).encode()
    _only_invalid_event(dialect, payload)
    batch = json.dumps({"events": [value]}).encode()
    with contextlib.suppress(InvalidEvent):
        for event in split_events(batch):
            _only_invalid_event(dialect, event)


def _escaped(text: str) -> str:
    """``text`` as a JSON string with every character a \\u escape (same value, other bytes)."""
    units = text.encode("utf-16-be")
    return (
        '"' + "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2)) + '"'
    )


def _object(pairs: list[tuple[str, Any, bool]]) -> str:
    """A JSON object that may repeat keys, some of them written escaped."""
    body = ",".join(
        f"{_escaped(k) if esc else json.dumps(k)}:{json.dumps(v)}" for k, v, esc in pairs
    )
    return "{" + body + "}"


keys = st.sampled_from(["a", "b", ":", "a:b", "é"])
values = st.none() | st.integers() | st.sampled_from([":", "a:b", "\u003a", "x", 1.5])


# Times whose re-encoding as a datetime would gain or lose a ':' (a dropped duplicate could hide
# behind one), and a null field, which the re-encoding omits.
PLUS_0100 = ',"occurred_at":"2026-12-03T15:03:22+0100"'
times = st.sampled_from(
    [
        *("", ',"occurred_at":"2026-12-03T15:03:22Z"', PLUS_0100),
        *(',"occurred_at":"2026-12-03T15:03:22+00:00"', ',"occurred_at":null', ',"action":null'),
    ]
)


@SETTINGS
@given(
    pairs=st.lists(st.tuples(keys, values, st.booleans()), max_size=6),
    esc=st.booleans(),
    when=times,
)
@example(pairs=[("a", 1, False), ("a", 2, False)], esc=False, when=PLUS_0100)
def test_the_fast_path_accepts_only_what_the_exact_check_accepts(
    pairs: list[tuple[str, Any, bool]], esc: bool, when: str
) -> None:
    name = _escaped("event") if esc else '"event"'
    payload = ("{" + name + ':"a.b"' + when + ',"properties":' + _object(pairs) + "}").encode()
    exact = diagnose(payload)
    parsed = _only_invalid_event("v2", payload)
    assert (parsed is None) == (exact is not None), (payload, exact)
    if len({k for k, _, _ in pairs}) < len(pairs):
        assert exact is not None and "duplicate key" in exact.message


STRUCTS = [V2Event, V1Event, NamedEvent, Envelope]


def _reference(payload: bytes, type_: type[Any]) -> Any:
    """What ``decode_event`` replaced, the library's own way: an untyped decode, the exact limit
    check, then ``msgspec.convert``; None when any of them refuses."""
    try:
        tree = msgspec.json.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    if diagnose(payload) is not None:
        return None
    try:
        return msgspec.convert(tree, type_)
    except msgspec.ValidationError:
        return None


@pytest.mark.parametrize("type_", STRUCTS, ids=lambda t: t.__name__)
@SETTINGS
@given(value=any_json | event_like, pairs=st.lists(st.tuples(keys, values, st.booleans())))
def test_the_typed_decode_agrees_with_decode_then_convert(
    type_: type[Any], value: Any, pairs: list[tuple[str, Any, bool]]
) -> None:
    """The typed decode (one pass) against the two passes it replaced: the same events pass,
    decoded alike, duplicates behind any field (``pairs`` appended to an object) included."""
    payload = json.dumps(value).encode()
    if isinstance(value, dict) and pairs:
        payload = payload[:-1] + (b", " if value else b"") + _object(pairs)[1:].encode()
    expected = _reference(payload, type_)
    try:
        got = decode_event(payload, type_)
    except InvalidEvent:
        got = None
    assert got == expected, payload


part = st.from_regex(rf"\A[a-z][a-z0-9_]{{0,{min(MAX_PART_LENGTH, 20) - 1}}}\Z")
plain = st.from_regex(r"\A[a-z][a-z0-9]{0,10}\Z")  # no '_': a legacy name splits at its first
ids = st.text(min_size=1, max_size=MAX_ID_LENGTH)
scalars = st.none() | st.booleans() | st.integers(INT64_MIN, INT64_MAX) | st.text(max_size=30)
valid_json = st.recursive(
    scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=15,
)
free = st.dictionaries(st.text(max_size=8).filter(lambda k: k != "traits"), valid_json, max_size=6)
moments = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2099, 12, 30), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))


def _ms(dt: datetime) -> int:
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


@SETTINGS
@given(
    et=part, act=part, form=st.sampled_from(["preferred", "unified", "legacy"]),
    sep=st.sampled_from(".:"), subject=ids, when=moments, props=free, ext=st.none() | ids,
)  # fmt: skip
def test_valid_v2_events_round_trip(
    et: str, act: str, form: str, sep: str, subject: str, when: datetime, props: Any, ext: Any
) -> None:
    body: dict[str, Any] = {"subject_type": "user", "subject_id": subject, "properties": props}
    body.update(occurred_at=when.isoformat(), external_id=ext)
    if form == "preferred":
        body.update(event_type=et, action=act)
        expected = normalize(event_type=et, action=act)
    elif form == "unified":
        body["event"] = f"{et}{sep}{act}"
        expected = normalize(event=body["event"])
        assert (expected.event_type, expected.action) == (et, act)
    else:
        body["event_type"] = f"{et.replace('_', 'x')}_{act}"
        expected = normalize(event_type=body["event_type"])
    p = parse("v2", json.dumps(body).encode(), NOW)
    assert p.name == expected
    assert (p.subject_id, p.user_id, p.external_id) == (subject, subject, ext)
    assert p.occurred_at_ms == _ms(when)
    assert iso_ms(p.occurred_at_ms).startswith(when.strftime("%Y-%m-%dT%H:%M:%S"))
    assert p.properties == props


@SETTINGS
@given(name=plain, act=part, user=st.none() | ids, anon=ids, when=moments, props=free)
def test_valid_v1_events_round_trip(
    name: str, act: str, user: str | None, anon: str, when: datetime, props: Any
) -> None:
    body = {"event": f"{name}_{act}", "anonymous_id": anon, "timestamp": when.isoformat()}
    body.update({"user_id": user, "properties": props})
    p = parse("v1", json.dumps(body).encode(), NOW)
    assert p.name == normalize(event=body["event"])
    assert (p.name.event_type, p.name.action) == (name, act)
    assert (p.user_id, p.anonymous_id, p.occurred_at_ms) == (user, anon, _ms(when))
    assert p.properties == props


@SETTINGS
@given(
    et=part, act=part, data=free, ts=st.none() | st.integers(0, 4_102_444_799_999),
    uid=st.none() | ids | st.integers(INT64_MIN, INT64_MAX), traits=free,
    v=st.none() | st.from_regex(r"\A20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9])\.[0-9]{2}\Z"),
)  # fmt: skip
def test_valid_named_events_round_trip(
    et: str, act: str, data: Any, ts: int | None, uid: Any, traits: Any, v: str | None
) -> None:
    traits = {k: x for k, x in traits.items() if k not in ("external_id", "anonymous_id")}
    user = {**traits, "external_id": uid}
    body = {"name": f"{et}.{act}", "data": data, "user": user, "v": v, "ts": ts}
    p = parse("named", json.dumps(body).encode(), NOW)
    assert p.name == normalize(event=body["name"])
    assert (p.name.event_type, p.name.action, p.version) == (et, act, v)
    assert p.occurred_at_ms == (NOW if ts is None else ts)
    assert p.user_id == (None if uid is None else str(uid))
    assert (p.properties, p.traits) == (data, traits)

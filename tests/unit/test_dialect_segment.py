"""The Segment dialect's rules: names, clock skew, the batch merge, identities and traits, and the
edge's write key, gzip and envelope helpers (``eventpipe.dialects.segment``,
``eventpipe.naming.segment_name``, ``producers.segment``)."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventpipe.dialects import segment
from eventpipe.errors import InvalidEvent, Unauthorized
from eventpipe.event import ParsedEvent
from eventpipe.naming import NameFormat, normalize, segment_name, segment_slug
from producers.segment import _without_write_key, gunzip, write_key

RECEIVED = 1_717_200_000_000  # 2024-06-01T00:00:00Z


def _parse(message: dict[str, Any], call: str | None = None, **shared: Any) -> ParsedEvent:
    raw = json.dumps(message).encode()
    if call is not None:
        return segment.parse(segment.envelope(raw, call=call), RECEIVED)
    blob = segment.shared_bytes(
        shared.get("context"), shared.get("integrations"), shared.get("sentAt")
    )
    return segment.parse(segment.envelope(raw, shared=blob), RECEIVED)


@pytest.mark.parametrize(
    ("name", "canonical", "parts"),
    [
        ("Order Completed", "order_completed", ("order", "completed")),
        ("order completed", "order_completed", ("order", "completed")),
        ("ORDER-COMPLETED", "order_completed", ("order", "completed")),
        ("  Order   Completed!  ", "order_completed", ("order", "completed")),
        ("order_completed", "order_completed", ("order", "completed")),
        ("Checkout Step Viewed", "checkout_step_viewed", ("checkout", "step_viewed")),
        ("user.signed_up", "user_signed_up", ("user", "signed_up")),
        ("User Profile . Updated", "user_profile_updated", ("user_profile", "updated")),
        ("Café Visited", "cafe_visited", ("cafe", "visited")),
        ("Straße Viewed", "strasse_viewed", ("strasse", "viewed")),
        ("Login", "login_tracked", ("login", "tracked")),
    ],
)
def test_free_form_names_map_onto_the_naming_rules(
    name: str, canonical: str, parts: tuple[str, str]
) -> None:
    got = segment_name(name)
    assert (got.canonical, (got.event_type, got.action), got.format) == (
        canonical,
        parts,
        NameFormat.SEGMENT,
    )


@pytest.mark.parametrize("name", ["購入完了", "3D Model Viewed", "", " . ", "a" * 70 + " b"])
def test_names_the_rules_cannot_hold_get_a_stable_hash_name(name: str) -> None:
    got = segment_name(name)
    assert got.event_type == "segment" and got.action.startswith("h")
    assert got == segment_name(name)
    assert got != segment_name(name + "x"), "distinct originals stay distinct"


@settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=80))
def test_every_name_maps_to_a_valid_one(name: str) -> None:
    got = segment_name(name)
    assert normalize(event_type=got.event_type, action=got.action).canonical == got.canonical
    assert segment_slug(name) == segment_slug(segment_slug(name)), "the slug is a fixed point"


def test_clock_skew_is_corrected_by_received_minus_sent() -> None:
    hour = 3_600_000
    assert segment.occurred_ms(1_000 * hour, 999 * hour, 1_000 * hour) == 1_001 * hour
    assert segment.occurred_ms(1_000 * hour, None, 5_000 * hour) == 1_000 * hour
    assert segment.occurred_ms(None, 999 * hour, 5_000 * hour) == 5_000 * hour
    ev = _parse(
        {"type": "track", "event": "a b", "userId": "u", "timestamp": "2024-05-31T23:00:00Z"},
        sentAt="2024-05-31T23:30:00.000Z",  # the client's clock is 30 minutes behind
    )
    assert ev.occurred_at_ms == RECEIVED - 30 * 60_000
    own = {"type": "track", "event": "a b", "userId": "u", "timestamp": "2024-05-31T23:00:00Z"}
    ev = _parse({**own, "sentAt": "2024-05-31T23:00:00Z"}, sentAt="2024-05-31T23:30:00Z")
    assert ev.occurred_at_ms == RECEIVED, "the message's own sentAt wins over the batch's"
    with pytest.raises(InvalidEvent) as exc:
        _parse({**own, "timestamp": "yesterday"})
    assert exc.value.field == "timestamp"


def test_a_batch_context_and_integrations_merge_into_each_item() -> None:
    assert segment.merge({"a": 1, "b": 1}, {"b": 2}) == {"a": 1, "b": 2}
    assert segment.merge(None, {}) == {}
    ev = _parse(
        {"type": "track", "event": "a b", "userId": "u", "context": {"library": {"name": "x"}}},
        context={"ip": "1.2.3.4", "library": {"name": "batch"}},
        integrations={"All": False},
    )
    seg = ev.properties["$segment"]
    assert seg["context"] == {"ip": "1.2.3.4", "library": {"name": "x"}}
    assert seg["integrations"] == {"All": False}


def test_identities_traits_and_kept_fields() -> None:
    ev = _parse(
        {"userId": 42, "anonymousId": "a1", "messageId": "m1", "event": "Order Completed"},
        call="track",
    )
    assert (ev.user_id, ev.anonymous_id, ev.external_id) == ("42", "a1", "m1")
    assert ev.properties["$segment"] == {"type": "track", "event": "Order Completed"}
    alias = _parse({"previousId": "a2", "userId": "u1", "anonymousId": "a3"}, call="alias")
    assert (alias.anonymous_id, alias.user_id, alias.name.canonical) == ("a2", "u1", "user_aliased")
    assert alias.properties["$segment"]["anonymousId"] == "a3"
    ident = _parse({"userId": "u1", "traits": {"plan": "pro"}}, call="identify")
    assert ident.traits == {"plan": "pro"} and "traits" not in ident.properties["$segment"]
    group = _parse({"userId": "u1", "groupId": "g1", "traits": {"name": "Acme"}}, call="group")
    assert (group.subject_type, group.subject_id) == ("group", "g1")
    assert group.traits == {"group:g1": {"name": "Acme"}}
    page = _parse({"anonymousId": "a", "userId": "", "name": "Pricing"}, call="page")
    assert (page.user_id, page.name.canonical) == (None, "page_viewed")
    assert page.properties["$segment"]["name"] == "Pricing"


@pytest.mark.parametrize(
    ("message", "call", "field"),
    [
        ({"event": "a b"}, "track", "userId"),
        ({"userId": "u"}, "track", "event"),
        ({"userId": "u", "event": ""}, "track", "event"),
        ({"userId": True, "event": "a b"}, "track", "userId"),
        ({"userId": "u"}, None, "type"),
        ({"type": "purchase", "userId": "u"}, None, "type"),
        ({"userId": "u"}, "alias", "previousId"),
        ({"userId": "u"}, "group", "groupId"),
        ({"userId": "u", "event": "a b", "properties": []}, "track", "properties"),
        ({"userId": "u", "event": "a b", "properties": {"$segment": 1}}, "track", None),
    ],
)
def test_invalid_messages_name_their_field(
    message: dict[str, Any], call: str | None, field: str | None
) -> None:
    with pytest.raises(InvalidEvent) as exc:
        _parse(message, call)
    if field is not None:
        assert exc.value.field == field
    else:
        assert exc.value.field == "properties.$segment"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
keys = st.sampled_from(
    [
        *("type", "event", "userId", "anonymousId", "previousId", "groupId", "timestamp"),
        *("sentAt", "properties", "traits", "context", "messageId", "name"),
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    message=st.dictionaries(keys | st.text(max_size=6), json_values, max_size=8) | json_values,
    call=st.none() | st.sampled_from(sorted(segment.CALLS)),
)
def test_any_message_parses_or_raises_invalid_event(message: Any, call: str | None) -> None:
    raw = json.dumps(message).encode()
    payload = segment.envelope(raw, call=call) if call else segment.envelope(raw, shared=b"{}")
    try:
        segment.parse(payload, RECEIVED)
    except InvalidEvent as exc:
        assert exc.message


def test_the_write_key_header() -> None:
    basic = "Basic " + base64.b64encode(b"ep_key:").decode()
    assert write_key(basic) == "ep_key"
    assert write_key("Bearer ep_key") == "ep_key"
    for bad in ("Basic !!", "Basic " + base64.b64encode(b":pw").decode(), "Token x", "Basic"):
        with pytest.raises(Unauthorized):
            write_key(bad)


def test_gunzip_stops_at_its_limit() -> None:
    body = b'{"batch": []}'
    assert gunzip(gzip.compress(body), 100) == body
    assert gunzip(gzip.compress(body) + gzip.compress(body), 100) == body + body
    with pytest.raises(InvalidEvent, match="over 100"):
        gunzip(gzip.compress(b" " * 10_000_000), 100)  # 10 MB of spaces is ~10 KB gzipped
    for bad in (b"not gzip", gzip.compress(body)[:-6]):
        with pytest.raises(InvalidEvent):
            gunzip(bad, 100)


def test_the_write_key_never_reaches_an_envelope() -> None:
    assert _without_write_key(b'{"a": 1}') == b'{"a": 1}'
    assert json.loads(_without_write_key(b'{"writeKey": "ep_x", "a": 1}')) == {"a": 1}
    assert segment.shared_bytes(None, None, None) == b"{}"


def test_a_bad_shared_field_is_each_messages_error() -> None:
    message = json.dumps({"type": "track", "event": "a b", "userId": "u"}).encode()
    for shared, field in (({"context": 5}, "context"), ({"sentAt": 1}, "sentAt")):
        with pytest.raises(InvalidEvent) as exc:
            segment.parse(segment.envelope(message, shared=json.dumps(shared).encode()), RECEIVED)
        assert exc.value.field == field

from __future__ import annotations

from typing import Any

import pytest

from eventpipe.codec import IDENTITY_LINK, AvroCodec
from eventpipe.identity import identity_key, resolve, valid_id


def rec(**kw: Any) -> dict[str, Any]:
    base = {
        "product": "p",
        "event_id": "evt_1",
        "occurred_at": 1_700_000_000_000,
        "anonymous_id": None,
        "user_id": None,
        "subject_id": None,
        "person_id": "",
    }
    return base | kw


@pytest.mark.parametrize(
    "bad", ["", "null", "NULL", " undefined ", "anonymous", "0", "[object Object]"]
)
def test_placeholder_ids_never_link(bad: str) -> None:
    assert valid_id(bad) is None
    out = resolve(rec(anonymous_id="a1", user_id=bad), None)
    assert out.link is None and out.person_id == "a1"
    out = resolve(rec(anonymous_id=bad, user_id="u1"), None)
    assert out.link is None and out.person_id == "u1"


def test_first_link_is_stored_and_published() -> None:
    out = resolve(rec(anonymous_id="a1", user_id="u1"), None)
    assert out.person_id == "u1" and out.store == "u1"
    assert out.link is not None and out.link["status"] == "linked"
    AvroCodec().encode(IDENTITY_LINK, out.link)


def test_known_link_resolves_later_anonymous_events() -> None:
    assert resolve(rec(anonymous_id="a1"), "u1").person_id == "u1"
    assert resolve(rec(anonymous_id="a1"), None).person_id == "a1"


def test_a_link_is_never_repointed_and_the_conflict_is_recorded() -> None:
    out = resolve(rec(anonymous_id="a1", user_id="u2"), "u1")
    assert out.store is None, "the table keeps u1"
    assert out.link is not None and out.link["status"] == "conflict"
    assert out.person_id == "u2", "the event itself still belongs to the user it names"
    same = resolve(rec(anonymous_id="a1", user_id="u1"), "u1")
    assert same.link is None and same.store is None


def test_identity_key_groups_by_product_and_anonymous_id() -> None:
    assert identity_key("p", "a1", "u1", "evt_1") == identity_key("p", "a1", "a1", "evt_2")
    assert identity_key("p", "a1", "u1", "evt_1") != identity_key("q", "a1", "u1", "evt_1")
    # no anonymous id: the actor; a placeholder is no one, so the event id (no hot "null" key)
    assert identity_key("p", None, "u1", "evt_1") == identity_key("p", "null", "u1", "evt_2")
    assert identity_key("p", "null", "null", "evt_1") == b"p\x1fevt_1"

"""The catalog's pure rules: the filter grammar and its SQL, sorting, paging, bodies and ids."""

from __future__ import annotations

from typing import Any

import pytest

from eventpipe.catalog.filters import MAX_DEPTH, compile_filter, compile_sort, parse_json
from eventpipe.catalog.model import Create, Patch, decode, integration_id, stable_id
from eventpipe.catalog.paging import Page, envelope
from eventpipe.catalog.sql import id_sql
from eventpipe.errors import InvalidEvent


def leaf(op: str, field: str, value: Any) -> dict[str, Any]:
    return {"operator": op, "field": field, "value": value}


def test_values_are_parameters_never_sql_text() -> None:
    evil = "x' OR 1=1 --"
    out = compile_filter(
        {
            "operator": "or",
            "operands": [
                leaf("exact", "title", evil),
                leaf("contains", "tags", evil),
                leaf("in", "description", [evil]),
            ],
        }
    )
    assert evil not in out.sql
    assert out.sql == (
        "(title = {f0:String} OR "
        "arrayExists(x -> positionCaseInsensitiveUTF8(x, {f1:String}) > 0, tags) OR "
        "has({f2:Array(String)}, description))"
    )
    assert out.params == {"f0": evil, "f1": evil, "f2": [evil]}


@pytest.mark.parametrize(
    ("tree", "sql"),
    [
        (leaf("exact", "type", "event"), "entity_type = {f0:String}"),
        (leaf("exact", "verified", True), "verified = {f0:Bool}"),
        (leaf("exact", "tags", "t"), "has(tags, {f0:String})"),
        (leaf("in", "pii", [True]), "has({f0:Array(Bool)}, pii)"),
        (leaf("in", "owners", ["a"]), "hasAny(owners, {f0:Array(String)})"),
        (leaf("is_set", "parent_id", True), "parent_id != ''"),
        (leaf("is_set", "tags", False), "NOT notEmpty(tags)"),
        ({"operator": "is_set", "field": "title"}, "title != ''"),
        (
            {"operator": "not", "operands": [leaf("exact", "id", "a")]},
            "(NOT id = {f0:String})",
        ),
    ],
)
def test_each_operator_compiles(tree: dict[str, Any], sql: str) -> None:
    assert compile_filter(tree).sql == sql


@pytest.mark.parametrize(
    ("tree", "field"),
    [
        ("x", "filter"),
        ({"operator": "exact"}, "filter.field"),
        ({"field": "title", "value": "x"}, "filter.operator"),
        (leaf("exact", "title", 3), "filter.value"),
        (leaf("exact", "type", "table"), "filter.value"),
        (leaf("exact", "pii", "true"), "filter.value"),
        (leaf("contains", "pii", True), "filter.operator"),
        (leaf("is_set", "verified", True), "filter.field"),
        (leaf("is_set", "title", "yes"), "filter.value"),
        (leaf("in", "title", "a"), "filter.value"),
        (leaf("in", "title", ["a", None]), "filter.value[1]"),
        ({"operator": "or", "operands": "x"}, "filter.operands"),
        ({"operator": "not", "operands": []}, "filter.operands"),
        ({"operator": "and", "operands": [leaf("exact", "id", "a")], "field": "x"}, "filter.field"),
        (
            {"operator": "and", "operands": [leaf("exact", "id", "a"), {"operator": "xor"}]},
            "filter.operands[1].operator",
        ),
    ],
)
def test_a_bad_filter_names_its_part(tree: Any, field: str) -> None:
    with pytest.raises(InvalidEvent) as err:
        compile_filter(tree)
    assert err.value.field == field
    assert err.value.message.startswith(field)


def test_filters_are_bounded() -> None:
    tree: dict[str, Any] = leaf("exact", "id", "a")
    for _ in range(MAX_DEPTH + 1):
        tree = {"operator": "not", "operands": [tree]}
    with pytest.raises(InvalidEvent, match="deeper"):
        compile_filter(tree)
    wide = {"operator": "or", "operands": [leaf("exact", "id", "a")] * 300}
    with pytest.raises(InvalidEvent, match="conditions"):
        compile_filter(wide)


def test_parse_json_and_sort() -> None:
    assert parse_json(None, "filter") is None
    with pytest.raises(InvalidEvent) as err:
        parse_json("{", "sort")
    assert err.value.field == "sort"
    assert compile_sort(None) == "title ASC, id ASC"
    assert compile_sort({"field": "type", "order": "desc"}) == "entity_type DESC, id ASC"
    assert compile_sort([{"field": "volume_24h", "order": "desc"}, {"field": "title"}]) == (
        "volume_24h DESC, title ASC, id ASC"
    )
    for bad, field in [
        ({"field": "tags"}, "sort.field"),
        ({"field": "title", "order": "up"}, "sort.order"),
        ([{"field": "title"}, "x"], "sort[1]"),
    ]:
        with pytest.raises(InvalidEvent) as err:
            compile_sort(bad)
        assert err.value.field == field


def test_paging_envelope_has_real_nulls_and_keeps_the_query() -> None:
    url = "http://h/api/v1/event/category?title=A&page=2&page_size=2"
    query = {"title": "A", "page": "2", "page_size": "2"}
    out = envelope(url, query, Page(2, 2), 5, ["r"])
    assert out["meta"] == {"page": 2, "previous_page": 1, "next_page": 3}
    assert out["links"]["next"] == "http://h/api/v1/event/category?title=A&page_size=2&page=3"
    assert out["total_pages"] == 3 and out["count"] == 5
    last = envelope(url, query, Page(3, 2), 5, [])
    assert last["links"]["next"] is None and last["meta"]["next_page"] is None
    empty = envelope(url, {}, Page(1, 50), 0, [])
    assert empty["links"] == {"next": None, "previous": None} and empty["total_pages"] == 1
    assert Page.from_query({}) == Page(1, 50)
    with pytest.raises(InvalidEvent):
        Page.from_query({"page_size": "0"})


def test_bodies_name_the_bad_field() -> None:
    assert decode(b'{"pii": true}', Patch).changes() == {"pii": True}
    for body, field in [
        (b'{"pii": "true"}', "pii"),
        (b'{"title": "x"}', "title"),
        (b'{"tags": [1]}', "tags"),
    ]:
        with pytest.raises(InvalidEvent) as err:
            decode(body, Patch)
        assert err.value.field == field
    with pytest.raises(InvalidEvent) as err:
        decode(b'{"title": ""}', Create)
    assert err.value.field == "title"
    with pytest.raises(InvalidEvent, match="malformed"):
        decode(b"{", Create)


def test_ids_are_stable_32_hex_and_integrations_accept_a_source_name() -> None:
    one = stable_id("p", "event", "ticket_updated")
    assert (
        one
        == stable_id("p", "event", "ticket_updated")
        != stable_id("q", "event", "ticket_updated")
    )
    assert len(one) == 32 and int(one, 16) >= 0
    assert stable_id("p", "event", "ab") != stable_id("p", "event_category", "ab")
    body = decode(b'{"integration": "api"}', Create)
    assert body.integration_of("p") == integration_id("p", "api")
    hex_id = "cf103b4785764467ad34384cd523abd9"
    assert (
        decode(f'{{"integration_id": "{hex_id}"}}'.encode(), Create).integration_of("p") == hex_id
    )
    assert "'\\0'" in id_sql("event", "canonical_name"), "NUL-joined as stable_id is"

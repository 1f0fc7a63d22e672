"""The OpenAPI document's request schemas against the parsers they are generated from.

Validated with a real JSON-schema validator (jsonschema-rs, ECMA-262 patterns as the document
means them): every documented example in ``tests/e2e/golden/`` is valid where the edge accepted
it and invalid where it rejected it, and generated names are valid exactly when the parser
accepts them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventpipe import dialects
from eventpipe.errors import InvalidEvent
from producers.openapi import openapi

GOLDEN = sorted((Path(__file__).parents[1] / "e2e" / "golden").glob("*/*.json"))
DOC = openapi()
DIALECTS = {"V2Event": "v2", "V1Event": "v1", "NamedEvent": "named"}


def _validator(ref: str) -> Any:
    return jsonschema_rs.Draft202012Validator({"$ref": ref, "components": DOC["components"]})


def _request_ref(path: str) -> str:
    ref: str = DOC["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "$ref"
    ]
    return ref


def _item_ref(batch_ref: str) -> str:
    name = batch_ref.rsplit("/", 1)[1]
    ref: str = DOC["components"]["schemas"][name]["properties"]["events"]["items"]["$ref"]
    return ref


VALIDATORS = {name: _validator(f"#/components/schemas/{name}") for name in DIALECTS}


def _valid(name: str, body: Any) -> bool:
    ok: bool = VALIDATORS[name].is_valid(body)
    return ok


def _parses(name: str, body: Any) -> bool:
    try:
        dialects.parse(DIALECTS[name], json.dumps(body).encode(), 1_700_000_000_000)
    except InvalidEvent:
        return False
    return True


def test_there_are_golden_examples() -> None:
    assert len(GOLDEN) >= 10


@pytest.mark.parametrize("golden", GOLDEN, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_golden_request_validates_where_the_edge_accepted_it(golden: Path) -> None:
    case = json.loads(golden.read_text())
    ref = _request_ref(case["path"])
    body = case["body"]
    if "events" not in body:  # one event
        assert case["status"] == 202
        errors = [e.message for e in _validator(ref).iter_errors(body)]
        assert not errors, errors
        return
    rejected = {e["index"] for e in case["response"]["errors"]}
    events = _validator(_item_ref(ref))
    for i, event in enumerate(body["events"]):
        assert events.is_valid(event) is (i not in rejected), (i, event)
    kept = [e for i, e in enumerate(body["events"]) if i not in rejected]
    assert _validator(ref).is_valid({"events": kept})
    assert _validator(ref).is_valid(body) is not rejected


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("V2Event", {"event": "user.signed_up", "ocurred_at": "2026-02-10T12:00:00Z"}),
        ("V2Event", {"subject_type": "user", "subject_id": "u1"}),
        ("V2Event", {"event": "user.signed_up", "event_type": "user"}),
        ("V2Event", {"event_type": "signup"}),
        ("V2Event", {"event_type": "project", "action": "Created"}),
        ("V2Event", {"event": "a.b", "properties": {}, "metadata": {}}),
        ("V2Event", {"event": "a.b", "subject_type": "team"}),
        ("V2Event", {"event": "a.b", "external_id": ""}),
        ("V2Event", {"event": "a.b", "subject_id": "u" * 201}),
        ("V1Event", {"event": "a.b", "timestamp": "2024-03-15T14:22:00Z"}),
        ("V1Event", {"event": "a.b", "user_id": "u1"}),
        ("V1Event", {"event": "a.b", "timestamp": "2024-03-15T14:22:00Z", "anonymous_id": None}),
        ("NamedEvent", {"name": "ticket.updated"}),
        ("NamedEvent", {"name": "ticket", "data": {}}),
        ("NamedEvent", {"name": "a.b", "data": {}, "v": "2021-09-15"}),
        ("NamedEvent", {"name": "a.b", "data": {}, "ts": -1}),
        ("NamedEvent", {"name": "a.b", "data": []}),
    ],
)
def test_a_body_the_parser_refuses_is_invalid(name: str, body: dict[str, Any]) -> None:
    assert not _parses(name, body)
    assert not _valid(name, body)


# Names near the rules' edges: separators, case, digits, and parts around MAX_PART_LENGTH (64).
# No newline: Python's `$` also matches before a final newline, ECMA-262's does not.
_PART = st.text(alphabet="ab9_Z", max_size=3) | st.integers(62, 66).map(lambda n: "a" * n)
_NAME = st.tuples(_PART, st.sampled_from(["", ".", ":", "_", "._", ":.", "__"]), _PART).map(
    "".join
) | st.text(alphabet="ab9_.:Z ", max_size=6)
_MAYBE = st.none() | _NAME


@settings(max_examples=400, deadline=None)
@given(
    fields=st.fixed_dictionaries(
        {}, optional={"event": _MAYBE, "event_type": _MAYBE, "action": _MAYBE}
    )
)
def test_v2_names_are_valid_exactly_when_the_parser_accepts_them(fields: dict[str, Any]) -> None:
    assert _valid("V2Event", fields) is _parses("V2Event", fields), fields


@settings(max_examples=200, deadline=None)
@given(name=_NAME)
def test_one_string_names_are_valid_exactly_when_the_parser_accepts_them(name: str) -> None:
    v1 = {"event": name, "timestamp": "2024-03-15T14:22:00Z", "user_id": "u1"}
    assert _valid("V1Event", v1) is _parses("V1Event", v1), name
    named = {"name": name, "data": {}}
    assert _valid("NamedEvent", named) is _parses("NamedEvent", named), name


UNDOCUMENTED = {"/healthz", "/openapi.json", "/metrics", "/dashboard", "/dashboard/static/{name}"}
"""Served, and left out of the document on purpose: probes, the document itself, the page."""


def _served() -> set[tuple[str, str]]:
    from typing import cast

    from eventpipe.catalog import Catalog
    from eventpipe.settings import Settings
    from producers.app import create_app, guard
    from producers.auth import KeyStore
    from producers.catalog import catalog_routes
    from producers.journey_routes import journey_routes
    from sinks.store import EventStore
    from tests.fakes import ScriptedPublisher

    keys = KeyStore([], 100)
    app = create_app(Settings(kafka_bootstrap="unused:9092"), ScriptedPublisher(), keys)
    # The catalog's and the journeys' routes only touch their store inside the handlers.
    routes = [
        *app.routes,
        *catalog_routes(cast(Catalog, None), keys, guard),
        *journey_routes(cast(EventStore, None), keys, guard),
    ]
    return {
        (r.path, m.lower())
        for r in routes
        if r.path not in UNDOCUMENTED and not r.path.startswith("/admin")
        for m in (r.methods or ()) - {"HEAD"}
    }


def test_every_served_route_is_documented_and_nothing_else() -> None:
    documented = {(p, m) for p, ops in DOC["paths"].items() for m in ops}
    assert documented == _served()


def test_every_reference_resolves() -> None:
    text = json.dumps(DOC)
    for name in {ref.rsplit("/", 1)[1] for ref in _refs(DOC)}:
        assert name in DOC["components"]["schemas"], name
    assert "#/components/schemas/" in text


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"title": "Checkout", "pii": True, "tags": ["a"]}, True),
        ({"title": "Checkout", "nope": 1}, False),
        ({"pii": "yes"}, False),
    ],
)
def test_the_catalog_create_schema_agrees_with_its_decoder(
    body: dict[str, Any], valid: bool
) -> None:
    from eventpipe.catalog.model import Create, decode

    validator = _validator("#/components/schemas/CatalogCreate")
    try:
        decode(json.dumps(body).encode(), Create)
        decoded = True
    except InvalidEvent:
        decoded = False
    assert decoded is valid
    assert validator.is_valid(body) is valid

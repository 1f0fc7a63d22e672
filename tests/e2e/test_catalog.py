"""The event catalog API of document 002 end to end, with the document's example values: every
endpoint, the List Resources filter grammar, paging and workspace isolation."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

import httpx

from tests.conftest import Stack, Workspace

INTEGRATION = "cf103b4785764467ad34384cd523abd9"
TEAM = "e8ac09ede51e4e618eaf59942c98c260"
DOC_CATEGORY_ID = "43d7c33dad744dfbbfadc172f6701afb"
DOC_EVENT_ID = "226dc8aafa8d46468b116652cdc64065"
PATCH_BODY = {
    "description": "This is a description for a sample table.",
    "definition": "\n# Castae illa\n\n## Finemque aequore\n\nLorem markdownum motus",
    "pii": False,
    "verified": True,
    "published": True,
    "teams": ["e8ac09ed-e51e-4e61-8eaf-59942c98c260", "cca810f1-11c1-4117-bc23-20ae8020897f"],
    "owners": ["33733f42-8ff7-460b-9e20-50a2133d3bb0", "c90dedee-40ee-47ec-9c27-96dc3b2ec363"],
    "collections": ["3b2c7185-fb5d-4d94-89d4-3dae08e093a9"],
    "tags": ["04654d61-4f64-4f08-b697-3915b5137c49", "429693a2-a5e7-4525-b413-ece5e96bc5b3"],
    "subscribers": ["c90dedee-40ee-47ec-9c27-96dc3b2ec363"],
}
HEX32 = re.compile(r"^[0-9a-f]{32}$")


def call(ws: Workspace, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {ws.key}"}
    return ws.http.request(method, path, headers=headers, **kw)


def resources(ws: Workspace, tree: Any, **params: Any) -> httpx.Response:
    query = {"filter": json.dumps(tree) if not isinstance(tree, str) else tree, **params}
    return call(ws, "GET", "/api/v1/resource/catalog", params=query)


def titles(r: httpx.Response) -> set[str]:
    assert r.status_code == 200, r.text
    return {x["title"] for x in r.json()["results"]}


def landing_page(ws: Workspace) -> dict[str, Any]:
    body = {"title": "Landing Page", "integration": INTEGRATION, "teams": [TEAM]}
    r = call(ws, "POST", "/api/v1/event/category", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def clicked(ws: Workspace, category_id: str) -> dict[str, Any]:
    r = call(
        ws, "POST", "/api/v1/event/events", json={"title": "Clicked", "parent_id": category_id}
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_event_categories(stack: Stack, ws: Workspace) -> None:
    cat = landing_page(ws)
    assert HEX32.match(cat["id"])
    assert cat["entity_type"] == "event_category"
    assert cat["integration_id"] == INTEGRATION and cat["teams"] == [TEAM]
    assert cat["discovered"] is False and cat["observed"] is None
    listed = call(ws, "GET", "/api/v1/event/category", params={"title": "Landing Page"})
    assert listed.status_code == 200, listed.text
    assert [x["id"] for x in listed.json()["results"]] == [cat["id"]]
    assert call(ws, "GET", "/api/v1/event/category", params={"title": "Nope"}).json()["count"] == 0
    got = call(ws, "GET", f"/api/v1/event/category/{cat['id']}")
    assert got.status_code == 200 and got.json() == cat
    assert call(ws, "GET", f"/api/v1/event/category/{DOC_CATEGORY_ID}").status_code == 404
    again = call(
        ws,
        "POST",
        "/api/v1/event/category",
        json={"title": "Landing Page", "integration": INTEGRATION},
    )
    assert again.status_code == 409


def test_creating_without_integration_or_parent_is_a_400_naming_the_field(
    stack: Stack, ws: Workspace
) -> None:
    def post(path: str, body: dict[str, Any]) -> httpx.Response:
        return call(ws, "POST", f"/api/v1/event/{path}", json=body)

    assert post("category", {"title": "Landing Page"}).json()["field"] == "integration"
    assert post("category", {"integration": INTEGRATION}).json()["field"] == "title"
    cat = landing_page(ws)
    for path, body in [
        ("events", {"title": "Clicked"}),
        ("events", {"title": "Clicked", "parent_id": DOC_CATEGORY_ID}),
        ("event_properties", {"title": "plan"}),
        ("event_properties", {"title": "plan", "parent_id": cat["id"]}),  # not an event
    ]:
        r = post(path, body)
        assert r.status_code == 400, (path, body, r.text)
        assert r.json()["field"] == "parent_id", r.text
    bad = post("events", {"title": "Clicked", "parent_id": cat["id"], "pii": "yes"})
    assert bad.status_code == 400 and bad.json()["field"] == "pii"


def test_events_deprecated_list_and_get_patch_delete(stack: Stack, ws: Workspace) -> None:
    cat = landing_page(ws)
    ev = clicked(ws, cat["id"])
    assert ev["parent_id"] == cat["id"] and ev["integration_id"] == INTEGRATION
    params = {"integration_id": INTEGRATION, "parent_id": cat["id"], "title": "Clicked"}
    listed = call(ws, "GET", "/api/v1/event/events", params=params)
    assert listed.status_code == 200, listed.text
    assert [x["id"] for x in listed.json()["results"]] == [ev["id"]]
    assert listed.headers["Deprecation"] == "true"
    link = unquote(listed.headers["Link"])
    assert (
        '/api/v1/resource/catalog?filter={"operator":"exact","field":"type","value":"event"}'
        in link
    )
    got = call(ws, "GET", f"/api/v1/event/events/{ev['id']}")
    assert got.status_code == 200 and got.json()["id"] == ev["id"]
    assert got.headers["Deprecation"] == "true"
    assert f'"field":"id","value":"{ev["id"]}"' in unquote(got.headers["Link"])
    successor = resources(ws, {"operator": "exact", "field": "id", "value": ev["id"]})
    assert [x["id"] for x in successor.json()["results"]] == [ev["id"]]

    patched = call(ws, "PATCH", f"/api/v1/event/events/{ev['id']}", json=PATCH_BODY)
    assert patched.status_code == 200, patched.text
    after = call(ws, "GET", f"/api/v1/event/events/{ev['id']}").json()
    assert {k: after[k] for k in PATCH_BODY} == PATCH_BODY, "a GET after a PATCH returns it"
    assert after["title"] == "Clicked" and after["parent_id"] == cat["id"]
    only = call(ws, "PATCH", f"/api/v1/event/events/{ev['id']}", json={"pii": True}).json()
    assert only["pii"] is True and only["description"] == PATCH_BODY["description"]
    for bad in ({"pii": "false"}, {"title": "renamed"}, {"tags": "x"}):
        r = call(ws, "PATCH", f"/api/v1/event/events/{ev['id']}", json=bad)
        assert r.status_code == 400 and r.json()["field"] == next(iter(bad)), r.text

    assert call(ws, "DELETE", f"/api/v1/event/events/{ev['id']}").status_code == 200
    assert call(ws, "GET", f"/api/v1/event/events/{ev['id']}").status_code == 404
    assert call(ws, "DELETE", f"/api/v1/event/events/{ev['id']}").status_code == 404
    for method in ("GET", "DELETE", "PATCH"):
        r = call(ws, method, f"/api/v1/event/events/{DOC_EVENT_ID}", json={})
        assert r.status_code == 404, (method, r.text)
    assert clicked(ws, cat["id"])["description"] == "", "re-created after a delete, fresh"


def test_event_properties(stack: Stack, ws: Workspace) -> None:
    ev = clicked(ws, landing_page(ws)["id"])
    r = call(
        ws, "POST", "/api/v1/event/event_properties", json={"title": "true", "parent_id": ev["id"]}
    )
    assert r.status_code == 200, r.text
    prop = r.json()
    assert prop["entity_type"] == "event_property" and prop["parent_id"] == ev["id"]
    assert HEX32.match(prop["id"]) and prop["integration_id"] == INTEGRATION
    params = {"integration_id": INTEGRATION, "parent_id": ev["id"], "title": "true"}
    listed = call(ws, "GET", "/api/v1/event/event_properties", params=params)
    assert [x["id"] for x in listed.json()["results"]] == [prop["id"]]
    assert "Deprecation" not in listed.headers
    path = f"/api/v1/event/event_properties/{prop['id']}"
    assert call(ws, "PATCH", path, json=PATCH_BODY).status_code == 200
    got = call(ws, "GET", path)
    assert got.status_code == 200 and {k: got.json()[k] for k in PATCH_BODY} == PATCH_BODY
    assert call(ws, "DELETE", path).status_code == 200
    assert call(ws, "GET", path).status_code == 404
    assert call(ws, "GET", f"/api/v1/event/event_properties/{DOC_EVENT_ID}").status_code == 404
    assert call(ws, "GET", f"/api/v1/event/category/{ev['id']}").status_code == 404, "wrong type"


def test_filter_grammar(stack: Stack, ws: Workspace) -> None:
    cat = landing_page(ws)
    ev = clicked(ws, cat["id"])
    for title, tags, verified in [("Scrolled", ["t-1"], True), ("Hovered", [], False)]:
        body = {"title": title, "parent_id": cat["id"], "tags": tags, "verified": verified}
        assert call(ws, "POST", "/api/v1/event/events", json=body).status_code == 200
    call(ws, "PATCH", f"/api/v1/event/events/{ev['id']}", json={"pii": True, "tags": ["t-2"]})

    def leaf(op: str, field: str, value: Any = None) -> dict[str, Any]:
        out = {"operator": op, "field": field}
        return out if value is None else {**out, "value": value}

    events = leaf("exact", "type", "event")
    assert titles(resources(ws, events)) == {"Clicked", "Scrolled", "Hovered"}
    assert titles(resources(ws, leaf("exact", "type", "event_category"))) == {"Landing Page"}
    assert titles(resources(ws, leaf("exact", "title", "Scrolled"))) == {"Scrolled"}
    assert titles(resources(ws, leaf("contains", "title", "ROLL"))) == {"Scrolled"}
    assert titles(resources(ws, leaf("in", "title", ["Hovered", "Clicked", "x"]))) == {
        "Hovered",
        "Clicked",
    }
    assert titles(resources(ws, leaf("exact", "verified", True))) == {"Scrolled"}
    assert titles(resources(ws, leaf("exact", "pii", True))) == {"Clicked"}
    assert titles(resources(ws, leaf("exact", "tags", "t-1"))) == {"Scrolled"}
    assert titles(resources(ws, leaf("in", "tags", ["t-1", "t-2"]))) == {"Scrolled", "Clicked"}
    assert titles(resources(ws, leaf("is_set", "tags", True))) == {"Scrolled", "Clicked"}
    assert titles(resources(ws, leaf("is_set", "parent_id", False))) == {"Landing Page"}
    assert titles(resources(ws, leaf("exact", "parent_id", cat["id"]))) == {
        "Clicked",
        "Scrolled",
        "Hovered",
    }
    assert titles(resources(ws, leaf("exact", "integration_id", INTEGRATION))) == {
        "Landing Page",
        "Clicked",
        "Scrolled",
        "Hovered",
    }
    nested = {
        "operator": "and",
        "operands": [
            events,
            {
                "operator": "or",
                "operands": [
                    leaf("exact", "pii", True),
                    {"operator": "not", "operands": [leaf("is_set", "tags")]},
                ],
            },
        ],
    }
    assert titles(resources(ws, nested)) == {"Clicked", "Hovered"}
    by_title = resources(ws, events, sort=json.dumps({"field": "title", "order": "desc"}))
    assert [x["title"] for x in by_title.json()["results"]] == ["Scrolled", "Hovered", "Clicked"]

    bad: list[tuple[Any, str]] = [
        ("{not json", "filter"),
        ([], "filter"),
        ({"operator": "like", "field": "title", "value": "x"}, "filter.operator"),
        (leaf("exact", "colour", "red"), "filter.field"),
        (leaf("exact", "verified", "yes"), "filter.value"),
        (leaf("exact", "type", "table"), "filter.value"),
        (leaf("in", "title", []), "filter.value"),
        (leaf("in", "title", ["a", 1]), "filter.value[1]"),
        (leaf("is_set", "pii", True), "filter.field"),
        (leaf("contains", "verified", True), "filter.operator"),
        ({"operator": "and", "operands": []}, "filter.operands"),
        ({"operator": "not", "operands": [events, events]}, "filter.operands"),
        (
            {
                "operator": "or",
                "operands": [events, {"operator": "not", "operands": [leaf("exact", "x", "y")]}],
            },
            "filter.operands[1].operands[0].field",
        ),
        ({**events, "extra": 1}, "filter.extra"),
    ]
    for tree, field in bad:
        r = resources(ws, tree)
        assert r.status_code == 400, (tree, r.text)
        assert r.json()["field"] == field, (tree, r.json())
        assert field in r.json()["message"] or field == "filter"
    r = resources(ws, events, sort=json.dumps({"field": "colour"}))
    assert r.status_code == 400 and r.json()["field"] == "sort.field"
    r = call(ws, "GET", "/api/v1/resource/catalog", params={"filters": "{}"})
    assert r.status_code == 400 and r.json()["field"] == "filters"


def test_paging(stack: Stack, ws: Workspace) -> None:
    for i in range(5):
        body = {"title": f"Category {i}", "integration": INTEGRATION}
        assert call(ws, "POST", "/api/v1/event/category", json=body).status_code == 200
    r = call(ws, "GET", "/api/v1/event/category", params={"page_size": 2})
    body = r.json()
    assert body["count"] == 5 and body["total_pages"] == 3
    assert body["meta"] == {"page": 1, "previous_page": None, "next_page": 2}
    assert body["links"]["previous"] is None
    seen = [x["title"] for x in body["results"]]
    pages = 1
    while body["links"]["next"]:
        body = call(ws, "GET", body["links"]["next"]).json()
        pages += 1
        seen += [x["title"] for x in body["results"]]
        assert body["links"]["previous"] is not None
    assert pages == 3 and body["meta"] == {"page": 3, "previous_page": 2, "next_page": None}
    assert seen == [f"Category {i}" for i in range(5)], "sorted by title, no overlap or gap"
    past = call(ws, "GET", "/api/v1/event/category", params={"page_size": 2, "page": 9}).json()
    assert past["results"] == [] and past["count"] == 5
    for params in ({"page": 0}, {"page_size": 100000}, {"page": "x"}):
        r = call(ws, "GET", "/api/v1/event/category", params=params)
        assert r.status_code == 400 and r.json()["field"] == next(iter(params))


def test_workspaces_see_only_their_own_catalog(stack: Stack, ws: Workspace) -> None:
    other = stack.workspace()
    cat = landing_page(ws)
    ev = clicked(ws, cat["id"])
    assert call(other, "GET", f"/api/v1/event/category/{cat['id']}").status_code == 404
    for method in ("GET", "PATCH", "DELETE"):
        r = call(other, method, f"/api/v1/event/events/{ev['id']}", json={"pii": True})
        assert r.status_code == 404, (method, r.text)
    r = call(other, "POST", "/api/v1/event/events", json={"title": "X", "parent_id": cat["id"]})
    assert r.status_code == 400 and r.json()["field"] == "parent_id"
    assert call(other, "GET", "/api/v1/resource/catalog").json()["count"] == 0
    assert call(ws, "GET", f"/api/v1/event/events/{ev['id']}").json()["pii"] is False
    assert stack.http.get("/api/v1/resource/catalog").status_code == 401
    bad = {"Authorization": "Bearer ep_unknown"}
    assert stack.http.get("/api/v1/event/category", headers=bad).status_code == 401

"""The OpenAPI paths of the edge's routes beside the six ingestion endpoints.

Segment's Tracking API, the event catalog (document 002), "where is my event" and the
dashboard's data, for ``producers.openapi``. The catalog's request bodies are generated from the
types its handlers decode (``eventpipe.catalog.model``), so the document cannot drift from what
is accepted; the rest is written here, with the limits taken from the modules that enforce them.
A Segment message is free-form by design (the SDKs send more than any schema would name), so its
schema names the fields eventpipe reads and allows the others.
"""

from __future__ import annotations

from typing import Any

import msgspec

from eventpipe.catalog.model import Create, Patch, Resource
from eventpipe.catalog.paging import MAX_PAGE_SIZE
from eventpipe.dashboard import RANGES
from eventpipe.dialects.segment import MAX_BATCH_BYTES, MAX_MESSAGE_BYTES
from producers.segment import BATCH_PATHS, SINGLE_CALLS

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR = _json(_ref("Error"), "error: `error`, `message` and the `field` at fault")
_UNAUTHORIZED = _json(_ref("Error"), "missing, malformed or unknown API key")
_NOT_FOUND = _json(_ref("Error"), "nothing of that id in this workspace")

SEGMENT_MESSAGE: Schema = {
    "type": "object",
    "description": (
        f"One Segment message (at most {MAX_MESSAGE_BYTES} bytes as JSON). `userId` or "
        "`anonymousId` is required; a message eventpipe refuses is still answered 200 and shows "
        "in `rejected_events` with its field and reason, as Segment's own API does."
    ),
    "properties": {
        "type": {"type": "string", "enum": list(SINGLE_CALLS)},
        "messageId": {"type": "string", "description": "the external id (deduplicated)"},
        "userId": {"type": ["string", "integer", "null"]},
        "anonymousId": {"type": ["string", "integer", "null"]},
        "event": {"type": "string", "description": "track: the event name"},
        "properties": {"type": "object"},
        "traits": {"type": "object"},
        "context": {"type": "object"},
        "timestamp": {"type": "string", "format": "date-time"},
        "sentAt": {"type": "string", "format": "date-time"},
    },
}
SEGMENT_BATCH: Schema = {
    "type": "object",
    "description": f"At most {MAX_BATCH_BYTES} bytes; `context` and `integrations` apply to all.",
    "required": ["batch"],
    "properties": {
        "batch": {"type": "array", "items": _ref("SegmentMessage")},
        "context": {"type": "object"},
        "integrations": {"type": "object"},
        "sentAt": {"type": "string", "format": "date-time"},
        "writeKey": {"type": "string", "description": "the API key, when no header carries it"},
    },
}
SEGMENT_RESULT: Schema = {
    "type": "object",
    "properties": {"success": {"type": "boolean"}, "code": {"type": "string"}},
}


def _segment(summary: str, body: str) -> Schema:
    return {
        "summary": summary,
        "security": [{"basicAuth": []}, {"bearerAuth": []}, {}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(body)}}},
        "responses": {
            "200": _json(_ref("SegmentResult"), "every message acknowledged by Kafka"),
            "400": _json(_ref("SegmentResult"), "not JSON, not a message, or over the limits"),
            "401": _json(_ref("SegmentResult"), "missing or unknown write key"),
            "429": _json(_ref("SegmentResult"), "over the workspace's budget; Retry-After"),
            "503": _json(_ref("SegmentResult"), "Kafka did not acknowledge; send again"),
        },
    }


JOURNEY: Schema = {
    "type": "object",
    "required": ["state"],
    "properties": {
        "state": {"type": "string", "enum": ["stored", "rejected", "dropped"]},
        "event_id": {"type": "string"},
        "stored": {"type": ["object", "null"]},
        "rejections": {"type": "array", "items": {"type": "object"}},
        "duplicates": {"type": "array", "items": {"type": "object"}},
    },
}

JOURNEY_REF = _ref("Journey")

_PAGING = [
    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
    {
        "name": "page_size",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
    },
]
PAGE: Schema = {
    "type": "object",
    "required": ["links", "meta", "count", "results"],
    "properties": {
        "links": {"type": "object"},
        "meta": {"type": "object"},
        "count": {"type": "integer"},
        "results": {"type": "array", "items": _ref("CatalogResource")},
    },
}


def _id(name: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, description: str) -> Schema:
    return {"name": name, "in": "query", "schema": {"type": "string"}, "description": description}


def _op(
    summary: str,
    ok: Schema,
    *,
    body: str | None = None,
    params: list[Schema] | None = None,
    deprecated: bool = False,
) -> Schema:
    op: Schema = {
        "summary": summary,
        "responses": {"200": ok, "400": _ERROR, "401": _UNAUTHORIZED, "404": _NOT_FOUND},
    }
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    if params:
        op["parameters"] = params
    if deprecated:
        op["deprecated"] = True
    return op


def _catalog_paths() -> dict[str, Schema]:
    base = "/api/v1/event"
    one = _json(_ref("CatalogResource"), "the resource")
    page = _json(_ref("CatalogPage"), "one page of resources")
    listed = [*_PAGING, _query("title", "exact title")]
    under = [*listed, _query("integration_id", "exact"), _query("parent_id", "exact")]
    deleted = _json({"type": "object"}, "`{id, deleted: true}`")
    rows = _json({"type": "object"}, "`{count, results}`")
    paths: dict[str, Schema] = {}
    for path, kind, param, params, deprecated in (
        (f"{base}/category", "event category", "event_category_id", listed, False),
        (f"{base}/events", "event", "event_id", under, True),
        (f"{base}/event_properties", "event property", "event_property_id", under, False),
    ):
        paths[path] = {
            "get": _op(f"catalog: list {kind}s", page, params=params, deprecated=deprecated),
            "post": _op(f"catalog: create an {kind}", one, body="CatalogCreate"),
        }
        item: Schema = {
            "get": _op(f"catalog: one {kind}", one, params=[_id(param)], deprecated=deprecated)
        }
        if kind != "event category":
            item["patch"] = _op(
                f"catalog: curate an {kind}", one, body="CatalogPatch", params=[_id(param)]
            )
            item["delete"] = _op(f"catalog: delete an {kind}", deleted, params=[_id(param)])
        paths[f"{path}/{{{param}}}"] = item
    events = f"{base}/events/{{event_id}}"
    for tail in ("anomalies", "versions"):
        paths[f"{events}/{tail}"] = {"get": _op(f"catalog: {tail}", rows, params=[_id("event_id")])}
    paths[f"{base}/versions"] = {"get": _op("catalog: every new version", rows)}
    paths["/api/v1/resource/catalog"] = {
        "get": _op(
            "catalog: List Resources",
            page,
            params=[
                *_PAGING,
                _query("filter", "JSON filter tree: exact, contains, in, is_set; and, or, not"),
                _query("sort", "JSON sort"),
            ],
        )
    }
    return paths


def paths() -> dict[str, Schema]:
    """Every documented path of this module, by path and method."""
    out: dict[str, Schema] = {
        f"/v1/{call}": {"post": _segment(f"Segment: {call}", "SegmentMessage")}
        for call in SINGLE_CALLS
    }
    for path in BATCH_PATHS:
        out[path] = {"post": _segment(f"Segment: {path.rsplit('/', 1)[1]}", "SegmentBatch")}
    journey = _json(_ref("Journey"), "the event's journey")
    out["/api/v2/events/{uuid}"] = {
        "get": _op("where is my event, by its id", journey, params=[_id("uuid")])
    }
    out["/api/v2/events"] = {
        "get": _op(
            "where is my event, by external id or Idempotency-Key",
            _json(
                {"type": "object", "properties": {"data": {"type": "array", "items": JOURNEY_REF}}},
                "the journeys found",
            ),
            params=[_query("external_id", "one of the two"), _query("idempotency_key", "or")],
        )
    }
    out["/dashboard/data"] = {
        "get": _op(
            "the dashboard's data: health, sources and rollups",
            _json({"type": "object"}, "`{health, sources, rollups, scope}`"),
            params=[_query("range", f"one of {sorted(RANGES)}; hour by default")],
        )
    }
    out.update(_catalog_paths())
    return out


def components() -> dict[str, Schema]:
    """The schemas :func:`paths` refers to."""
    _, generated = msgspec.json.schema_components(
        [Create, Patch, Resource], ref_template="#/components/schemas/Catalog{name}"
    )
    schemas = {f"Catalog{name}": schema for name, schema in generated.items()}
    return {
        **schemas,
        "CatalogPage": PAGE,
        "SegmentMessage": SEGMENT_MESSAGE,
        "SegmentBatch": SEGMENT_BATCH,
        "SegmentResult": SEGMENT_RESULT,
        "Journey": JOURNEY,
    }

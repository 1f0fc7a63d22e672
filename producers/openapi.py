"""The edge's OpenAPI 3.1 document (served at ``GET /openapi.json``): the six ingestion endpoints
here, the edge's other routes (Segment, the catalog, journeys, dashboard data) from
``producers.api_paths``.

The request schemas are generated from the types the dialect parsers decode into
(``eventpipe.dialects``), whose annotations carry the limits and name patterns of
``eventpipe.dialects.common`` and ``eventpipe.naming``: one source for the parsers and the
document. Two things are added here, each a rule the parsers' code enforces and a type cannot
state: ``_CROSS_FIELD`` (which fields must come together), and a short view of the free-form
objects (``_DOCUMENTED_FREE_FORM``). The responses have no types (the handlers build dicts), so
their schemas are written here.
"""

from __future__ import annotations

import typing
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import msgspec
import orjson
from starlette.requests import Request
from starlette.responses import Response

from eventpipe.dialects.common import (
    MAX_DEPTH,
    MAX_KEYS,
    MAX_STRING_LENGTH,
    FreeForm,
)
from eventpipe.dialects.named import NamedEvent
from eventpipe.dialects.v1 import MAX_KEY_LENGTH, V1Event
from eventpipe.dialects.v2 import V2Event
from eventpipe.naming import FLAT_PATTERN
from producers import api_paths

Schema = dict[str, Any]

_DOCUMENTED_FREE_FORM = Annotated[
    dict[str, Any],
    msgspec.Meta(
        description=(
            f"Free-form JSON: at most {MAX_DEPTH} levels deep, {MAX_KEYS} keys per event, "
            f"strings of at most {MAX_STRING_LENGTH} characters, integers within int64, finite "
            "numbers, no duplicate keys."
        ),
        extra_json_schema={
            "maxProperties": MAX_KEYS,
            "propertyNames": {"maxLength": MAX_STRING_LENGTH},
        },
    ),
]
"""How the document shows ``FreeForm``: its own schema spells out each of its ten levels (780 KB,
0.3 s to generate per field), so the document states the limits in words instead."""

_NULL: Schema = {"type": "null"}
_NOT_NULL: Schema = {"not": _NULL}

_CROSS_FIELD: dict[str, Schema] = {
    # eventpipe.naming.normalize: a unified `event`, or `event_type` with `action` (preferred),
    # or a flat `event_type` alone (legacy), which must also be one part (PART_PATTERN).
    "V2Event": {
        "anyOf": [
            {
                "required": ["event"],
                "properties": {"event": _NOT_NULL, "event_type": _NULL, "action": _NULL},
            },
            {
                "required": ["event_type", "action"],
                "properties": {"event": _NULL, "event_type": _NOT_NULL, "action": _NOT_NULL},
            },
            {
                "required": ["event_type"],
                "properties": {
                    "event": _NULL,
                    "event_type": {"type": "string", "pattern": FLAT_PATTERN},
                    "action": _NULL,
                },
            },
        ],
        # dialects.v2.parse: `metadata` is an alias of `properties`, not a second object.
        "not": {
            "required": ["properties", "metadata"],
            "properties": {"properties": _NOT_NULL, "metadata": _NOT_NULL},
        },
    },
    # dialects.v1.parse: one of the two ids (400 names user_id).
    "V1Event": {
        "anyOf": [
            {"required": ["user_id"], "properties": {"user_id": _NOT_NULL}},
            {"required": ["anonymous_id"], "properties": {"anonymous_id": _NOT_NULL}},
        ]
    },
}

_FIELD_NOTES = {
    ("V2Event", "metadata"): "alias of properties (give one of them)",
    ("V2Event", "properties"): "`anonymous_id` links it to the user subject; `traits`: attributes",
    ("V1Event", "properties"): "`traits` (an object): user attributes",
    ("NamedEvent", "user"): "`external_id` (string or integer), `anonymous_id`, attributes",
}


def _documented(struct: type[msgspec.Struct]) -> type[msgspec.Struct]:
    """``struct`` as the document shows it: the same fields, free-form ones typed for it."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for f in msgspec.structs.fields(struct):
        t = _DOCUMENTED_FREE_FORM if f.type == FreeForm else f.type
        if typing.get_args(f.type) == (FreeForm, type(None)):
            t = _DOCUMENTED_FREE_FORM | None
        fields.append((f.name, t) if f.required else (f.name, t, f.default))
    return msgspec.defstruct(
        struct.__name__,
        fields,
        forbid_unknown_fields=struct.__struct_config__.forbid_unknown_fields,
    )


def _batch(name: str, event: type[msgspec.Struct], max_events: int) -> type[msgspec.Struct]:
    """A batch body: ``{"events": [...]}`` (``dialects.common.Batch``), then each event parsed."""
    events = Annotated[list[event], msgspec.Meta(min_length=1, max_length=max_events)]  # type: ignore[valid-type]
    return msgspec.defstruct(name, [("events", events)], forbid_unknown_fields=True)


def request_schemas(max_events: int) -> dict[str, Schema]:
    """The request bodies' schemas by component name, with ``#/components/schemas/`` refs."""
    events = {
        name: _documented(t)
        for name, t in (("V2", V2Event), ("V1", V1Event), ("Named", NamedEvent))
    }
    types = [*events.values(), *(_batch(f"{n}Batch", t, max_events) for n, t in events.items())]
    _, schemas = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    for name, rules in _CROSS_FIELD.items():
        schemas[name].update(rules)
    for (name, field), note in _FIELD_NOTES.items():
        schemas[name]["properties"][field]["description"] = note
    return schemas


def _nullable(type_: str, **more: Any) -> Schema:
    return {"type": [type_, "null"], **more}


ERROR: Schema = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "examples": ["validation_error"]},
        "message": {"type": "string"},
        "field": _nullable("string", description="the request field at fault"),
    },
}

V2_DATA: Schema = {
    "type": "object",
    "required": ["uuid", "event_type", "action", "canonical_name", "source", "occurred_at"],
    "properties": {
        "uuid": {"type": "string"},
        "event_type": {"type": "string"},
        "action": {"type": "string"},
        "canonical_name": {"type": "string"},
        "source": {"type": "string"},
        "subject_type": _nullable("string"),
        "subject_id": _nullable("string"),
        "occurred_at": {"type": "string", "format": "date-time"},
        "external_id": _nullable("string"),
    },
}

V2_BATCH_RESULT: Schema = {
    "type": "object",
    "required": ["data", "accepted", "rejected", "errors"],
    "properties": {
        "data": {"type": "array", "items": {**V2_DATA, "properties": {
            **V2_DATA["properties"], "index": {"type": "integer"}}}},
        "accepted": {"type": "integer"},
        "rejected": {"type": "integer"},
        "errors": {"type": "array", "items": {"type": "object", "properties": {
            "index": {"type": "integer"},
            "field": _nullable("string"),
            "reason": {"type": "string"},
            "retryable": {"type": "boolean"},
        }}},
    },
}  # fmt: skip

V1_RESULT: Schema = {
    "type": "object",
    "required": ["status", "event_id"],
    "properties": {"status": {"type": "string"}, "event_id": {"type": "string"}},
}

V1_BATCH_RESULT: Schema = {
    "type": "object",
    "required": ["status", "accepted", "rejected", "event_ids", "errors"],
    "properties": {
        "status": {"type": "string"},
        "accepted": {"type": "integer"},
        "rejected": {"type": "integer"},
        "event_ids": {"type": "array", "items": {"type": "string"}},
        "errors": {"type": "array", "items": {"type": "object", "properties": {
            "index": {"type": "integer"}, "reason": {"type": "string"}}}},
    },
}  # fmt: skip

RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str, headers: dict[str, Any] | None = None) -> Schema:
    out: Schema = {
        "description": description,
        "content": {"application/json": {"schema": _ref("Error")}},
    }
    if headers:
        out["headers"] = headers
    return out


def _operation(summary: str, request: str, ok: str, *, idempotency: bool = False) -> Schema:
    op: Schema = {
        "summary": summary,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref(request)}},
        },
        "responses": {
            "202": {
                "description": "accepted: every event reported here was acknowledged by Kafka",
                "content": {"application/json": {"schema": _ref(ok)}},
            },
            "400": _error("invalid input; a batch without a valid event lists each error"),
            "401": _error("missing, malformed or unknown API key"),
            "413": _error("body, or an event as a Kafka record, over the configured limit"),
            "422": _error("Kafka refused the event for good: do not retry it as is"),
            "429": _error("workspace over its per-minute budget", RETRY_AFTER),
            "503": _error("Kafka did not acknowledge in time; retry", RETRY_AFTER),
        },
    }
    if idempotency:
        op["parameters"] = [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
            }
        ]
    return op


INGESTION_PATHS: dict[str, Schema] = {
    "/api/v2/events": {"post": _operation("v2: one event", "V2Event", "V2Result")},
    "/api/v2/events/batch": {"post": _operation("v2: a batch", "V2Batch", "V2BatchResult")},
    "/v1/events": {"post": _operation("v1: one event", "V1Event", "V1Result", idempotency=True)},
    "/v1/batch/events": {
        "post": _operation("v1: a batch", "V1Batch", "V1BatchResult", idempotency=True)
    },
    "/named/events": {"post": _operation("named: one event", "NamedEvent", "V1Result")},
    "/named/events/batch": {"post": _operation("named: a batch", "NamedBatch", "V1BatchResult")},
}


def _merged(*groups: dict[str, Schema]) -> dict[str, Schema]:
    """Paths by path, each path's operations from every group (a path may be in two: one
    ``POST /api/v2/events`` ingests, its ``GET`` looks events up)."""
    out: dict[str, Schema] = {}
    for group in groups:
        for path, operations in group.items():
            out.setdefault(path, {}).update(operations)
    return out


def openapi(max_events: int = 1000) -> dict[str, Any]:
    """The document; ``max_events`` is the configured batch limit."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "eventpipe edge", "version": "1"},
        "security": [{"bearerAuth": []}],
        "paths": _merged(INGESTION_PATHS, api_paths.paths()),
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "basicAuth": {"type": "http", "scheme": "basic"},
            },
            "schemas": {
                **api_paths.components(),
                **request_schemas(max_events),
                "Error": ERROR,
                "V2Result": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {"data": V2_DATA},
                },
                "V2BatchResult": V2_BATCH_RESULT,
                "V1Result": V1_RESULT,
                "V1BatchResult": V1_BATCH_RESULT,
            },
        },
    }


def endpoint(max_events: int) -> Callable[[Request], Awaitable[Response]]:
    """``GET /openapi.json``: the document, built once."""
    body = orjson.dumps(openapi(max_events))

    async def serve(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return serve

"""The edge's OpenAPI 3 document (served at ``GET /openapi.json``): the six ingestion endpoints.

Request schemas follow the seed documents (000 = v2, 003 = v1, 001 = named) and the limits of
``eventpipe.dialects.common``; the schemas are the contract clients read, while the dialect
parsers stay the one place the rules are enforced (this module only imports their constants).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from eventpipe.dialects.common import MAX_DEPTH, MAX_ID_LENGTH, MAX_KEYS, MAX_STRING_LENGTH
from eventpipe.naming import MAX_PART_LENGTH

NAME_PART = f"^[a-z][a-z0-9_]{{0,{MAX_PART_LENGTH - 1}}}$"
UNIFIED_NAME = "^[a-z][a-z0-9_]*[.:_][a-z][a-z0-9_]*$"

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _id(description: str) -> Schema:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_ID_LENGTH,
        "nullable": True,
        "description": description,
    }


FREE_FORM: Schema = {
    "type": "object",
    "additionalProperties": True,
    "maxProperties": MAX_KEYS,
    "description": (
        f"Free-form JSON: at most {MAX_DEPTH} levels deep, {MAX_KEYS} keys per event, strings "
        f"of at most {MAX_STRING_LENGTH} characters, integers within int64, finite numbers, no "
        "duplicate keys."
    ),
}

V2_EVENT: Schema = {
    "type": "object",
    "additionalProperties": False,
    "description": "One of `event` (unified) or `event_type` (+ `action`, preferred) is required.",
    "properties": {
        "event": {"type": "string", "pattern": UNIFIED_NAME, "example": "user.signed_up"},
        "event_type": {"type": "string", "pattern": NAME_PART, "example": "project"},
        "action": {"type": "string", "pattern": NAME_PART, "example": "created"},
        "subject_type": {"type": "string", "enum": ["user", "account", "subscription"]},
        "subject_id": _id("who the event is about; with subject_type user, the user id"),
        "occurred_at": {"type": "string", "format": "date-time", "nullable": True},
        "properties": {**FREE_FORM, "nullable": True},
        "metadata": {**FREE_FORM, "nullable": True, "description": "alias of properties"},
        "external_id": _id("idempotency key, scoped by product and source"),
    },
}

V1_EVENT: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["event", "timestamp"],
    "description": "`user_id` or `anonymous_id` is required.",
    "properties": {
        "event": {"type": "string", "pattern": UNIFIED_NAME, "example": "paywall_viewed"},
        "timestamp": {"type": "string", "format": "date-time"},
        "user_id": _id("backend user id"),
        "anonymous_id": _id("pre-login device or session id"),
        "properties": {**FREE_FORM, "nullable": True},
    },
}

NAMED_EVENT: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "data"],
    "properties": {
        "name": {"type": "string", "pattern": UNIFIED_NAME, "example": "ticket.updated"},
        "data": FREE_FORM,
        "user": {
            **FREE_FORM,
            "nullable": True,
            "description": "`external_id` (string or integer), `anonymous_id`, attributes",
        },
        "v": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}\.\d{2}$", "nullable": True},
        "ts": {"type": "integer", "format": "int64", "minimum": 0, "nullable": True},
    },
}

ERROR: Schema = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "example": "validation_error"},
        "message": {"type": "string"},
        "field": {"type": "string", "nullable": True, "description": "the request field at fault"},
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
        "subject_type": {"type": "string", "nullable": True},
        "subject_id": {"type": "string", "nullable": True},
        "occurred_at": {"type": "string", "format": "date-time"},
        "external_id": {"type": "string", "nullable": True},
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
            "field": {"type": "string", "nullable": True},
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


def _error(description: str, headers: dict[str, Any] | None = None) -> Schema:
    out: Schema = {
        "description": description,
        "content": {"application/json": {"schema": _ref("Error")}},
    }
    if headers:
        out["headers"] = headers
    return out


def _batch(event: str, max_events: int) -> Schema:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["events"],
        "properties": {
            "events": {"type": "array", "minItems": 1, "maxItems": max_events, "items": _ref(event)}
        },
    }


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
                "schema": {"type": "string", "minLength": 1, "maxLength": 180},
            }
        ]
    return op


def openapi(max_events: int = 1000) -> dict[str, Any]:
    """The document; ``max_events`` is the configured batch limit."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "eventpipe edge", "version": "1"},
        "security": [{"bearerAuth": []}],
        "paths": {
            "/api/v2/events": {"post": _operation("v2: one event", "V2Event", "V2Result")},
            "/api/v2/events/batch": {"post": _operation("v2: a batch", "V2Batch", "V2BatchResult")},
            "/v1/events": {
                "post": _operation("v1: one event", "V1Event", "V1Result", idempotency=True)
            },
            "/v1/batch/events": {
                "post": _operation("v1: a batch", "V1Batch", "V1BatchResult", idempotency=True)
            },
            "/named/events": {"post": _operation("named: one event", "NamedEvent", "V1Result")},
            "/named/events/batch": {
                "post": _operation("named: a batch", "NamedBatch", "V1BatchResult")
            },
        },
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": ERROR,
                "V2Event": V2_EVENT,
                "V2Batch": _batch("V2Event", max_events),
                "V2Result": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {"data": V2_DATA},
                },
                "V2BatchResult": V2_BATCH_RESULT,
                "V1Event": V1_EVENT,
                "V1Batch": _batch("V1Event", max_events),
                "V1Result": V1_RESULT,
                "V1BatchResult": V1_BATCH_RESULT,
                "NamedEvent": NAMED_EVENT,
                "NamedBatch": _batch("NamedEvent", max_events),
            },
        },
    }


def endpoint(max_events: int) -> Callable[[Request], Awaitable[Response]]:
    """``GET /openapi.json``: the document, built once."""
    body = orjson.dumps(openapi(max_events))

    async def serve(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return serve

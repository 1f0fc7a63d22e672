"""The List Resources filter and sort grammar, validated and compiled to parameterised SQL.

A filter is a JSON object, either a condition or a combination of filters:

    {"operator": "exact" | "contains" | "in" | "is_set", "field": F, "value": V}
    {"operator": "and" | "or", "operands": [filter, ...]}      (at least one operand)
    {"operator": "not", "operands": [filter]}                 (exactly one)

Field names come from a fixed list and are the only thing written into the SQL text; every value
is a query parameter (``{f0:String}``), never interpolated. A bad filter is a 400 whose field is
the path of the wrong part, e.g. ``filter.operands[1].value``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import orjson

from eventpipe.catalog.model import ENTITY_TYPES
from eventpipe.errors import InvalidEvent

MAX_DEPTH = 16
MAX_NODES = 256
MAX_VALUES = 1000


class Kind(Enum):
    STRING = "string"
    BOOL = "boolean"
    ARRAY = "array of strings"


# API field -> (column of eventpipe.catalog.sql's resource query, kind)
FIELDS: dict[str, tuple[str, Kind]] = {
    "type": ("entity_type", Kind.STRING),
    "id": ("id", Kind.STRING),
    "title": ("title", Kind.STRING),
    "parent_id": ("parent_id", Kind.STRING),
    "integration_id": ("integration_id", Kind.STRING),
    "description": ("description", Kind.STRING),
    "definition": ("definition", Kind.STRING),
    "pii": ("pii", Kind.BOOL),
    "verified": ("verified", Kind.BOOL),
    "published": ("published", Kind.BOOL),
    "discovered": ("discovered", Kind.BOOL),
    "tags": ("tags", Kind.ARRAY),
    "teams": ("teams", Kind.ARRAY),
    "owners": ("owners", Kind.ARRAY),
    "collections": ("collections", Kind.ARRAY),
    "subscribers": ("subscribers", Kind.ARRAY),
}
CONDITIONS = ("exact", "contains", "in", "is_set")
COMBINATIONS = ("and", "or", "not")

SORTABLE: dict[str, str] = {
    **{f: col for f, (col, kind) in FIELDS.items() if kind is not Kind.ARRAY},
    **{f: f for f in ("created_at", "updated_at", "first_seen_at", "last_seen_at")},
    **{f: f for f in ("volume_24h", "volume_30d")},
}
DEFAULT_SORT = "title ASC, id ASC"


@dataclass
class Compiled:
    """A boolean SQL expression over the resource query's columns, and its parameters."""

    sql: str
    params: dict[str, Any] = field(default_factory=dict)


def parse_json(text: str | None, name: str) -> Any:
    """A URL query parameter holding JSON (``filter``, ``sort``); None when absent."""
    if text is None or not text.strip():
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"{name}: not valid JSON ({exc})", field=name) from None


def compile_filter(tree: Any, prefix: str = "f") -> Compiled:
    """Validate a parsed filter and compile it; ``prefix`` names its parameters."""
    out = Compiled("")
    counter = [0]
    out.sql = _node(tree, "filter", 0, out.params, counter, prefix)
    return out


def _fail(path: str, message: str) -> InvalidEvent:
    return InvalidEvent(f"{path}: {message}", field=path)


def _node(
    tree: Any, path: str, depth: int, params: dict[str, Any], counter: list[int], prefix: str
) -> str:
    counter[0] += 1
    if depth > MAX_DEPTH:
        raise _fail(path, f"nested deeper than {MAX_DEPTH} levels")
    if counter[0] > MAX_NODES:
        raise _fail(path, f"more than {MAX_NODES} conditions in one filter")
    if not isinstance(tree, dict):
        raise _fail(path, "must be an object with an 'operator'")
    op = tree.get("operator")
    if op in COMBINATIONS:
        return _combination(tree, op, path, depth, params, counter, prefix)
    if op in CONDITIONS:
        return _condition(tree, op, path, params, prefix)
    known = ", ".join(CONDITIONS + COMBINATIONS)
    raise _fail(f"{path}.operator", f"unknown operator {op!r} (one of {known})")


def _combination(
    tree: dict[str, Any],
    op: str,
    path: str,
    depth: int,
    params: dict[str, Any],
    counter: list[int],
    prefix: str,
) -> str:
    extra = set(tree) - {"operator", "operands"}
    if extra:
        raise _fail(f"{path}.{sorted(extra)[0]}", f"not allowed with operator {op!r}")
    operands = tree.get("operands")
    if not isinstance(operands, list) or not operands:
        raise _fail(f"{path}.operands", "must be a non-empty list of filters")
    if op == "not" and len(operands) != 1:
        raise _fail(f"{path}.operands", "'not' takes exactly one operand")
    parts = [
        _node(sub, f"{path}.operands[{i}]", depth + 1, params, counter, prefix)
        for i, sub in enumerate(operands)
    ]
    if op == "not":
        return f"(NOT {parts[0]})"
    return "(" + f" {op.upper()} ".join(parts) + ")"


def _condition(
    tree: dict[str, Any], op: str, path: str, params: dict[str, Any], prefix: str
) -> str:
    extra = set(tree) - {"operator", "field", "value"}
    if extra:
        raise _fail(f"{path}.{sorted(extra)[0]}", f"not allowed with operator {op!r}")
    name = tree.get("field")
    if name not in FIELDS:
        raise _fail(f"{path}.field", f"unknown field {name!r} (one of {', '.join(FIELDS)})")
    column, kind = FIELDS[name]
    vpath = f"{path}.value"
    value = tree.get("value", True if op == "is_set" else None)

    def bind(v: Any, ch_type: str) -> str:
        key = f"{prefix}{len(params)}"
        params[key] = v
        return f"{{{key}:{ch_type}}}"

    if op == "is_set":
        if not isinstance(value, bool):
            raise _fail(vpath, "is_set takes true or false")
        if kind is Kind.BOOL:
            raise _fail(f"{path}.field", f"is_set does not apply to the boolean field {name!r}")
        test = f"notEmpty({column})" if kind is Kind.ARRAY else f"{column} != ''"
        return test if value else f"NOT {test}"
    if op == "in":
        if not isinstance(value, list) or not value or len(value) > MAX_VALUES:
            raise _fail(vpath, f"'in' takes a list of 1 to {MAX_VALUES} values")
        items = [_scalar(v, kind, name, f"{vpath}[{i}]") for i, v in enumerate(value)]
        if kind is Kind.BOOL:
            return f"has({bind(items, 'Array(Bool)')}, {column})"
        if kind is Kind.ARRAY:
            return f"hasAny({column}, {bind(items, 'Array(String)')})"
        return f"has({bind(items, 'Array(String)')}, {column})"
    item = _scalar(value, kind, name, vpath)
    if op == "exact":
        if kind is Kind.BOOL:
            return f"{column} = {bind(item, 'Bool')}"
        if kind is Kind.ARRAY:
            return f"has({column}, {bind(item, 'String')})"
        return f"{column} = {bind(item, 'String')}"
    # contains: a case-insensitive substring
    if kind is Kind.BOOL:
        raise _fail(f"{path}.operator", f"'contains' does not apply to the boolean field {name!r}")
    needle = bind(item, "String")
    if kind is Kind.ARRAY:
        return f"arrayExists(x -> positionCaseInsensitiveUTF8(x, {needle}) > 0, {column})"
    return f"positionCaseInsensitiveUTF8({column}, {needle}) > 0"


def _scalar(value: Any, kind: Kind, name: str, path: str) -> Any:
    if kind is Kind.BOOL:
        if not isinstance(value, bool):
            raise _fail(path, f"{name!r} is a boolean: expected true or false")
        return value
    if not isinstance(value, str):
        raise _fail(path, f"{name!r} takes a string value")
    if name == "type" and value not in ENTITY_TYPES:
        raise _fail(path, f"unknown type {value!r} (one of {', '.join(ENTITY_TYPES)})")
    return value


def compile_sort(tree: Any) -> str:
    """``{"field": F, "order": "asc"|"desc"}`` or a list of them, to an ORDER BY list. The id is
    always the last key, so pages never overlap or skip a row."""
    if tree is None:
        return DEFAULT_SORT
    keys = tree if isinstance(tree, list) else [tree]
    if not keys or len(keys) > 8:
        raise _fail("sort", "one to 8 sort keys")
    parts = []
    for i, key in enumerate(keys):
        path = f"sort[{i}]" if isinstance(tree, list) else "sort"
        if not isinstance(key, dict) or set(key) - {"field", "order"}:
            raise _fail(path, 'expected {"field": …, "order": "asc" | "desc"}')
        name, order = key.get("field"), key.get("order", "asc")
        if name not in SORTABLE:
            raise _fail(f"{path}.field", f"cannot sort by {name!r} (one of {', '.join(SORTABLE)})")
        if order not in ("asc", "desc"):
            raise _fail(f"{path}.order", "'asc' or 'desc'")
        parts.append(f"{SORTABLE[name]} {order.upper()}")
    return ", ".join([*parts, "id ASC"])

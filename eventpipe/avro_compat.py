"""BACKWARD compatibility of two Avro schemas: can the new one read what the old one wrote?

This is the Avro specification's schema resolution ("Schema Resolution"), asked of the schemas
alone rather than of one record: every record the writer schema can produce must resolve
against the reader schema. The registry client (``eventpipe.registry``) asks it before a
schema evolves under a subject, so the check does not depend on the compatibility level a
registry is configured with (or on the registry checking at all: confluent-kafka's ``mock://``
client does not), and the codec's unit tests ask it of the versions shipped in ``schemas/``.

Logical types are read as their underlying types, as Avro readers do when resolving.
"""

from __future__ import annotations

from typing import Any

_PRIMITIVES = frozenset(("null", "boolean", "int", "long", "float", "double", "bytes", "string"))
_COMPLEX = frozenset(("record", "error", "enum", "fixed", "array", "map"))
_PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}
"""Writer type -> the reader types it is promoted to (the specification's list)."""

Names = dict[str, Any]


def backward_problems(reader: Any, writer: Any) -> list[str]:
    """Why ``reader`` cannot read every record ``writer`` can write; empty when it can.

    Both are schemas as JSON (``json.loads`` of an ``.avsc``)."""
    problems: list[str] = []
    r_names: Names = {}
    w_names: Names = {}
    _collect(reader, None, r_names)
    _collect(writer, None, w_names)
    _resolve(reader, writer, r_names, w_names, _label(reader), problems, set())
    return problems


def _collect(schema: Any, namespace: str | None, names: Names) -> None:
    """Every named type (record, enum, fixed) of ``schema`` by full name, for references."""
    if isinstance(schema, list):
        for branch in schema:
            _collect(branch, namespace, names)
        return
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    if kind in ("record", "error", "enum", "fixed"):
        full = _full_name(schema, namespace)
        names[full] = schema
        namespace = full.rpartition(".")[0] or None
        for field in schema.get("fields", ()) if kind != "enum" else ():
            _collect(field["type"], namespace, names)
    elif kind == "array":
        _collect(schema["items"], namespace, names)
    elif kind == "map":
        _collect(schema["values"], namespace, names)
    elif isinstance(kind, dict | list):
        _collect(kind, namespace, names)


def _full_name(schema: dict[str, Any], namespace: str | None) -> str:
    name: str = schema["name"]
    if "." in name:
        return name
    ns = schema.get("namespace", namespace)
    return f"{ns}.{name}" if ns else name


def _deref(schema: Any, names: Names) -> Any:
    """A named reference as its definition; a ``{"type": "long", "logicalType": ...}`` as
    ``"long"`` (resolution ignores logical types)."""
    while True:
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            found = names.get(schema)
            if found is None:
                short = [v for k, v in names.items() if k.rpartition(".")[2] == schema]
                found = short[0] if len(short) == 1 else None
            if found is None:
                return schema
            schema = found
        elif isinstance(schema, dict):
            kind = schema.get("type")
            if kind in _PRIMITIVES:
                return kind
            if kind in _COMPLEX:
                return schema
            schema = kind  # {"type": {...}}, {"type": [...]} or {"type": "SomeName"}
        else:
            return schema


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        kind: str = schema["type"]
        return "record" if kind == "error" else kind
    return str(schema)


def _label(schema: Any) -> str:
    if isinstance(schema, dict) and "name" in schema:
        return str(schema["name"])
    return _kind(schema)


def _resolve(
    reader: Any,
    writer: Any,
    r_names: Names,
    w_names: Names,
    path: str,
    problems: list[str],
    seen: set[tuple[str, str]],
) -> None:
    reader, writer = _deref(reader, r_names), _deref(writer, w_names)
    rk, wk = _kind(reader), _kind(writer)
    if wk == "union":
        for branch in writer:
            _resolve(reader, branch, r_names, w_names, path, problems, seen)
        return
    if rk == "union":
        for branch in reader:
            if _matches(_deref(branch, r_names), writer):
                _resolve(branch, writer, r_names, w_names, path, problems, seen)
                return
        problems.append(f"{path}: the writer's {wk} is in none of the reader's union branches")
        return
    if rk != wk:
        if rk not in _PROMOTIONS.get(wk, ()):
            problems.append(f"{path}: the writer's {wk} cannot be read as {rk}")
        return
    if rk in ("record", "enum", "fixed") and not _same_name(reader, writer):
        problems.append(f"{path}: {rk} {reader['name']} cannot read {writer['name']}")
        return
    if rk == "record":
        key = (reader["name"], writer["name"])
        if key in seen:  # a recursive type, already being resolved
            return
        seen = seen | {key}
        w_fields = {f["name"]: f for f in writer["fields"]}
        for field in reader["fields"]:
            names = [field["name"], *field.get("aliases", ())]
            w_field = next((w_fields[n] for n in names if n in w_fields), None)
            where = f"{path}.{field['name']}"
            if w_field is None:
                if "default" not in field:
                    problems.append(f"{where}: a new field without a default")
                continue
            _resolve(field["type"], w_field["type"], r_names, w_names, where, problems, seen)
    elif rk == "enum":
        missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if missing and "default" not in reader:
            problems.append(f"{path}: symbols {missing} are not in the reader's enum")
    elif rk == "fixed":
        if reader["size"] != writer["size"]:
            problems.append(f"{path}: fixed size {writer['size']} read as {reader['size']}")
    elif rk == "array":
        _resolve(reader["items"], writer["items"], r_names, w_names, f"{path}[]", problems, seen)
    elif rk == "map":
        _resolve(
            reader["values"], writer["values"], r_names, w_names, f"{path}{{}}", problems, seen
        )


def _matches(reader: Any, writer: Any) -> bool:
    """The specification's "match" of a reader union branch to a writer type: same kind (and
    name, for named types), or a promotion."""
    rk, wk = _kind(reader), _kind(writer)
    if rk == wk:
        return rk not in ("record", "enum", "fixed") or _same_name(reader, writer)
    return rk in _PROMOTIONS.get(wk, ())


def _same_name(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
    r_short = str(reader["name"]).rpartition(".")[2]
    w_short = str(writer["name"]).rpartition(".")[2]
    aliases = {str(a).rpartition(".")[2] for a in reader.get("aliases", ())}
    return w_short == r_short or w_short in aliases

"""Read-only SQL for ``/admin/query``: one SELECT, no way out of ClickHouse, bounded cost.

``readonly=1`` alone is not enough. It refuses writes and most table functions, but on chDB
(clickhouse-local) the scalar ``file()`` still reads any file the process can read, the
``python`` table function reads objects of this process, a second statement after ``;`` runs
too, and ``INTO OUTFILE`` writes a file. So every statement goes through three gates:

1. **ClickHouse parses it**: ``parseQueryToJSON`` (the statement passed as a bound parameter,
   never spliced into SQL) refuses anything but exactly one statement and returns its AST as
   JSON. Nothing here reads SQL text.
2. **The AST is checked** (``check``): a SELECT (``WITH``/``UNION`` included) with no
   ``SETTINGS``, ``FORMAT`` or ``INTO OUTFILE``; table functions only from ``TABLE_FUNCTIONS``
   (an allow-list: a table function added in a later ClickHouse is refused until listed); no
   scalar function from ``SCALAR_DENIED`` or the categories ``DENIED_CATEGORIES`` of
   ``system.functions`` (aliases and case-insensitive spellings resolved through it), and no
   user-defined function. The statement then runs as ``formatQueryFromJSON`` rebuilds it from
   the checked AST, so what runs is what was checked.
3. **The session is read-only and bounded**: the limits of ``Settings.admin_query_*`` and then
   ``readonly=1`` are set on the reader client's own session (chDB keeps per-query settings on
   the session, so the reader is a client of its own). After ``readonly=1`` nothing can change a
   setting again, a statement's own ``SETTINGS readonly=0`` included.

Table names that are file paths (chDB's default database overlays the file system) are refused
by ``readonly=1``: the check adds that a table is a plain identifier.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import (
    ClickHouseError,
    OperationalError,
    StreamFailureError,
)

from eventpipe.errors import QueryFailed, QueryRefused, Unavailable
from eventpipe.settings import Settings

log = structlog.get_logger(__name__)

TABLE_FUNCTIONS = frozenset(
    {
        "numbers",
        "numbers_mt",
        "zeros",
        "zeros_mt",
        "generate_series",
        "generateseries",
        "primes",
        "values",
        "sqlstandardvalues",  # what the parser makes of ``FROM (VALUES (1), (2))``
        "null",
        "view",
        "merge",
        "generaterandom",
    }
)
"""Table functions that read nothing but their arguments or this server's own tables (lower case).
Not ``eval`` (runs a SELECT built from a string, past this check), ``loop``, ``dictionary``,
``cluster``, ``input``, ``python`` or any reader of files, URLs and other servers."""

SCALAR_DENIED = frozenset(
    {
        "file",
        "filesystemavailable",
        "filesystemcapacity",
        "filesystemunreserved",
        "getserversetting",
        "getmacro",
        "getclienthttpheader",
        "showcertificate",
        "catboostevaluate",
        "modelevaluate",
    }
)
"""Scalar functions that read files, server configuration or request headers (lower case)."""

DENIED_CATEGORIES = frozenset({"AI", "Dictionary", "Embedded Dictionary", "Introspection"})
"""``system.functions`` categories refused whole: AI functions call model endpoints over HTTP,
dictionaries can be backed by files, URLs, other servers or executables, introspection reads
the binary's symbols."""

_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CH_REASON = re.compile(
    r"DB::Exception: (?!Code:)(.*?)(?: In scope |: In scope |\(version |$)", re.S
)
MAX_REASON_CHARS = 400


@dataclass(frozen=True)
class FunctionPolicy:
    """What ClickHouse itself says about function names, read once from its system tables."""

    denied: frozenset[str]
    """Lower-case names (aliases included) of refused scalar functions."""
    table_only: frozenset[str]
    """Lower-case table-function names that are not also scalar functions."""
    user_defined: frozenset[str]
    views: frozenset[str] = frozenset()
    """Lower-case names of this database's views: a parameterized one is called like a table
    function (``catalog_anomalies(share = 0.95, days = 30)``), and reads only our own tables."""

    @classmethod
    def load(cls, client: Client) -> FunctionPolicy:
        rows = client.query(
            "SELECT name, alias_to, categories, toString(origin) FROM system.functions"
        ).result_rows
        canonical = {str(n).lower(): (str(a) or str(n)).lower() for n, a, _, _ in rows}
        denied_base = set(SCALAR_DENIED)
        denied_base |= {
            str(n).lower()
            for n, _, cats, _ in rows
            if DENIED_CATEGORIES.intersection(c.strip() for c in str(cats).split(","))
        }
        denied = {name for name, base in canonical.items() if base in denied_base} | denied_base
        table = client.query("SELECT name FROM system.table_functions").result_rows
        views = client.query(
            "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine = 'View'"
        ).result_rows
        return cls(
            views=frozenset(str(n).lower() for (n,) in views),
            denied=frozenset(denied),
            table_only=frozenset(str(n).lower() for (n,) in table) - set(canonical),
            user_defined=frozenset(str(n).lower() for n, _, _, o in rows if o != "System"),
        )


def _nodes(value: Any, key: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every AST node with the key it hangs from in its parent (``table_function``, ...)."""
    if isinstance(value, dict):
        if "type" in value:
            yield key, value
        for k, v in value.items():
            yield from _nodes(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _nodes(v, key)


def check(ast: dict[str, Any], policy: FunctionPolicy) -> None:
    """Refuse (QueryRefused) any statement that could reach past ClickHouse's own tables."""
    kind = ast.get("type")
    if kind != "SelectWithUnionQuery":
        raise QueryRefused(f"only a SELECT statement is allowed, not {kind}", field="sql")
    for key, node in _nodes(ast):
        kind = node["type"]
        if node.get("out_file") is not None or node.get("is_into_outfile_with_stdout"):
            raise QueryRefused("INTO OUTFILE is not allowed", field="sql")
        if node.get("format_ast") is not None:
            raise QueryRefused("a FORMAT clause is not allowed: results are JSON", field="sql")
        if kind == "SetQuery":
            raise QueryRefused(
                "a SETTINGS clause is not allowed: the limits of this route are fixed",
                field="sql",
            )
        if kind == "TableIdentifier":
            parts = node.get("name_parts") or [node.get("name", "")]
            if not all(_PLAIN_NAME.match(str(p)) for p in parts):
                raise QueryRefused(
                    f"table {node.get('name')!r} is not a plain table name", field="sql"
                )
        if kind != "Function":
            continue
        name = str(node.get("name", ""))
        low = name.lower()
        if key == "table_function":
            if low not in TABLE_FUNCTIONS and low not in policy.views:
                raise QueryRefused(f"table function {name}() is not allowed", field="sql")
        elif low in policy.table_only and low not in TABLE_FUNCTIONS:
            raise QueryRefused(f"table function {name}() is not allowed", field="sql")
        if low in policy.denied:
            raise QueryRefused(f"function {name}() is not allowed", field="sql")
        if low in policy.user_defined:
            raise QueryRefused(f"user-defined function {name}() is not allowed", field="sql")


def reason(exc: ClickHouseError) -> str:
    """ClickHouse's own sentence for an error, without codes of the wrapper or the version."""
    text = str(exc)
    found = _CH_REASON.findall(text)
    out = (found[-1] if found else text).strip().rstrip(":").strip()
    return out[:MAX_REASON_CHARS]


class ReadOnlyQuery:
    """``query(sql) -> (columns, rows)`` for ``/admin/query``, on a client of its own.

    The client is set up here (limits, then ``readonly=1``) and must not be used for anything
    else: chDB keeps settings on a client's session, so a shared client would carry them into
    the writer's inserts. Calls are serialized: one chDB client runs one query at a time.
    """

    def __init__(self, client: Client, settings: Settings) -> None:
        self._policy = FunctionPolicy.load(client)  # before the limits: it reads ~2,000 rows
        limits: dict[str, Any] = {
            "max_execution_time": settings.admin_query_max_execution_s,
            "max_rows_to_read": settings.admin_query_max_rows_to_read,
            "read_overflow_mode": "throw",
            "max_result_rows": settings.admin_query_max_result_rows,
            "max_result_bytes": settings.admin_query_max_result_bytes,
            "result_overflow_mode": "throw",
            "max_memory_usage": settings.admin_query_max_memory_bytes,
            "allow_introspection_functions": 0,
            "readonly": 1,  # last: after it, no setting can change
        }
        for name, value in limits.items():
            client.set_client_setting(name, value)
        got = client.query("SELECT getSetting('readonly')").result_rows
        if got != [(1,)]:
            raise RuntimeError(f"the admin query client is not read-only: readonly={got}")
        self._client = client
        self._retry_after = settings.retry_after_seconds
        self._lock = threading.Lock()

    def __call__(self, sql: str) -> tuple[list[str], list[list[Any]]]:
        with self._lock:
            try:
                parsed = self._client.query(
                    "SELECT ast, formatQueryFromJSON(ast) "
                    "FROM (SELECT parseQueryToJSON({sql:String}) AS ast)",
                    parameters={"sql": sql},
                ).result_rows
            except ClickHouseError as exc:
                raise QueryRefused(
                    f"not one statement ClickHouse can check: {reason(exc)}", field="sql"
                ) from None
            ast_json, canonical = parsed[0]
            check(orjson.loads(ast_json), self._policy)
            try:
                # A stream inside ``with``: a query that fails half way (a limit hit while rows
                # stream) is closed here. Left open, chDB hands its remaining blocks to the next
                # query on this client as that query's result.
                with self._client.query_row_block_stream(canonical) as stream:
                    rows = [list(row) for block in stream for row in block]
                    columns = list(stream.source.column_names)
            except StreamFailureError as exc:
                raise self._failed(exc) from None
            except OperationalError as exc:  # the server did not answer: not the caller's fault
                log.warning("admin query: clickhouse unavailable", reason=reason(exc))
                raise Unavailable(
                    "ClickHouse did not answer", retry_after=self._retry_after
                ) from None
            except ClickHouseError as exc:
                raise self._failed(exc) from None
        return columns, rows

    @staticmethod
    def _failed(exc: ClickHouseError) -> QueryFailed:
        log.info("admin query failed", reason=reason(exc))
        return QueryFailed(f"query failed: {reason(exc)}", field="sql")

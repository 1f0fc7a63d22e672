"""ClickHouse access: the client factory, the migrations runner and the row writer.

This module knows nothing of Kafka: it turns Avro-decoded records into rows and inserts them.
The column list of each table is derived from its Avro schema in ``schemas/`` (the one definition);
the DDL in ``sinks/migrations`` mirrors it and a unit test checks the two agree.

The same code runs against chDB (``chdb:///abs/path``, in-process) and a ClickHouse server
(``http(s)://user:pass@host:port/db``): migrations use the client's current database.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from operator import itemgetter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import clickhouse_connect
import structlog
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from eventpipe.codec import (
    CLEAN_EVENT,
    DEDUPE_NOTICE,
    IDENTITY_LINK,
    REDRIVE_OUTCOME,
    REJECTED_EVENT,
)
from eventpipe.errors import StartError
from eventpipe.event import from_ms, to_ms
from schemas import schema_files

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_MIGRATION_NAME = re.compile(r"^\d{3}_[a-z0-9_]+\.sql$")
# A statement ends with ";" at the end of a line: DDL never needs one inside a line's end.
_STATEMENT_END = re.compile(r";[ \t]*(?:\n|$)")


UNKNOWN_DATABASE = 81
READONLY = 164
ACCESS_DENIED = 497


class ClickHouseStartError(StartError):
    """ClickHouse cannot be used as configured: the process stops at start with this message."""


def redact(dsn: str) -> str:
    """``dsn`` without its password, for messages and logs."""
    url = urlparse(dsn)
    if url.password is None:
        return dsn
    netloc = f"{url.username}:***@{url.hostname}" + (f":{url.port}" if url.port else "")
    return url._replace(netloc=netloc).geturl()


def client_kwargs(dsn: str, *, readonly: bool = False, ca: Path | None = None) -> dict[str, Any]:
    """What ``clickhouse_connect.get_client`` is given: the DSN, and for ``https://`` the CA
    file that signed the server's certificate (``EVENTPIPE_CLICKHOUSE_CA``), verified."""
    kwargs: dict[str, Any] = {"dsn": dsn, "settings": {"readonly": 1} if readonly else None}
    if ca is not None:
        if urlparse(dsn).scheme != "https":
            raise ClickHouseStartError(
                f"EVENTPIPE_CLICKHOUSE_CA is set but EVENTPIPE_CLICKHOUSE_URL={redact(dsn)} "
                "is not https://"
            )
        if not ca.is_file():
            raise ClickHouseStartError(f"EVENTPIPE_CLICKHOUSE_CA={ca}: no such file")
        kwargs.update(ca_cert=str(ca), verify=True)
    return kwargs


def _database(dsn: str) -> str:
    url = urlparse(dsn)
    if url.scheme == "chdb":
        return parse_qs(url.query).get("database", ["default"])[0]
    return url.path.strip("/") or "default"


def connect(dsn: str, *, readonly: bool = False, ca: Path | None = None) -> Client:
    """A client for ``dsn``; ``readonly=True`` gives one that the server refuses writes from.

    With chDB, settings passed with a single query stick to that client's session (a per-query
    ``readonly=1`` made later inserts on the same client fail), so read-only work must use its own
    client rather than a per-query setting. Two clients on the same chDB path in one process work,
    also used from two threads at once; a second *path* in the same process does not (one chDB
    engine per process).

    A database that does not exist, a refused login or an unreachable server stop the caller at
    start with a :class:`ClickHouseStartError` naming the setting (never the password).
    """
    if dsn.startswith("chdb:"):
        path = urlparse(dsn).path
        if path and path not in ("memory", ":memory:"):
            Path(path).mkdir(parents=True, exist_ok=True)
    try:
        return clickhouse_connect.get_client(**client_kwargs(dsn, readonly=readonly, ca=ca))
    except OperationalError as exc:
        raise ClickHouseStartError(
            f"ClickHouse at {redact(dsn)} is unreachable (EVENTPIPE_CLICKHOUSE_URL, "
            f"EVENTPIPE_CLICKHOUSE_CA): {exc}"
        ) from exc
    except DatabaseError as exc:
        shown = redact(dsn)
        if f"Code: {UNKNOWN_DATABASE}." in str(exc) or "UNKNOWN_DATABASE" in str(exc):
            raise ClickHouseStartError(
                f"ClickHouse database {_database(dsn)!r} does not exist "
                f"(EVENTPIPE_CLICKHOUSE_URL={shown}): create it first"
            ) from exc
        raise ClickHouseStartError(
            f"ClickHouse at {shown} refused the connection (EVENTPIPE_CLICKHOUSE_URL, "
            f"EVENTPIPE_CLICKHOUSE_CA): {exc}"
        ) from exc


# --- migrations -----------------------------------------------------------------------------


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    """``NNN_name.sql`` files in order; any other name is an error, not silently skipped."""
    files = sorted(p for p in directory.iterdir() if p.suffix == ".sql")
    bad = [p.name for p in files if not _MIGRATION_NAME.match(p.name)]
    if bad:
        raise ValueError(f"migration files must be named NNN_snake_case.sql: {bad}")
    return files


def split_statements(sql: str) -> list[str]:
    """A migration file's statements: split on ``;`` at a line end, comment-only parts dropped."""
    out = []
    for part in _STATEMENT_END.split(sql):
        code = "\n".join(
            line for line in part.splitlines() if line.strip() and not line.strip().startswith("--")
        )
        if code.strip():
            out.append(part.strip())
    return out


def migrate(client: Client, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the migrations not yet recorded, in order; return the names applied now.

    Each statement is itself idempotent (``IF NOT EXISTS``), so a migration interrupted between
    its DDL and its record, or run by two processes at once, is safely applied again. The record
    table is a ReplacingMergeTree on the name, so such a double run still reads as one row.

    A user that may not create tables (read-only, or without the grants) stops the caller at
    start with a :class:`ClickHouseStartError` saying so, before any event is consumed.
    """
    try:
        client.command(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
            "ENGINE = ReplacingMergeTree(applied_at) ORDER BY name"
        )
    except DatabaseError as exc:
        text = str(exc)
        if any(f"Code: {c}." in text for c in (READONLY, ACCESS_DENIED)) or "READONLY" in text:
            raise ClickHouseStartError(
                f"the ClickHouse user of EVENTPIPE_CLICKHOUSE_URL may not create tables in "
                f"database {client.database or 'default'!r} (read-only or missing grants): "
                "eventpipe's migrations need CREATE TABLE, CREATE VIEW, ALTER and INSERT there. "
                f"ClickHouse said: {text.splitlines()[0]}"
            ) from exc
        raise
    done = {r[0] for r in client.query("SELECT DISTINCT name FROM schema_migrations").result_rows}
    applied = []
    for path in migration_files(directory):
        if path.name in done:
            continue
        for statement in split_statements(path.read_text()):
            client.command(statement)
        client.insert("schema_migrations", [[path.name]], column_names=["name"])
        log.info("migration applied", migration=path.name)
        applied.append(path.name)
    return applied


_PROPERTY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def materialize_properties(
    client: Client, names: Sequence[str], table: str = "events"
) -> list[str]:
    """Give each top-level property in ``names`` a column of its own, ``property_<name>``: its
    value as a string (``JSONExtractString``: '' when absent), computed once per row
    at insert (``MATERIALIZED``), so a breakdown by it reads one small LowCardinality column
    instead of parsing every row's JSON (``bench.breakdown`` over 5M events: 3.2x faster, +~5 us
    a row at insert; the JSON type was 2.2x faster for +~18 us a row). Rows inserted before the
    column existed are computed when read, until their parts merge. Idempotent; returns the
    columns.
    """
    columns = []
    for name in names:
        if not _PROPERTY_NAME.match(name):
            raise ValueError(f"materialized property {name!r}: letters, digits and _ only")
        column = f"property_{name}"
        client.command(
            f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} LowCardinality(String) "
            f"MATERIALIZED JSONExtractString(properties, '{name}')"
        )
        columns.append(column)
    return columns


# --- rows -------------------------------------------------------------------------------------

# DateTime64's range: a value outside it would make ClickHouse refuse the whole batch (and the
# sink retry it forever), so it is refused here, per row, and the record goes to rejected_events.
# Migration 005 holds the same bounds as a constraint, for the sink's Avro fast path.
_TS_MIN = datetime(1900, 1, 1, tzinfo=UTC)
_TS_MAX = datetime(2299, 12, 31, 23, 59, 59, tzinfo=UTC)
_MS_MIN, _MS_MAX = to_ms(_TS_MIN), to_ms(_TS_MAX)


def _newest_schema(record: str) -> dict[str, Any]:
    namespace, _, name = record.rpartition(".")
    best: tuple[int, dict[str, Any]] | None = None
    for path in schema_files():
        schema = json.loads(path.read_text())
        if schema.get("name") == name and schema.get("namespace", "") == namespace:
            version = int(path.name.removesuffix(".avsc").rpartition(".v")[2])
            if best is None or version > best[0]:
                best = (version, schema)
    if best is None:
        raise LookupError(f"no schema for {record} in schemas/")
    return best[1]


def _is_timestamp(avro_type: Any) -> bool:
    return isinstance(avro_type, dict) and avro_type.get("logicalType") == "timestamp-millis"


def timestamp_in_range(ms: int) -> bool:
    """Whether epoch milliseconds fit DateTime64 (and migration 005's constraint)."""
    return _MS_MIN <= ms <= _MS_MAX


def _to_datetime(value: Any, column: str) -> datetime:
    """fastavro gives tz-aware datetimes; ints are epoch milliseconds. chDB wants datetimes."""
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
    elif isinstance(value, int) and not isinstance(value, bool):
        if not timestamp_in_range(value):  # checked first: datetime overflows past year 9999
            raise ValueError(f"{column}: {value} ms is outside DateTime64's range")
        dt = from_ms(value)
    else:
        raise ValueError(
            f"{column}: expected a datetime or epoch millis, got {type(value).__name__}"
        )
    if not _TS_MIN <= dt <= _TS_MAX:
        raise ValueError(f"{column}: {dt.isoformat()} is outside DateTime64's range")
    return dt


@dataclass(frozen=True)
class Table:
    """A ClickHouse table fed by one Avro record: columns are the record's fields, in order."""

    name: str
    record: str
    columns: tuple[str, ...]
    timestamps: frozenset[str]
    defaults: Mapping[str, Any]

    @classmethod
    def from_schema(cls, name: str, record: str) -> Table:
        fields = _newest_schema(record)["fields"]
        return cls(
            name=name,
            record=record,
            columns=tuple(f["name"] for f in fields),
            timestamps=frozenset(f["name"] for f in fields if _is_timestamp(f["type"])),
            defaults={f["name"]: f["default"] for f in fields if "default" in f},
        )

    def row(self, record: Mapping[str, Any]) -> tuple[Any, ...]:
        """One insertable row; raises ValueError for a record that ClickHouse would refuse."""
        try:
            values = list(itemgetter(*self.columns)(record))  # decoded records have every field
        except KeyError:
            values = [self._field(record, col) for col in self.columns]
        for i in self._timestamp_index:
            values[i] = _to_datetime(values[i], self.columns[i])
        return tuple(values)

    @cached_property
    def _timestamp_index(self) -> tuple[int, ...]:
        return tuple(i for i, col in enumerate(self.columns) if col in self.timestamps)

    def _field(self, record: Mapping[str, Any], col: str) -> Any:
        if col in record:
            return record[col]
        if col in self.defaults:
            return self.defaults[col]
        raise ValueError(f"{self.record} record without {col}")


EVENTS = Table.from_schema("events", CLEAN_EVENT)
REJECTED = Table.from_schema("rejected_events", REJECTED_EVENT)
IDENTITY_LINKS = Table.from_schema("identity_links", IDENTITY_LINK)
DEDUPE_NOTICES = Table.from_schema("dedupe_notices", DEDUPE_NOTICE)
REDRIVES = Table.from_schema("redrives", REDRIVE_OUTCOME)
TABLES_BY_RECORD = {
    t.record: t for t in (EVENTS, REJECTED, IDENTITY_LINKS, DEDUPE_NOTICES, REDRIVES)
}
"""Every record the sink stores, by name: a new record reaches its table by being listed here
(dedupe notices and redrive outcomes travel on ``events.rejected`` with the rejections)."""


INSERT_SETTINGS = {"throw_on_max_partitions_per_insert_block": 0}
"""``events`` is partitioned by month of ``occurred_at``: a batch of backfilled events spanning
more than 100 months (``max_partitions_per_insert_block``) is otherwise refused with
TOO_MANY_PARTS, a code that is retried while merges catch up, so the sink retried that batch
forever. With this, ClickHouse only logs a warning and the batch goes in."""


class EventWriter:
    """Inserts rows into the events tables; one insert per call, the caller decides batching.

    Raises whatever the client raises: retrying is the caller's policy (the sink retries with
    backoff and commits offsets only after an insert returned).
    """

    def __init__(self, client: Client) -> None:
        self.client = client

    def insert_rows(self, table: Table, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.client.insert(
                table.name, rows, column_names=list(table.columns), settings=INSERT_SETTINGS
            )

    def insert_avro(self, table: Table, container: bytes) -> None:
        """Insert an Avro object container whose records are ``table``'s record."""
        self.client.raw_insert(
            table.name,
            list(table.columns),
            insert_block=container,
            settings=INSERT_SETTINGS,
            fmt="Avro",
        )

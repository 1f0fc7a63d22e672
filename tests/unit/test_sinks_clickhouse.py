"""sinks.clickhouse against a real (embedded) ClickHouse: migrations, dedupe, row conversion.

chDB hosts one data directory per process at a time (another path can be opened only once every
client of the first is closed), so this module shares one temporary chDB directory, closed at the
module's end, and each test isolates its rows by a product value of its own.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from eventpipe.codec import CLEAN_EVENT, AvroCodec
from schemas import SCHEMA_DIR
from sinks.clickhouse import (
    _TS_MAX,
    _TS_MIN,
    DEDUPE_NOTICES,
    EVENTS,
    MIGRATIONS_DIR,
    REDRIVES,
    REJECTED,
    EventWriter,
    Table,
    connect,
    materialize_properties,
    migrate,
    migration_files,
    split_statements,
)
from sinks.store import EventStore, RejectedFilter
from tests.records import clean_record


@pytest.fixture(scope="module")
def chdb_dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"chdb://{tmp_path_factory.mktemp('chdb') / 'data'}"


@pytest.fixture(scope="module")
def client(chdb_dsn: str) -> Iterator[Client]:
    c = connect(chdb_dsn)
    migrate(c)
    yield c
    c.close()


@pytest.fixture(scope="module")
def readonly(chdb_dsn: str, client: Client) -> Iterator[Client]:
    c = connect(chdb_dsn, readonly=True)
    yield c
    c.close()


@pytest.fixture
def product() -> str:
    return f"p_{uuid.uuid4().hex[:10]}"


def clean(product: str, event_id: str, **over: Any) -> dict[str, Any]:
    now = datetime(2026, 5, 4, 3, 2, 1, 123000, tzinfo=UTC)
    fields = {"occurred_at": now, "received_at": now, "user_id": "u1", "person_id": "u1"}
    return clean_record(event_id, product, **{**fields, "properties": '{"a": 1}', **over})


def insert(client: Client, table: Table, records: list[dict[str, Any]]) -> None:
    """The sink's row path (``Table.row``, then ``EventWriter.insert_rows``) for some records."""
    EventWriter(client).insert_rows(table, [table.row(r) for r in records])


# --- migrations -------------------------------------------------------------------------------


def test_migrations_are_idempotent(client: Client) -> None:
    assert migrate(client) == []  # the fixture applied them all
    assert migrate(client) == []
    names = [p.name for p in migration_files()]
    rows = client.query(
        "SELECT name, count() FROM schema_migrations GROUP BY name ORDER BY name"
    ).result_rows
    assert rows == [(n, 1) for n in names]
    tables = {r[0] for r in client.query("SHOW TABLES").result_rows}
    assert {"events", "rejected_events", "schema_migrations"} <= tables


def test_a_new_migration_is_applied_once_in_order(client: Client, tmp_path: Path) -> None:
    for p in migration_files():
        (tmp_path / p.name).write_text(p.read_text())
    table = f"t_{uuid.uuid4().hex[:8]}"
    name = f"900_{table}.sql"
    (tmp_path / name).write_text(
        f"-- two statements in one file\nCREATE TABLE IF NOT EXISTS {table} (x UInt8)\n"
        f"ENGINE = MergeTree ORDER BY x;\n\nINSERT INTO {table} VALUES (1), (2)\n;\n"
    )
    assert migrate(client, tmp_path) == [name]
    assert migrate(client, tmp_path) == []
    assert client.query(f"SELECT count() FROM {table}").result_rows == [(2,)]


def test_migration_files_are_numbered(tmp_path: Path) -> None:
    numbers = [int(p.name[:3]) for p in migration_files()]
    assert numbers == list(range(1, len(numbers) + 1)), "numbered 001, 002, … with no gap"
    (tmp_path / "bad-name.sql").write_text("SELECT 1")
    with pytest.raises(ValueError, match="NNN_snake_case"):
        migration_files(tmp_path)


def test_split_statements_drops_comment_only_parts() -> None:
    sql = "-- header\nCREATE TABLE a (x String DEFAULT ';') ENGINE = Log;\n-- trailer\n;\n"
    assert split_statements(sql) == [
        "-- header\nCREATE TABLE a (x String DEFAULT ';') ENGINE = Log"
    ]


@pytest.mark.parametrize(
    ("table", "spec"),
    [
        (EVENTS, "clean_event"),
        (REJECTED, "rejected_event"),
        (DEDUPE_NOTICES, "dedupe_notice"),
        (REDRIVES, "redrive_outcome"),
    ],
)
def test_table_columns_mirror_the_avro_schema(client: Client, table: Any, spec: str) -> None:
    """The DDL and the .avsc are the two places a column is named: they must agree."""
    newest = sorted(SCHEMA_DIR.glob(f"{spec}.v*.avsc"))[-1]
    fields = tuple(f["name"] for f in json.loads(newest.read_text())["fields"])
    described = client.query(f"DESCRIBE TABLE {table.name}").result_rows
    assert table.columns == fields
    assert tuple(r[0] for r in described) == (*fields, "inserted_at")


def test_migrations_use_no_database_name() -> None:
    """The same SQL must run in whatever database the server URL names."""
    for path in MIGRATIONS_DIR.glob("*.sql"):
        assert "default." not in path.read_text()


# --- dedupe -------------------------------------------------------------------------------------


def test_same_event_id_twice_is_one_row_with_final(client: Client, product: str) -> None:
    insert(client, EVENTS, [clean(product, "evt_1", person_id="anon")])
    insert(client, EVENTS, [clean(product, "evt_1", person_id="u1"), clean(product, "evt_2")])
    q = f"SELECT event_id, person_id FROM events {{}} WHERE product = '{product}' ORDER BY event_id"
    assert len(client.query(q.format("")).result_rows) == 3
    # The newest insert wins (version column inserted_at): a replay through newer rules replaces.
    assert client.query(q.format("FINAL")).result_rows == [("evt_1", "u1"), ("evt_2", "u1")]


def test_rollups_count_a_replayed_event_once(client: Client, product: str) -> None:
    """Migration 007: copies of one event (a redelivery, a replayed range) are one event in the
    dashboards' rollups, before any merge; two events are two."""
    now = datetime.now(UTC)  # events_minutely keeps 35 days: older minutes expire at insert
    early = now - timedelta(hours=2)
    for _ in range(2):
        insert(
            client,
            EVENTS,
            [clean(product, "e1", occurred_at=now), clean(product, "e2", occurred_at=early)],
        )
    insert(client, EVENTS, [clean(product, "e3", person_id="a1", user_id=None, occurred_at=now)])
    p = {"p": product}
    minutes = client.query(
        "SELECT uniqCombinedMerge(14)(events) FROM events_minutely WHERE product = {p:String}", p
    )
    hours = client.query(
        "SELECT uniqCombinedMerge(14)(events) FROM events_hourly WHERE product = {p:String}", p
    )
    assert minutes.result_rows[0][0] == hours.result_rows[0][0] == 3
    client.insert(
        "identity_links",
        [[product, "a1", "u1", early, "e9", "linked"]] * 2,
        column_names=["product", "anonymous_id", "user_id", "linked_at", "event_id", "status"],
    )
    links = client.query(
        "SELECT uniqCombinedMerge(14)(links) FROM identity_links_daily WHERE product = {p:String}",
        p,
    )
    assert links.result_rows[0][0] == 1
    persons = client.query("SELECT persons FROM active_persons_daily WHERE product = {p:String}", p)
    assert {r[0] for r in persons.result_rows} == {1}, "u1 each day: a1 resolves to u1"


def test_a_materialized_property_is_its_own_column(client: Client, product: str) -> None:
    table = f"events_props_{product}"
    client.command(f"CREATE TABLE {table} AS events")
    old = clean(product, "e0", properties='{"plan": "free"}')
    EventWriter(client).insert_rows(EVENTS, [EVENTS.row(old)])
    client.command(f"INSERT INTO {table} SELECT * FROM events WHERE product = '{product}'")
    assert materialize_properties(client, ["plan"], table) == ["property_plan"]
    assert materialize_properties(client, ["plan"], table) == ["property_plan"], "idempotent"
    rows = [
        clean(product, "e1", properties='{"plan": "pro", "n": 1}'),
        clean(product, "e2", properties='{"n": 2}'),
        clean(product, "e3", properties='{"plan": 3}'),
    ]
    client.insert(table, [EVENTS.row(r) for r in rows], column_names=list(EVENTS.columns))
    got = client.query(f"SELECT event_id, property_plan FROM {table} ORDER BY event_id")
    assert got.result_rows == [("e0", "free"), ("e1", "pro"), ("e2", ""), ("e3", "3")]
    with pytest.raises(ValueError, match="letters, digits"):
        materialize_properties(client, ["plan'); DROP TABLE events; --"], table)
    client.command(f"DROP TABLE {table}")


def test_event_roundtrips_through_avro_and_clickhouse(client: Client, product: str) -> None:
    codec = AvroCodec()
    rec = clean(product, "evt_rt", external_id="ext", subject_type="user", version="2")
    _, decoded = codec.decode(codec.encode(CLEAN_EVENT, rec))
    insert(client, EVENTS, [decoded])
    row = client.query(
        f"SELECT occurred_at, external_id, subject_type, version, properties "
        f"FROM events FINAL WHERE product = '{product}'"
    ).result_rows[0]
    occurred = row[0] if row[0].tzinfo else row[0].replace(tzinfo=UTC)
    assert occurred == rec["occurred_at"]  # millisecond precision kept
    assert row[1:] == ("ext", "user", "2", '{"a": 1}')


def test_rejected_rows_keep_binary_payload(client: Client, product: str) -> None:
    insert(
        client,
        REJECTED,
        [
            {
                "event_id": "x",
                "product": product,
                "source": "api",
                "dialect": "v1",
                "stage": "sink",
                "reason": "not avro",
                "received_at": 1_700_000_000_000,
                "payload": b"\xc3\x01\xff\x00",
            }
        ],
    )
    rows = client.query(
        f"SELECT hex(payload), field, stage FROM rejected_events WHERE product = '{product}'"
    ).result_rows
    assert rows == [("C301FF00", None, "sink")]


def test_readonly_client_cannot_write_and_does_not_affect_writer(
    client: Client, readonly: Client, product: str
) -> None:
    with pytest.raises(Exception, match="readonly"):
        readonly.command(f"INSERT INTO events (event_id, product) VALUES ('x', '{product}')")
    insert(client, EVENTS, [clean(product, "evt_ok")])
    q = f"SELECT count() FROM events WHERE product = '{product}'"
    assert readonly.query(q).result_rows == [(1,)]


# --- row conversion (no ClickHouse) ---------------------------------------------------------


def test_row_follows_schema_order_and_converts_timestamps() -> None:
    rec = clean("p", "e", occurred_at=1_700_000_000_123, received_at=datetime(2026, 1, 1))
    row = EVENTS.row(rec)
    assert len(row) == len(EVENTS.columns)
    values = dict(zip(EVENTS.columns, row, strict=True))
    assert values["occurred_at"] == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
    assert values["received_at"] == datetime(2026, 1, 1, tzinfo=UTC)  # naive read as UTC
    assert values["properties"] == '{"a": 1}'


def test_row_fills_avro_defaults_and_refuses_missing_fields() -> None:
    rec = clean("p", "e")
    for optional in ("external_id", "person_id", "version", "properties", "traits"):
        del rec[optional]
    values = dict(zip(EVENTS.columns, EVENTS.row(rec), strict=True))
    assert (values["person_id"], values["properties"], values["version"]) == ("", "{}", None)
    del rec["product"]
    with pytest.raises(ValueError, match="without product"):
        EVENTS.row(rec)


@pytest.mark.parametrize(
    "bad",
    [datetime(3000, 1, 1, tzinfo=UTC), datetime(1800, 1, 1, tzinfo=UTC), "2026-01-01", 1.5],
)
def test_row_refuses_timestamps_clickhouse_would_refuse(bad: Any) -> None:
    with pytest.raises(ValueError, match="occurred_at"):
        EVENTS.row(clean("p", "e", occurred_at=bad))


def test_row_keeps_timezone_aware_values() -> None:
    ts = datetime(2026, 3, 1, 12, tzinfo=UTC) + timedelta(milliseconds=7)
    values = dict(zip(EVENTS.columns, EVENTS.row(clean("p", "e", occurred_at=ts)), strict=True))
    assert values["occurred_at"] is ts


def test_a_timestamp_past_year_9999_is_refused_not_a_crash() -> None:
    with pytest.raises(ValueError, match="occurred_at"):
        EVENTS.row(clean("p", "e", occurred_at=10**15))


def test_migration_005_holds_the_rows_bounds() -> None:
    """The Avro fast path relies on the constraint, the row path on _TS_MIN/_TS_MAX: one range."""
    sql = (MIGRATIONS_DIR / "005_events_timestamp_range.sql").read_text()
    low, high = _TS_MIN.strftime("%Y-%m-%d %H:%M:%S"), _TS_MAX.strftime("%Y-%m-%d %H:%M:%S")
    assert sql.count(f"toDateTime64('{low}', 3, 'UTC')") == 2
    assert sql.count(f"toDateTime64('{high}', 3, 'UTC')") == 2


# --- what a replay asks and deletes (sinks.store) ------------------------------------------------


def test_superseded_copies_go_only_where_a_newer_copy_exists(client: Client, product: str) -> None:
    store = EventStore(client)
    insert(
        client, EVENTS, [clean(product, "moved", traits='{"plan": "pro"}'), clean(product, "kept")]
    )
    since = store.now_ms()
    time.sleep(0.01)  # inserted_at has millisecond precision
    insert(
        client,
        EVENTS,
        [clean(product, "moved", canonical_name="page.seen", traits='{"plan": "pro"}')],
    )
    assert store.delete_superseded(product, ["moved", "kept"], since) == 1
    rows = client.query(
        "SELECT event_id, canonical_name FROM events FINAL WHERE product = %(p)s ORDER BY 1",
        parameters={"p": product},
    ).result_rows
    assert rows == [("kept", "page.view"), ("moved", "page.seen")], "no newer copy: kept"
    traits = client.query(
        "SELECT count() FROM user_traits FINAL WHERE product = %(p)s AND event_id = 'moved'",
        parameters={"p": product},
    ).result_rows
    assert traits == [(1,)], "the superseded copy's trait row went with it"
    stored = store.rows({product: ["moved", "missing"]})
    assert list(stored) == ["moved"] and stored["moved"][0]["canonical_name"] == "page.seen"
    assert isinstance(stored["moved"][0]["occurred_at"], int), "timestamps as epoch ms"


def test_rejections_come_back_whole_once_each_and_pending_filters_redriven(
    client: Client, product: str
) -> None:
    store = EventStore(client)
    rejection = {
        "event_id": "r1",
        "product": product,
        "source": "api",
        "dialect": "segment",
        "stage": "normalize",
        "reason": "'userId' is required",
        "received_at": 1_700_000_000_000,
        "payload": b"\xc3\x01{}",
        "source_topic": "events.raw",
        "source_partition": 2,
        "source_offset": 41,
    }
    insert(client, REJECTED, [rejection, rejection])  # a redelivered rejection: stored twice
    rows = store.rejected_rows(RejectedFilter(product=product, reason="USERID"), 10)
    assert len(rows) == 1
    assert rows[0]["payload"] == b"\xc3\x01{}" and rows[0]["source_offset"] == 41
    groups = store.rejected_groups(RejectedFilter(product=product))
    assert [(g["rejections"], g["events"], g["redriven"]) for g in groups] == [(2, 1, 0)]
    outcome = {"event_id": "r1", "product": product, "stage": "normalize"}
    outcome |= {"reason": rejection["reason"], "outcome": "accepted", "detail": "new"}
    insert(client, REDRIVES, [{**outcome, "redriven_at": 1_700_000_100_000}])
    assert store.rejected_rows(RejectedFilter(product=product, pending=True), 10) == []
    marked = store.rejected_rows(RejectedFilter(product=product), 10)
    assert marked[0]["redrive_outcome"] == "accepted", "marked, not deleted"

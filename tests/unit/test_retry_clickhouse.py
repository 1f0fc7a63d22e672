"""eventpipe.retry.clickhouse_retryable against the errors ClickHouse (chDB) and clickhouse-connect
really raise, provoked here, not constructed: a code or an exception class that changes with a
version shows up as a failure of this module.

chDB hosts one data directory per process at a time: this module's is closed at its end.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client

from eventpipe.codec import CLEAN_EVENT, AvroCodec
from eventpipe.embedded import free_port
from eventpipe.retry import clickhouse_error_text, clickhouse_retryable
from sinks.clickhouse import EVENTS, EventWriter, connect, migrate
from tests.records import clean_record

NOW = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    c = connect(f"chdb://{tmp_path_factory.mktemp('chdb') / 'data'}")
    migrate(c)
    yield c
    c.close()


def clean(event_id: str, **over: Any) -> dict[str, Any]:
    return clean_record(event_id, "retry", **{"occurred_at": NOW, "received_at": NOW, **over})


def raised(action: Callable[[], object]) -> BaseException:
    with pytest.raises(Exception) as info:
        action()
    return info.value


# --- permanent: the rows themselves ---------------------------------------------------------


def test_a_violated_check_constraint_is_permanent(client: Client) -> None:
    """Migration 005's range, reached through the Avro fast path (the year-33658 case)."""
    codec = AvroCodec()
    far = codec.encode(CLEAN_EVENT, clean("far", occurred_at=10**15))
    exc = raised(
        lambda: EventWriter(client).insert_avro(EVENTS, codec.container(CLEAN_EVENT, [far]))
    )
    assert getattr(exc, "code", None) == 469, exc  # VIOLATED_CONSTRAINT
    assert not clickhouse_retryable(exc)


def test_a_corrupt_avro_body_is_permanent(client: Client) -> None:
    codec = AvroCodec()
    cut = codec.encode(CLEAN_EVENT, clean("cut"))[:25]
    exc = raised(
        lambda: EventWriter(client).insert_avro(EVENTS, codec.container(CLEAN_EVENT, [cut]))
    )
    assert getattr(exc, "code", None) == 1001 and "avro" in str(exc), exc  # STD_EXCEPTION
    assert not clickhouse_retryable(exc)


def test_a_value_that_cannot_be_parsed_is_permanent(client: Client) -> None:
    exc = raised(
        lambda: client.command("INSERT INTO events (event_id, occurred_at) VALUES ('x', 'soon')")
    )
    assert getattr(exc, "code", None) == 41, exc  # CANNOT_PARSE_DATETIME
    assert not clickhouse_retryable(exc)


def test_a_value_out_of_range_for_its_type_is_permanent(client: Client) -> None:
    table = f"t_{uuid.uuid4().hex[:8]}"
    client.command(f"CREATE TABLE {table} (x UInt8, d Decimal(4, 2)) ENGINE = Memory")
    too_long = raised(lambda: client.command(f"INSERT INTO {table} (d) VALUES (1000000)"))
    too_big = raised(
        lambda: client.command(f"INSERT INTO {table} (x) SELECT accurateCast(300, 'UInt8')")
    )
    assert getattr(too_long, "code", None) == 69, too_long  # ARGUMENT_OUT_OF_BOUND
    assert getattr(too_big, "code", None) == 70, too_big  # CANNOT_CONVERT_TYPE
    assert not clickhouse_retryable(too_long) and not clickhouse_retryable(too_big)


def test_a_type_mismatch_caught_by_the_client_is_permanent(client: Client) -> None:
    """clickhouse-connect serializes rows before sending: a wrong Python type fails there."""
    row = list(EVENTS.row(clean("typed")))
    as_int = [123, *row[1:]]  # event_id is a String
    as_text = [*row[:8], "not a date", *row[9:]]  # occurred_at is a DateTime64
    for bad in (as_int, as_text):
        exc = raised(lambda bad=bad: EventWriter(client).insert_rows(EVENTS, [bad]))
        assert not clickhouse_retryable(exc), repr(exc)
    EventWriter(client).insert_rows(EVENTS, [row])  # the client is still usable after them


def test_a_refusal_quoting_binary_values_is_permanent_and_keeps_its_text(client: Client) -> None:
    """chDB cannot decode a message that quotes a refused row's bytes: the code is read from
    the bytes its UnicodeDecodeError holds (else the refusal would be retried forever)."""
    table = f"t_{uuid.uuid4().hex[:8]}"
    client.command(
        f"CREATE TABLE {table} (payload String, CONSTRAINT no_poison CHECK "
        "position(payload, 'poison') = 0) ENGINE = Memory"
    )
    exc = raised(lambda: client.insert(table, [[b"\xc3\x01 poison"]], column_names=["payload"]))
    assert getattr(exc, "code", 0) is None and isinstance(exc.__cause__, UnicodeDecodeError)
    assert not clickhouse_retryable(exc)
    assert clickhouse_error_text(exc).startswith("Code: 469.")
    assert "no_poison" in clickhouse_error_text(exc)


# --- retryable: ClickHouse down, overloaded, or not migrated yet ---------------------------------


def test_too_many_parts_is_retryable(client: Client) -> None:
    table = f"t_{uuid.uuid4().hex[:8]}"
    client.command(
        f"CREATE TABLE {table} (x UInt8) ENGINE = MergeTree ORDER BY x "
        "SETTINGS parts_to_throw_insert = 2, parts_to_delay_insert = 1"
    )
    client.command(f"SYSTEM STOP MERGES {table}")

    def fill() -> None:
        for i in range(5):
            client.insert(table, [[i]], column_names=["x"])

    exc = raised(fill)
    assert getattr(exc, "code", None) == 252, exc  # TOO_MANY_PARTS
    assert clickhouse_retryable(exc)


def test_memory_limit_and_timeout_are_retryable(client: Client) -> None:
    memory = raised(
        lambda: client.command(
            "SELECT count() FROM numbers(10000000) GROUP BY number "
            "SETTINGS max_memory_usage = 1000000"
        )
    )
    timeout = raised(
        lambda: client.command(
            "SELECT sleep(1) SETTINGS max_execution_time = 0.2, "
            "timeout_before_checking_execution_speed = 0"
        )
    )
    assert getattr(memory, "code", None) == 241, memory  # MEMORY_LIMIT_EXCEEDED
    assert getattr(timeout, "code", None) == 159, timeout  # TIMEOUT_EXCEEDED
    assert clickhouse_retryable(memory) and clickhouse_retryable(timeout)


def test_a_missing_table_is_retried_until_migrated(client: Client) -> None:
    exc = raised(lambda: client.insert("not_migrated_yet", [[1]], column_names=["x"]))
    assert getattr(exc, "code", None) == 60, exc  # UNKNOWN_TABLE
    assert clickhouse_retryable(exc)


def test_a_server_that_does_not_answer_is_retryable() -> None:
    exc = raised(
        lambda: clickhouse_connect.get_client(
            host="127.0.0.1", port=free_port(), connect_timeout=2, send_receive_timeout=2
        )
    )
    assert clickhouse_retryable(exc), repr(exc)

"""sinks.sink's loop with a scripted consumer and a recording client: the commit order.

The real broker and chDB are exercised end to end elsewhere; here each guarantee of the module
docstring gets the test that would catch its loss: commit only after insert, no commit and no
further consumption while inserts fail, undecodable messages stored as rejections, a table not
inserted twice by a retry, revoked partitions' rows dropped.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest
from confluent_kafka import KafkaError, TopicPartition
from prometheus_client import CollectorRegistry
from tenacity.wait import wait_base

import sinks.batch_insert as batch_insert
import sinks.sink as sink_module
from eventpipe.codec import CLEAN_EVENT, REJECTED_EVENT, AvroCodec
from eventpipe.retry import backoff
from eventpipe.settings import Settings
from eventpipe.topics import TopicNames
from sinks.clickhouse import EVENTS, REJECTED
from sinks.sink import Sink, SinkMetrics
from tests.fakes import Msg, ScriptedConsumer
from tests.records import clean_record

SETTINGS = Settings(kafka_bootstrap="unused:9092", sink_batch_size=100, sink_flush_interval_s=0)
TOPICS = TopicNames.from_settings(SETTINGS)
CODEC = AvroCodec()
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    def fast() -> wait_base:
        return backoff(0.001, 0.004)

    monkeypatch.setattr(sink_module, "backoff", fast)
    monkeypatch.setattr(batch_insert, "backoff", fast)


class RecordingClient:
    def __init__(self, log: list[Any], fail: dict[str, int] | None = None) -> None:
        self.log, self.fail = log, dict(fail or {})
        self.rows: dict[str, list[Any]] = {}

    def insert(self, table: str, rows: Any, column_names: list[str], **_: Any) -> None:
        if self.fail.get(table, 0) > 0:
            self.fail[table] -= 1
            self.log.append(("insert failed", table))
            raise ConnectionError("ClickHouse unavailable")
        self.log.append(("insert", table, len(rows)))
        self.rows.setdefault(table, []).extend(
            dict(zip(column_names, r, strict=True)) for r in rows
        )


class AvroRecordingClient(RecordingClient):
    """Also takes the sink's fast path (Avro container inserts); the plain client has no
    ``raw_insert``, so with it every batch goes the row-by-row way."""

    def __init__(self, log: list[Any], refuse_avro: bool = False) -> None:
        super().__init__(log)
        self.refuse_avro = refuse_avro

    def raw_insert(
        self, table: str, column_names: list[str], insert_block: bytes, fmt: str, **_: Any
    ) -> None:
        if self.refuse_avro:
            self.log.append(("raw_insert refused", table))
            raise ValueError("avro::Exception: EOF reached")
        records = list(fastavro.reader(io.BytesIO(insert_block)))
        self.log.append((f"raw_insert {fmt}", table, len(records)))
        self.rows.setdefault(table, []).extend(records)  # type: ignore[arg-type]


def clean_bytes(event_id: str) -> bytes:
    return CODEC.encode(CLEAN_EVENT, clean_record(event_id, occurred_at=NOW, received_at=NOW))


def rejected_bytes() -> bytes:
    rec = {
        "event_id": "r1",
        "product": "p",
        "source": "api",
        "dialect": "v1",
        "stage": "normalize",
        "field": "name",
        "reason": "empty name",
        "received_at": NOW,
        "payload": b"{}",
    }
    return CODEC.encode(REJECTED_EVENT, rec)


def run(
    script: list[Any],
    fail: dict[str, int] | None = None,
    client_factory: Callable[[list[Any]], RecordingClient] | None = None,
) -> tuple[list[Any], RecordingClient]:
    log: list[Any] = []
    stop = threading.Event()
    consumer = ScriptedConsumer(log, stop, script)
    client = client_factory(log) if client_factory else RecordingClient(log, fail)
    sink = Sink(
        SETTINGS,
        client,  # type: ignore[arg-type]
        CODEC,
        metrics=SinkMetrics(CollectorRegistry()),
        consumer_factory=lambda conf: consumer,  # type: ignore[arg-type,return-value]
    )
    sink.run(stop)
    assert consumer.closed
    return log, client


def test_commit_comes_after_insert_with_next_offsets() -> None:
    batch = [
        Msg(TOPICS.clean, 0, 10, clean_bytes("a")),
        Msg(TOPICS.clean, 0, 11, clean_bytes("b")),
        Msg(TOPICS.clean, 2, 5, clean_bytes("c")),
        Msg(TOPICS.rejected, 1, 0, rejected_bytes()),
    ]
    log, client = run([batch])
    assert log[1:4] == [
        ("insert", EVENTS.name, 3),
        ("insert", REJECTED.name, 1),
        ("commit", [(TOPICS.clean, 0, 12), (TOPICS.clean, 2, 6), (TOPICS.rejected, 1, 1)]),
    ]
    assert [r["event_id"] for r in client.rows[EVENTS.name]] == ["a", "b", "c"]
    assert client.rows[REJECTED.name][0]["reason"] == "empty name"


def test_fast_path_one_avro_insert_then_commit() -> None:
    batch = [
        Msg(TOPICS.clean, 0, 10, clean_bytes("a")),
        Msg(TOPICS.clean, 2, 5, clean_bytes("b")),
        Msg(TOPICS.rejected, 1, 0, rejected_bytes()),
    ]
    log, client = run([batch], client_factory=AvroRecordingClient)
    assert log[1:4] == [
        ("raw_insert Avro", EVENTS.name, 2),
        ("insert", REJECTED.name, 1),
        ("commit", [(TOPICS.clean, 0, 11), (TOPICS.clean, 2, 6), (TOPICS.rejected, 1, 1)]),
    ]
    assert [r["event_id"] for r in client.rows[EVENTS.name]] == ["a", "b"]


def test_a_refused_avro_insert_becomes_row_inserts_before_the_commit() -> None:
    batch = [Msg(TOPICS.clean, 0, 10, clean_bytes("a")), Msg(TOPICS.clean, 0, 11, b"\xc3\x01")]
    log, client = run([batch], client_factory=lambda log: AvroRecordingClient(log, True))
    assert log[1:5] == [
        ("raw_insert refused", EVENTS.name),
        ("insert", EVENTS.name, 1),
        ("insert", REJECTED.name, 1),
        ("commit", [(TOPICS.clean, 0, 12)]),
    ]
    assert [r["event_id"] for r in client.rows[EVENTS.name]] == ["a"]


def test_failed_insert_is_retried_without_commit() -> None:
    log, _ = run([[Msg(TOPICS.clean, 0, 0, clean_bytes("a"))]], fail={EVENTS.name: 3})
    assert log[:6] == [
        "consume",
        ("insert failed", EVENTS.name),
        ("insert failed", EVENTS.name),
        ("insert failed", EVENTS.name),
        ("insert", EVENTS.name, 1),
        ("commit", [(TOPICS.clean, 0, 1)]),
    ]


def test_a_table_already_inserted_is_not_inserted_again_by_a_retry() -> None:
    batch = [
        Msg(TOPICS.clean, 0, 0, clean_bytes("a")),
        Msg(TOPICS.rejected, 0, 0, rejected_bytes()),
    ]
    log, client = run([batch], fail={REJECTED.name: 2})
    assert [e for e in log if e != "consume"][:5] == [
        ("insert", EVENTS.name, 1),
        ("insert failed", REJECTED.name),
        ("insert failed", REJECTED.name),
        ("insert", REJECTED.name, 1),
        ("commit", [(TOPICS.clean, 0, 1), (TOPICS.rejected, 0, 1)]),
    ]
    assert len(client.rows[EVENTS.name]) == 1


def test_stop_during_an_outage_gives_up_without_commit() -> None:
    log: list[Any] = []
    stop = threading.Event()
    consumer = ScriptedConsumer(log, stop, [[Msg(TOPICS.clean, 0, 0, clean_bytes("a"))]])

    class Down(RecordingClient):
        def insert(self, table: str, rows: Any, column_names: list[str], **kw: Any) -> None:
            if len(self.log) > 5:
                stop.set()  # the owner stops the sink while ClickHouse is still down
            super().insert(table, rows, column_names, **kw)

    client = Down(log, fail={EVENTS.name: 10**6})
    Sink(
        SETTINGS,
        client,  # type: ignore[arg-type]
        CODEC,
        metrics=SinkMetrics(CollectorRegistry()),
        consumer_factory=lambda conf: consumer,  # type: ignore[arg-type,return-value]
    ).run(stop)
    assert consumer.closed
    assert log[0] == "consume" and set(log[1:]) == {("insert failed", EVENTS.name)}, "no commit"


def test_undecodable_messages_become_rejections_and_the_loop_goes_on() -> None:
    batch = [
        Msg(TOPICS.clean, 0, 0, b"not avro"),
        Msg(TOPICS.clean, 0, 1, None),
        Msg(TOPICS.clean, 0, 2, CODEC.encode("eventpipe.RawEvent", _raw())),
        Msg(TOPICS.clean, 0, 3, clean_bytes("ok")),
    ]
    log, client = run([batch])
    rejected = client.rows[REJECTED.name]
    assert [r["event_id"] for r in rejected] == [f"{TOPICS.clean}/0/{i}" for i in range(3)]
    assert all(r["stage"] == "sink" for r in rejected)
    assert "missing C3 01 header" in rejected[0]["reason"]
    assert rejected[0]["payload"] == b"not avro"
    assert "RawEvent" in rejected[2]["reason"]
    assert [r["event_id"] for r in client.rows[EVENTS.name]] == ["ok"]
    assert ("commit", [(TOPICS.clean, 0, 4)]) in log


def test_out_of_range_timestamp_is_rejected_not_retried_forever() -> None:
    rec = CODEC.decode(clean_bytes("x"))[1]
    rec["occurred_at"] = datetime(2400, 1, 1, tzinfo=UTC)
    log, client = run([[Msg(TOPICS.clean, 1, 7, CODEC.encode(CLEAN_EVENT, rec))]])
    assert "outside DateTime64" in client.rows[REJECTED.name][0]["reason"]
    assert ("commit", [(TOPICS.clean, 1, 8)]) in log


def test_undecodable_message_with_an_impossible_kafka_timestamp_is_still_rejected() -> None:
    """Its rejection row falls back to the current time instead of failing (and the loop)."""
    log, client = run([[Msg(TOPICS.clean, 0, 3, b"junk", timestamp_ms=10**15)]])
    rejected = client.rows[REJECTED.name]
    assert [r["event_id"] for r in rejected] == [f"{TOPICS.clean}/0/3"]
    assert rejected[0]["received_at"].year >= 2026
    assert ("commit", [(TOPICS.clean, 0, 4)]) in log


def test_revoked_partitions_buffered_rows_are_dropped_not_committed() -> None:
    def revoke_p0(consumer: ScriptedConsumer) -> None:
        assert consumer.on_revoke is not None
        consumer.on_revoke(consumer, [TopicPartition(TOPICS.clean, 0)])

    settings = SETTINGS.model_copy(update={"sink_flush_interval_s": 60})
    log: list[Any] = []
    stop = threading.Event()
    consumer = ScriptedConsumer(
        log,
        stop,
        [
            [Msg(TOPICS.clean, 0, 0, clean_bytes("a")), Msg(TOPICS.clean, 1, 0, clean_bytes("b"))],
            revoke_p0,
        ],
    )
    client = RecordingClient(log)
    Sink(
        settings,
        client,  # type: ignore[arg-type]
        CODEC,
        metrics=SinkMetrics(CollectorRegistry()),
        consumer_factory=lambda conf: consumer,  # type: ignore[arg-type,return-value]
    ).run(stop)
    assert [r["event_id"] for r in client.rows[EVENTS.name]] == ["b"]
    assert ("commit", [(TOPICS.clean, 1, 1)]) in log


def _raw() -> dict[str, Any]:
    """A record of a type the sink does not write (raw events stay in Kafka)."""
    return {
        "event_id": "evt_x",
        "dialect": "v2",
        "product": "p",
        "source": "api",
        "external_id": None,
        "received_at": NOW,
        "payload": b"{}",
    }


def test_while_an_insert_is_retried_at_most_one_more_batch_is_consumed() -> None:
    """The insert runs beside the consumer: one batch may be read ahead, no more, and nothing
    is committed before ClickHouse has each batch, in order."""
    script = [[Msg(TOPICS.clean, 0, i, clean_bytes(f"e{i}"))] for i in range(4)]
    log, client = run(script, fail={EVENTS.name: 8})
    first_insert = log.index(("insert", EVENTS.name, 1))
    assert log[:first_insert].count("consume") <= 2
    commits = [e for e in log if e[0] == "commit"]
    assert commits == [("commit", [(TOPICS.clean, 0, i + 1)]) for i in range(len(commits))]
    assert commits[-1] == ("commit", [(TOPICS.clean, 0, 4)])
    assert [r["event_id"] for r in client.rows[EVENTS.name]] == ["e0", "e1", "e2", "e3"]


def test_a_partition_revoked_while_its_batch_is_inserted_is_not_committed() -> None:
    """The batch in flight still goes in (its rows are whole), but the new owner commits for
    the revoked partition: committing it here could skip what the new owner has not read."""
    revoked = threading.Event()

    def revoke_p0(consumer: ScriptedConsumer) -> None:
        assert consumer.on_revoke is not None
        consumer.on_revoke(consumer, [TopicPartition(TOPICS.clean, 0)])
        revoked.set()

    class WaitsForTheRevoke(RecordingClient):
        def insert(self, table: str, rows: Any, column_names: list[str], **kw: Any) -> None:
            assert revoked.wait(10), "the revoke never came"  # the batch is in flight till then
            super().insert(table, rows, column_names, **kw)

    batch = [Msg(TOPICS.clean, 0, 0, clean_bytes("a")), Msg(TOPICS.clean, 1, 0, clean_bytes("b"))]
    log, client = run([batch, revoke_p0], client_factory=lambda log: WaitsForTheRevoke(log))
    assert [r["event_id"] for r in client.rows[EVENTS.name]] == ["a", "b"]
    assert [e for e in log if e[0] == "commit"] == [("commit", [(TOPICS.clean, 1, 1)])]


# --- waiting for ClickHouse with the partitions paused -----------------------------------------


class HeldDown(RecordingClient):
    """Inserts fail (retryably) until ``released`` is set, or for 5 s at most (so that a sink
    that never polls while it waits fails the test instead of hanging it)."""

    def __init__(self, log: list[Any]) -> None:
        super().__init__(log)
        self.released = threading.Event()
        self.gives_up_at = time.monotonic() + 5

    def insert(self, table: str, rows: Any, column_names: list[str], **kw: Any) -> None:
        if not self.released.is_set() and time.monotonic() < self.gives_up_at:
            raise ConnectionError("ClickHouse unavailable")
        super().insert(table, rows, column_names, **kw)


def test_a_ready_batch_waits_for_clickhouse_paused_and_polling() -> None:
    """The batch after the one being inserted waits with every partition paused, yet the
    consumer is still polled (the script's next steps run during the wait, one of them the
    end of the outage); a partition assigned meanwhile is paused as well, before any of its
    messages is read; all resume once the waiting batch is handed on."""
    p0, p1 = (TOPICS.clean, 0), (TOPICS.clean, 1)
    client = HeldDown([])

    def assign_p1(consumer: ScriptedConsumer) -> None:
        assert consumer.on_assign is not None
        consumer.on_assign(consumer, [TopicPartition(*p1)])

    def clickhouse_back(consumer: ScriptedConsumer) -> None:
        client.released.set()

    script = [
        [Msg(TOPICS.clean, 0, 0, clean_bytes("e0"))],
        [Msg(TOPICS.clean, 0, 1, clean_bytes("e1"))],
        assign_p1,
        clickhouse_back,
        [Msg(TOPICS.clean, 1, 0, clean_bytes("e2"))],
    ]
    log: list[Any] = []
    client.log = log
    stop = threading.Event()
    consumer = ScriptedConsumer(log, stop, script, assign=[p0])
    Sink(
        SETTINGS,
        client,  # type: ignore[arg-type]
        CODEC,
        metrics=SinkMetrics(CollectorRegistry()),
        consumer_factory=lambda conf: consumer,  # type: ignore[arg-type,return-value]
    ).run(stop)
    assert consumer.flow[:3] == [("pause", [p0]), ("pause", [p1]), ("resume", [p0, p1])]
    first_commit = log.index(("commit", [(TOPICS.clean, 0, 1)]))
    assert log[first_commit:].count("consume") == 1, "p1's batch is read only after the resume"
    assert ("commit", [(TOPICS.clean, 1, 1)]) in log
    assert [r["event_id"] for r in client.rows[EVENTS.name]] == ["e0", "e1", "e2"]


def test_a_partition_revoked_while_paused_is_neither_committed_nor_resumed() -> None:
    p0, p1 = (TOPICS.clean, 0), (TOPICS.clean, 1)
    client = HeldDown([])

    def revoke_p0(consumer: ScriptedConsumer) -> None:
        assert consumer.on_revoke is not None
        consumer.on_revoke(consumer, [TopicPartition(*p0)])
        consumer.assigned.discard(p0)

    def clickhouse_back(consumer: ScriptedConsumer) -> None:
        client.released.set()

    script = [
        [Msg(TOPICS.clean, 0, 0, clean_bytes("a0")), Msg(TOPICS.clean, 1, 0, clean_bytes("b0"))],
        [Msg(TOPICS.clean, 0, 1, clean_bytes("a1")), Msg(TOPICS.clean, 1, 1, clean_bytes("b1"))],
        revoke_p0,
        clickhouse_back,
    ]
    log: list[Any] = []
    client.log = log
    stop = threading.Event()
    consumer = ScriptedConsumer(log, stop, script)
    Sink(
        SETTINGS,
        client,  # type: ignore[arg-type]
        CODEC,
        metrics=SinkMetrics(CollectorRegistry()),
        consumer_factory=lambda conf: consumer,  # type: ignore[arg-type,return-value]
    ).run(stop)
    assert consumer.flow[:2] == [("pause", [p0, p1]), ("resume", [p1])]
    assert [e for e in log if e[0] == "commit"] == [
        ("commit", [(TOPICS.clean, 1, 1)]),  # the batch in flight: its rows went in, p0's too
        ("commit", [(TOPICS.clean, 1, 2)]),  # the waiting batch: p0's rows were dropped
    ]
    assert sorted(r["event_id"] for r in client.rows[EVENTS.name]) == ["a0", "b0", "b1"]


# --- commits checked per partition ---------------------------------------------------------------


def test_a_partition_whose_commit_failed_retriably_is_committed_again_paused() -> None:
    timed_out = KafkaError(KafkaError.REQUEST_TIMED_OUT, "timed out", retriable=True)
    log: list[Any] = []
    stop = threading.Event()
    batch = [Msg(TOPICS.clean, 0, 0, clean_bytes("a")), Msg(TOPICS.clean, 1, 0, clean_bytes("b"))]
    later = [Msg(TOPICS.clean, 0, 1, clean_bytes("c"))]
    done = ("commit", [(TOPICS.clean, 0, 2)])
    consumer = ScriptedConsumer(log, stop, [batch, later], until=lambda log: done in log)
    consumer.commit_errors = [{(TOPICS.clean, 1): timed_out}, {(TOPICS.clean, 1): timed_out}]
    metrics = SinkMetrics(CollectorRegistry())
    Sink(
        SETTINGS,
        RecordingClient(log),  # type: ignore[arg-type]
        CODEC,
        metrics=metrics,
        consumer_factory=lambda conf: consumer,  # type: ignore[arg-type,return-value]
    ).run(stop)
    assert [e for e in log if e[0] == "commit"][:3] == [
        ("commit", [(TOPICS.clean, 0, 1), (TOPICS.clean, 1, 1)]),
        ("commit", [(TOPICS.clean, 1, 1)]),
        ("commit", [(TOPICS.clean, 1, 1)]),
    ]
    assert ("commit", [(TOPICS.clean, 0, 2)]) in log, "the next batch goes on after"
    assert consumer.flow[:2] == [
        ("pause", [(TOPICS.clean, 0), (TOPICS.clean, 1)]),
        ("resume", [(TOPICS.clean, 0), (TOPICS.clean, 1)]),
    ]
    assert metrics.commit_failures.labels(retryable="true")._value.get() == 2


def test_a_partition_whose_commit_cannot_pass_is_dropped_and_the_sink_goes_on() -> None:
    fenced = KafkaError(KafkaError.ILLEGAL_GENERATION, "illegal generation")
    log: list[Any] = []
    stop = threading.Event()
    batch = [Msg(TOPICS.clean, 0, 0, clean_bytes("a")), Msg(TOPICS.clean, 1, 0, clean_bytes("b"))]
    later = [Msg(TOPICS.clean, 1, 1, clean_bytes("c"))]
    done = ("commit", [(TOPICS.clean, 1, 2)])
    consumer = ScriptedConsumer(log, stop, [batch, later], until=lambda log: done in log)
    consumer.commit_errors = [{(TOPICS.clean, 1): fenced}]
    metrics = SinkMetrics(CollectorRegistry())
    Sink(
        SETTINGS,
        RecordingClient(log),  # type: ignore[arg-type]
        CODEC,
        metrics=metrics,
        consumer_factory=lambda conf: consumer,  # type: ignore[arg-type,return-value]
    ).run(stop)
    assert [e for e in log if e[0] == "commit"] == [
        ("commit", [(TOPICS.clean, 0, 1), (TOPICS.clean, 1, 1)]),
        ("commit", [(TOPICS.clean, 1, 2)]),
    ]
    assert metrics.commit_failures.labels(retryable="false")._value.get() == 1

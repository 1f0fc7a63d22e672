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
from confluent_kafka import TopicPartition
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


class Msg:
    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        value: bytes | None,
        timestamp_ms: int = 1_767_323_045_000,
    ) -> None:
        self._t, self._p, self._o, self._v = topic, partition, offset, value
        self._ts = timestamp_ms

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes | None:
        return self._v

    def error(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)


class ScriptedConsumer:
    """Returns one scripted batch per consume() (logged as "consume"). Once the script is
    exhausted it returns nothing (not logged) and sets stop when a commit followed the last
    batch, or after ~2 s: the sink's inserts run in another thread.

    Like a real consumer it first assigns (through the sink's ``on_assign``) every partition
    the script's batches come from, and holds back (returns nothing, not logged) a batch with
    a message of a paused partition; pause and resume calls go to ``flow``."""

    def __init__(self, log: list[Any], stop: threading.Event, script: list[Any]) -> None:
        self.log, self.stop, self.script = log, stop, list(script)
        self.on_revoke: Callable[..., None] | None = None
        self.on_assign: Callable[..., None] | None = None
        self.assigned: set[tuple[str, int]] = set()
        self.paused: set[tuple[str, int]] = set()
        self.flow: list[tuple[str, list[tuple[str, int]]]] = []
        self.closed = False
        self._assigned = False
        self._last_batch_at = 0
        self._idle = 0

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.on_revoke = callbacks["on_revoke"]
        self.on_assign = callbacks["on_assign"]

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in sorted(self.assigned)]

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned |= {(tp.topic, tp.partition) for tp in partitions}

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.flow.append(("pause", sorted((tp.topic, tp.partition) for tp in partitions)))
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.flow.append(("resume", sorted((tp.topic, tp.partition) for tp in partitions)))
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def consume(self, num_messages: int, timeout: float) -> list[Msg]:
        if not self._assigned and self.on_assign is not None:
            self._assigned = True
            parts = {
                (m.topic(), m.partition())
                for step in self.script
                if isinstance(step, list)
                for m in step
            }
            self.on_assign(self, [TopicPartition(t, p) for t, p in sorted(parts)])
        step = self.script[0] if self.script else None
        if isinstance(step, list) and any((m.topic(), m.partition()) in self.paused for m in step):
            time.sleep(0.002)
            return []
        if not self.script:
            committed = any(e[0] == "commit" for e in self.log[self._last_batch_at :])
            self._idle += 1
            if committed or self._idle > 1000:
                self.stop.set()
            time.sleep(0.002)
            return []
        self.log.append("consume")
        self._last_batch_at = len(self.log)
        step = self.script.pop(0)
        if callable(step):
            step(self)
            return []
        return list(step)

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert asynchronous is False
        self.log.append(("commit", sorted((o.topic, o.partition, o.offset) for o in offsets)))

    def close(self) -> None:
        self.closed = True


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
    rec = {
        "event_id": event_id,
        "product": "p",
        "source": "api",
        "dialect": "v2",
        "event_type": "page",
        "action": "view",
        "canonical_name": "page.view",
        "name_format": "unified",
        "occurred_at": NOW,
        "received_at": NOW,
    }
    return CODEC.encode(CLEAN_EVENT, rec)


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

"""The sink under ClickHouse failure: no offset moves until the rows are in, and nothing is lost
or doubled once ClickHouse is back. Real Tansu broker, real chDB; the fault is injected by a
client wrapper whose inserts raise while ``failing`` is set.

Runs in this process (not through ``eventpipe dev``) because it must break ClickHouse under a
running sink; it skips where the suite runs against external servers.
"""

from __future__ import annotations

import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from eventpipe.codec import CLEAN_EVENT, AvroCodec
from eventpipe.embedded import TansuBroker
from eventpipe.kafka import ensure_topics, producer_config
from eventpipe.settings import Settings
from eventpipe.topics import TopicNames
from sinks.clickhouse import connect, migrate
from sinks.sink import Sink, SinkMetrics
from tests.conftest import Stack
from tests.records import clean_record

pytestmark = pytest.mark.fault
PRODUCT = "sinkfault"


class FlakyClient:
    """A clickhouse-connect client whose inserts (rows or Avro bytes) fail while ``failing``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.failing = threading.Event()
        self.failures = 0

    def _fail_if_set(self) -> None:
        if self.failing.is_set():
            self.failures += 1
            raise ConnectionError("injected: ClickHouse unavailable")

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        self._fail_if_set()
        return self.inner.insert(*args, **kwargs)

    def raw_insert(self, *args: Any, **kwargs: Any) -> Any:
        self._fail_if_set()
        return self.inner.raw_insert(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def clean(event_id: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return clean_record(
        event_id,
        PRODUCT,
        action="viewed",
        canonical_name="page_viewed",
        occurred_at=now,
        received_at=now,
    )


def wait(pred: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.1)


@pytest.fixture
def env(backend_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, Any]]:
    if backend_env:
        pytest.skip("injects faults into the embedded ClickHouse")
    broker = TansuBroker()
    broker.start()
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        kafka_session_timeout_s=2,
        kafka_heartbeat_interval_s=0.5,
        topic_prefix=f"sf{uuid.uuid4().hex[:6]}.",
        sink_group="sink-fault",
        sink_flush_interval_s=0.2,
    )
    ensure_topics(settings)
    dsn = f"chdb://{tmp_path / 'ch'}"
    writer = connect(dsn)
    migrate(writer)
    reader = connect(dsn, readonly=True)
    try:
        yield {"settings": settings, "writer": writer, "reader": reader, "broker": broker}
    finally:
        reader.close()
        writer.close()
        broker.stop()


def test_sink_retries_commits_nothing_during_an_outage_and_catches_up(
    env: dict[str, Any],
) -> None:
    settings: Settings = env["settings"]
    topics = TopicNames.from_settings(settings)
    codec = AvroCodec()
    producer = Producer(producer_config(settings))

    def send(ids: list[str]) -> None:
        for eid in ids:
            producer.produce(topics.clean, codec.encode(CLEAN_EVENT, clean(eid)), key=eid)
        assert producer.flush(30) == 0

    def rows(final: bool = True) -> int:
        sql = f"SELECT count() FROM events {'FINAL' if final else ''} WHERE product = '{PRODUCT}'"
        return int(env["reader"].query(sql).result_rows[0][0])

    def committed() -> int:
        c = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": settings.sink_group})
        parts = [TopicPartition(topics.clean, p) for p in range(settings.topic_partitions)]
        offsets = c.committed(parts, timeout=10)
        c.close()
        return sum(max(tp.offset, 0) for tp in offsets)

    flaky = FlakyClient(env["writer"])
    stop = threading.Event()
    sink = Sink(settings, flaky, codec, metrics=SinkMetrics(CollectorRegistry()))  # type: ignore[arg-type]
    thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    thread.start()
    try:
        first = [f"evt_a{i}" for i in range(500)]
        send(first)
        wait(lambda: rows() == 500)
        wait(lambda: committed() == 500)

        flaky.failing.set()
        second = [f"evt_b{i}" for i in range(700)]
        send(second)
        wait(lambda: flaky.failures >= 3)  # the sink is retrying with backoff
        assert rows(final=False) == 500, "nothing inserted during the outage"
        assert committed() == 500, "no offset committed for rows ClickHouse does not have"

        flaky.failing.clear()
        wait(lambda: rows() == 1200)
        wait(lambda: committed() == 1200)
        assert rows(final=False) == 1200, "each row inserted once, no doubles after the retries"
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()


def test_clean_events_clickhouse_refuses_are_rejected_and_the_rest_land(
    env: dict[str, Any],
) -> None:
    """The sink's fast path hands ClickHouse the Avro bytes undecoded; a batch it refuses (a
    corrupt body, a timestamp outside DateTime64) is decoded row by row instead: each bad
    record becomes a rejected_events row, and every good one of the same batch still lands."""
    settings: Settings = env["settings"]
    topics = TopicNames.from_settings(settings)
    codec = AvroCodec()
    producer = Producer(producer_config(settings))
    good = [f"evt_g{i}" for i in range(50)]
    far = {**clean("evt_far"), "occurred_at": 10**15}  # year 33658: DateTime64 cannot hold it
    corrupt = codec.encode(CLEAN_EVENT, clean("evt_corrupt"))[:25]  # right header, cut body
    values = [codec.encode(CLEAN_EVENT, clean(eid)) for eid in good[:25]]
    values += [codec.encode(CLEAN_EVENT, far), corrupt]
    values += [codec.encode(CLEAN_EVENT, clean(eid)) for eid in good[25:]]
    assert all(codec.is_newest(CLEAN_EVENT, v) for v in values), "all take the fast path"
    for value in values:
        producer.produce(topics.clean, value, partition=0)  # one partition: one batch
    assert producer.flush(30) == 0

    stop = threading.Event()
    sink = Sink(settings, env["writer"], codec, metrics=SinkMetrics(CollectorRegistry()))
    thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    thread.start()
    reader = env["reader"]
    try:
        wait(lambda: reader.query("SELECT count() FROM rejected_events").result_rows[0][0] >= 2)
        wait(lambda: reader.query("SELECT count() FROM events").result_rows[0][0] >= len(good))
    finally:
        stop.set()
        thread.join(30)
    landed = reader.query("SELECT event_id FROM events ORDER BY event_id").result_rows
    assert [r[0] for r in landed] == sorted(good)
    reasons = [r[0] for r in reader.query("SELECT reason FROM rejected_events").result_rows]
    assert len(reasons) == 2
    assert any("outside DateTime64" in r for r in reasons), reasons
    assert any("corrupt" in r for r in reasons), reasons


# --- an outage under `eventpipe dev`, longer than the sink's max.poll.interval.ms ----------------

OUTAGE_DIR = Path(__file__).resolve().parent / "clickhouse_outage"
DOWN_FILE = Path(tempfile.gettempdir()) / f"eventpipe-clickhouse-down-{uuid.uuid4().hex[:8]}"
MAX_POLL_MS = 6000
GROUP_CHURN = re.compile(
    r"maximum poll interval|\bpartitions (assigned|revoked) +partitions=", re.I
)
"""A member put out of its group for not polling (librdkafka's own line, and the sink's
"consumer error" with it), or any assignment change: with one sink and no restart, none may
happen after the first assignment."""


@pytest.mark.stack_env(
    {
        "PYTHONPATH": str(OUTAGE_DIR),
        "EP_TEST_CLICKHOUSE_DOWN_FILE": str(DOWN_FILE),
        "EVENTPIPE_SINK_MAX_POLL_INTERVAL_MS": str(MAX_POLL_MS),
    }
)
def test_an_outage_longer_than_max_poll_interval_keeps_the_sink_in_its_group(
    own_stack: Stack,
) -> None:
    """ClickHouse down for twice ``max.poll.interval.ms`` while events keep coming: the sink
    waits with its partitions paused, polling, so it is never put out of its group. Then
    every accepted event is in ``events`` once (not merely once after FINAL: no batch was read
    twice) and every dedupe rejection in ``rejected_events`` once."""
    stack = own_stack
    ws = stack.workspace()
    accepted: set[str] = set()

    def send(prefix: str, n: int) -> None:
        events = [{"event": "page.viewed", "external_id": f"{prefix}{i}"} for i in range(n)]
        r = ws.post("/api/v2/events/batch", {"events": events})
        assert r.status_code == 202, r.text
        accepted.update(d["uuid"] for d in r.json()["data"])

    def count(sql: str) -> int:
        return int(stack.query(sql)[0]["n"])

    events_sql = f"SELECT count() AS n FROM events WHERE product = '{ws.product}'"
    send("a", 50)
    stack.wait_for(events_sql, lambda rs: rs[0]["n"] == 50)
    before = len(stack.log_path.read_text(errors="replace"))

    DOWN_FILE.touch()
    try:
        send("b", 200)
        send("b", 200)  # the same external ids: 200 dedupe rejections, for rejected_events
        deadline = time.monotonic() + 60
        while "clickhouse insert failed" not in stack.log_path.read_text(errors="replace")[before:]:
            assert time.monotonic() < deadline, "the sink never tried to insert"
            time.sleep(0.2)
        outage_end = time.monotonic() + 2 * MAX_POLL_MS / 1000
        sent_late = False
        while time.monotonic() < outage_end:  # the outage's length, not a wait for a state
            assert stack.proc.poll() is None, stack.log_tail()
            if not sent_late and time.monotonic() > outage_end - MAX_POLL_MS / 1000:
                send("c", 100)  # arrives while the sink is paused
                sent_late = True
            time.sleep(0.2)
    finally:
        DOWN_FILE.unlink(missing_ok=True)

    stack.wait_for(events_sql, lambda rs: rs[0]["n"] >= len(accepted))
    rejected_sql = f"SELECT count() AS n FROM dedupe_notices WHERE product = '{ws.product}'"
    stack.wait_for(rejected_sql, lambda rs: rs[0]["n"] >= 200)
    rows = stack.query(
        f"SELECT event_id, count() AS n FROM events WHERE product = '{ws.product}' GROUP BY 1"
    )
    assert {r["event_id"] for r in rows} == accepted
    assert [r for r in rows if r["n"] != 1] == [], "a batch was inserted twice"
    assert count(rejected_sql) == 200, "a rejection was inserted twice"
    log = stack.log_path.read_text(errors="replace")
    churn = [line for line in log[before:].splitlines() if GROUP_CHURN.search(line)]
    assert churn == [], "the sink left or rejoined its group during the outage"
    assert GROUP_CHURN.search(log[:before]), "the check sees the sink's first assignment"
    assert "partitions paused" in log[before:]

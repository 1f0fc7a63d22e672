"""Rows ClickHouse refuses for their content, with the real client and chDB (sinks.batch_insert).

The refusals are ClickHouse's own: this module's tables get CHECK constraints of their own
(besides migration 005's, which the sink already catches before ClickHouse sees the row), so
a row passes the sink's checks and is refused by ClickHouse only, as an operator's constraint
or a server stricter than the sink would. The Kafka side is the scripted consumer of
``tests/fakes.py``; each test has its own topic prefix, so its rows are its own.

chDB hosts one data directory per process at a time: this module's is closed at its end.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from prometheus_client import CollectorRegistry

from eventpipe.codec import CLEAN_EVENT, REJECTED_EVENT, AvroCodec
from eventpipe.settings import Settings
from eventpipe.topics import TopicNames
from sinks.clickhouse import connect, migrate
from sinks.sink import Sink, SinkMetrics
from tests.fakes import Msg, ScriptedConsumer
from tests.records import clean_record

CODEC = AvroCodec()
NOW = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)
LOST_OFFSET = 666
"""A rejection at this offset is refused even bare (its id ends in /666), see ``client``."""


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    c = connect(f"chdb://{tmp_path_factory.mktemp('chdb') / 'data'}")
    migrate(c)
    c.command("ALTER TABLE events ADD CONSTRAINT refused_ids CHECK event_id NOT LIKE 'refuse%'")
    c.command(
        "ALTER TABLE rejected_events ADD CONSTRAINT poison_payload CHECK "
        "position(payload, 'poison') = 0"
    )
    c.command(
        "ALTER TABLE rejected_events ADD CONSTRAINT lost_offset CHECK "
        f"event_id NOT LIKE '%/{LOST_OFFSET}'"
    )
    yield c
    c.close()


@pytest.fixture
def topics() -> TopicNames:
    return TopicNames.from_settings(settings())


def settings(prefix: str | None = None) -> Settings:
    return Settings(
        kafka_bootstrap="unused:9092",
        topic_prefix=prefix or f"u{uuid.uuid4().hex[:8]}.",
        sink_batch_size=1000,
        sink_flush_interval_s=0,
    )


def clean(event_id: str, product: str) -> bytes:
    return CODEC.encode(
        CLEAN_EVENT, clean_record(event_id, product, occurred_at=NOW, received_at=NOW)
    )


def agents_rejection(event_id: str, payload: bytes) -> bytes:
    rec = {
        "event_id": event_id,
        "product": "p",
        "source": "api",
        "dialect": "v2",
        "stage": "normalize",
        "field": "event",
        "reason": "bad name",
        "received_at": NOW,
        "payload": payload,
    }
    return CODEC.encode(REJECTED_EVENT, rec)


def run(topics: TopicNames, client: Client, script: list[Any]) -> tuple[list[Any], SinkMetrics]:
    log: list[Any] = []
    stop = threading.Event()
    consumer = ScriptedConsumer(log, stop, script)
    metrics = SinkMetrics(CollectorRegistry())
    sink = Sink(
        settings(topics.clean.removesuffix("events.clean")),
        client,
        CODEC,
        metrics=metrics,
        consumer_factory=lambda conf: consumer,  # type: ignore[arg-type,return-value]
    )
    sink.run(stop)
    return log, metrics


def rejected(client: Client, topics: TopicNames) -> list[dict[str, Any]]:
    result = client.query(
        "SELECT event_id, stage, reason, payload FROM rejected_events "
        f"WHERE event_id LIKE '{topics.clean.removesuffix('events.clean')}%' ORDER BY event_id"
    )
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def test_a_row_clickhouse_refuses_is_rejected_the_rest_land_and_the_sink_goes_on(
    client: Client, topics: TopicNames
) -> None:
    product = f"p_{uuid.uuid4().hex[:8]}"
    ids = [f"good{i}" for i in range(64)]
    ids[37] = "refuse-me"
    first = [Msg(topics.clean, 0, i, clean(eid, product)) for i, eid in enumerate(ids)]
    later = [Msg(topics.clean, 0, 64, clean("later", product))]
    log, metrics = run(topics, client, [first, later])

    landed = client.query(f"SELECT event_id FROM events WHERE product = '{product}'")
    assert sorted(r[0] for r in landed.result_rows) == sorted(
        [eid for eid in ids if eid != "refuse-me"] + ["later"]
    )
    [row] = rejected(client, topics)
    assert row["event_id"] == f"{topics.clean}/0/37"
    assert row["stage"] == "sink"
    assert "VIOLATED_CONSTRAINT" in row["reason"] and "refused_ids" in row["reason"]
    assert row["payload"], "the refused message's bytes are kept"
    commits = [e for e in log if e[0] == "commit"]
    assert commits == [("commit", [(topics.clean, 0, 64)]), ("commit", [(topics.clean, 0, 65)])]
    # Bisecting 64 rows around one bad row: one refusal per halving, not one insert per row.
    refused = metrics.refused_inserts.labels(table="events")._value.get()
    assert 1 <= refused <= 7, refused


def test_a_rejection_clickhouse_refuses_is_stored_without_its_payload(
    client: Client, topics: TopicNames
) -> None:
    msg = Msg(topics.rejected, 1, 5, agents_rejection("r-poison", b"poison"))
    fine = Msg(topics.rejected, 1, 6, agents_rejection("r-fine", b"{}"))
    log, metrics = run(topics, client, [[msg, fine]])
    stored = client.query(
        "SELECT event_id, stage, payload FROM rejected_events "
        f"WHERE event_id IN ('r-poison', 'r-fine', '{topics.rejected}/1/5')"
    ).result_rows
    assert sorted(r[0] for r in stored) == sorted(["r-fine", f"{topics.rejected}/1/5"])
    bare = next(r for r in stored if r[0] == f"{topics.rejected}/1/5")
    assert bare[1] == "sink" and bare[2] in ("", b"")
    assert ("commit", [(topics.rejected, 1, 7)]) in log
    assert metrics.rejections_lost._value.get() == 0


def test_a_rejection_refused_even_bare_is_counted_and_the_sink_goes_on(
    client: Client, topics: TopicNames
) -> None:
    product = f"p_{uuid.uuid4().hex[:8]}"
    lost = Msg(topics.rejected, 0, LOST_OFFSET, agents_rejection("r-lost", b"poison"))
    later = [Msg(topics.clean, 2, 0, clean("after-the-lost-one", product))]
    log, metrics = run(topics, client, [[lost], later])
    assert metrics.rejections_lost._value.get() == 1
    assert rejected(client, topics) == []
    assert ("commit", [(topics.rejected, 0, LOST_OFFSET + 1)]) in log
    assert ("commit", [(topics.clean, 2, 1)]) in log
    landed = client.query(f"SELECT event_id FROM events WHERE product = '{product}'").result_rows
    assert landed == [("after-the-lost-one",)]

"""Records no edge wrote, put straight into ``events.raw`` by a stray producer: each becomes a
``rejected_events`` row (stage ``decode``, found again by its partition and offset), and the
worker's commits move past it, so it is neither lost silently nor read again at every restart.

A record without a value (a tombstone) used to crash the agent: Faust's registry gave it as
``None``. The agent was restarted, but the record was never acknowledged, so its partition's
commits stayed at that offset for good (``streams.codec.RecordSchema``)."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import KafkaError, Message, Producer

from eventpipe.kafka import close_producer, producer_config
from eventpipe.topics import TopicNames
from tests.conftest import Stack
from tests.load import assert_worker_commits_reach_ends, dev_settings

COMMIT_TIMEOUT_S = 60.0


def _write_one(stack: Stack, value: bytes | None) -> tuple[str, int, int]:
    """Write one record with a fresh key into ``events.raw``; its (topic, partition, offset)."""
    settings = dev_settings(stack)
    topic = TopicNames.from_settings(settings).raw
    producer = Producer(producer_config(settings))
    delivered: list[Message] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        assert err is None, err
        delivered.append(msg)

    producer.produce(topic, value, uuid.uuid4().bytes, on_delivery=on_delivery)
    assert close_producer(producer, 30) == 0
    (msg,) = delivered
    partition, offset = msg.partition(), msg.offset()
    assert partition is not None and offset is not None
    return topic, partition, offset


@pytest.mark.parametrize(
    ("value", "reason"),
    [(None, "no value (a tombstone)"), (b"not avro at all", "not Avro")],
    ids=["tombstone", "not-avro"],
)
def test_a_stray_record_is_rejected_and_the_commits_pass_it(
    stack: Stack, value: bytes | None, reason: str
) -> None:
    topic, partition, offset = _write_one(stack, value)
    rows = stack.wait_for(
        "SELECT stage, reason, payload FROM rejected_events "
        f"WHERE source_topic = '{topic}' AND source_partition = {partition} "
        f"AND source_offset = {offset}",
        lambda rs: len(rs) >= 1,
    )
    assert {r["stage"] for r in rows} == {"decode"}
    assert reason in rows[0]["reason"]
    assert rows[0]["payload"] == (value or b"").decode()
    # Every raw partition's commit reaches its end, so the one holding this record passed it.
    assert_worker_commits_reach_ends(stack, COMMIT_TIMEOUT_S)

"""Records no edge wrote, put straight into ``events.raw`` by a stray producer: each becomes a
``rejected_events`` row (stage ``decode``, found again by its partition and offset), and the
worker's commits move past it, so it is neither lost silently nor read again at every restart.

A record without a value (a tombstone) used to crash the agent: Faust's registry gave it as
``None``. The agent was restarted, but the record was never acknowledged, so its partition's
commits stayed at that offset for good (``streams.codec.RecordSchema``)."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import KafkaError, Message, Producer

from eventpipe.drain import Offsets
from eventpipe.kafka import close_producer, producer_config
from eventpipe.settings import Settings
from eventpipe.topics import TopicNames
from launch.dev import DevState
from tests.conftest import Stack

COMMIT_TIMEOUT_S = 60.0


def _write_one(stack: Stack, value: bytes | None) -> tuple[DevState, str, int, int]:
    """Write one record with a fresh key; its (dev state, topic, partition, offset)."""
    state = DevState.read(stack.data_dir)
    assert state is not None
    topic = TopicNames.from_settings(Settings(topic_prefix=state.topic_prefix)).raw
    producer = Producer(producer_config(Settings(kafka_bootstrap=state.kafka_bootstrap)))
    delivered: list[Message] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        assert err is None, err
        delivered.append(msg)

    producer.produce(topic, value, uuid.uuid4().bytes, on_delivery=on_delivery)
    assert close_producer(producer, 30) == 0
    (msg,) = delivered
    partition, offset = msg.partition(), msg.offset()
    assert partition is not None and offset is not None
    return state, topic, partition, offset


@pytest.mark.parametrize(
    ("value", "reason"),
    [(None, "no value (a tombstone)"), (b"not avro at all", "not Avro")],
    ids=["tombstone", "not-avro"],
)
def test_a_stray_record_is_rejected_and_the_commits_pass_it(
    stack: Stack, value: bytes | None, reason: str
) -> None:
    state, topic, partition, offset = _write_one(stack, value)
    rows = stack.wait_for(
        "SELECT stage, reason, payload FROM rejected_events "
        f"WHERE source_topic = '{topic}' AND source_partition = {partition} "
        f"AND source_offset = {offset}",
        lambda rs: len(rs) >= 1,
    )
    assert {r["stage"] for r in rows} == {"decode"}
    assert reason in rows[0]["reason"]
    assert rows[0]["payload"] == (value or b"").decode()

    group = f"{state.topic_prefix}{state.worker_id}"
    offsets = Offsets(state.kafka_bootstrap)
    try:
        deadline = time.monotonic() + COMMIT_TIMEOUT_S
        committed = 0
        while time.monotonic() < deadline:
            committed = offsets.committed(group, [(topic, partition)])[(topic, partition)]
            if committed > offset:
                return
            time.sleep(0.2)
    finally:
        offsets.close()
    raise AssertionError(f"{group} committed {committed} on {topic}[{partition}]: not {offset} + 1")

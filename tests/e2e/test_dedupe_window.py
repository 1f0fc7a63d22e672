"""The dedupe window, end to end: a retry within it is dropped, the key is forgotten once the
window has passed (a tombstone on the dedupe changelog), and a retry after that goes through.

Its own stack with a 3 s window, so the test waits seconds, not a day. The changelog is read
with aiokafka, Faust's own client: on Tansu, confluent-kafka's consumer skips records without a
value, tombstones included.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from eventpipe.settings import Settings
from launch.dev import DevState
from streams.app import DEDUPE_TABLE, app_id
from streams.dedupe import table_key
from tests.conftest import Stack, Workspace

WINDOW_S = 3

pytestmark = pytest.mark.stack_env({"EVENTPIPE_DEDUPE_WINDOW_SECONDS": str(WINDOW_S)})


def changelog_values(stack: Stack, key: bytes, want: int, timeout_s: float = 30.0) -> list[Any]:
    """The values written for ``key`` on the dedupe changelog (None: a tombstone), in order,
    once there are at least ``want`` of them."""
    state = DevState.read(stack.data_dir)
    assert state is not None
    topic = f"{app_id(Settings(topic_prefix='', worker_id='eventpipe'))}-{DEDUPE_TABLE}-changelog"

    async def read() -> list[Any]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=state.kafka_bootstrap, enable_auto_commit=False
        )
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(topic) or set()
            assert partitions, f"no changelog topic {topic}"
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            values: list[Any] = []
            deadline = time.monotonic() + timeout_s
            while len(values) < want and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=200)
                values += [m.value for ms in batches.values() for m in ms if m.key == key]
            return values
        finally:
            await consumer.stop()

    return asyncio.run(read())


def dedupe_notices(stack: Stack, ws: Workspace) -> int:
    sql = f"SELECT count() AS n FROM dedupe_notices WHERE product = '{ws.product}'"
    return int(stack.query(sql)[0]["n"])


def test_a_key_is_dropped_within_the_window_and_forgotten_after_it(own_stack: Stack) -> None:
    stack = own_stack
    ws = stack.workspace()
    subject = {"subject_type": "user", "subject_id": "u-window"}  # one identity key: one partition
    keyed = {"event": "order.paid", "external_id": "order-1", **subject}
    first = ws.post("/api/v2/events", keyed)
    retry = ws.post("/api/v2/events", keyed)
    assert first.status_code == retry.status_code == 202
    event_id = first.json()["data"]["uuid"]
    assert retry.json()["data"]["uuid"] == event_id

    # Within the window: the retry is dropped and reported.
    stack.wait_for(
        f"SELECT event_id FROM dedupe_notices WHERE product = '{ws.product}'",
        lambda rs: [r["event_id"] for r in rs] == [event_id],
    )
    row = stack.query(f"SELECT toUnixTimestamp64Milli(received_at) AS ms FROM events "
                      f"WHERE event_id = '{event_id}'")  # fmt: skip
    first_ms = int(row[0]["ms"])

    # Past the window (by the events' own time): another event of the partition moves its
    # horizon, and the worker forgets the key: a tombstone follows its entry on the changelog.
    while time.time() * 1000 < first_ms + WINDOW_S * 1000 + 50:
        time.sleep(0.05)
    later = ws.post("/api/v2/events", {"event": "page.viewed", **subject})
    assert later.status_code == 202
    key = table_key(ws.product, "api", "order-1")
    assert changelog_values(stack, key, want=2) == [b"%d" % first_ms, None]

    # A retry after the window goes through again (same id: still one row), not reported.
    late = ws.post("/api/v2/events", keyed)
    assert late.status_code == 202 and late.json()["data"]["uuid"] == event_id
    marker = ws.post("/api/v2/events", {"event": "marker.sent", **subject})  # after it, in order
    stack.wait_for(
        f"SELECT 1 FROM events WHERE event_id = '{marker.json()['data']['uuid']}'",
        lambda rs: len(rs) == 1,
    )
    assert dedupe_notices(stack, ws) == 1
    values = changelog_values(stack, key, want=3)
    assert values[:2] == [b"%d" % first_ms, None] and len(values) == 3 and values[2] is not None
    rows = stack.query(f"SELECT count() AS n FROM events FINAL WHERE event_id = '{event_id}'")
    assert rows[0]["n"] == 1

"""eventpipe.drain: the end offsets it reads are the real ones on Tansu (whose watermark is not),
when a drain is done, and its lag and at-risk figures. A real embedded broker, started here
(~0.2 s)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from eventpipe.drain import Lag, Offsets, Outcome, drain, lag
from eventpipe.embedded import TansuBroker
from eventpipe.kafka import create_topics, ensure_topics
from eventpipe.settings import Settings
from eventpipe.topics import TopicNames


@pytest.fixture
def broker() -> Iterator[TansuBroker]:
    b = TansuBroker()
    b.start()
    try:
        yield b
    finally:
        b.stop()


def produce_batches(bootstrap: str, topic: str, partition: int, sizes: list[int]) -> int:
    """Each size is one flushed batch; returns the end the delivery reports say."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "acks": "all"})
    offsets: list[int] = []

    def delivered(err: object, msg: Message) -> None:
        assert err is None, err
        offset = msg.offset()
        assert offset is not None
        offsets.append(offset)

    for size in sizes:
        for i in range(size):
            producer.produce(topic, b"v%d" % i, partition=partition, on_delivery=delivered)
        assert producer.flush(10) == 0
    return max(offsets) + 1


def test_ends_are_the_delivered_ends_where_the_watermark_is_short(broker: TansuBroker) -> None:
    settings = Settings(kafka_bootstrap=broker.bootstrap, topic_partitions=3)
    create_topics(settings, ["t"])
    end0 = produce_batches(broker.bootstrap, "t", 0, [10, 7])
    end1 = produce_batches(broker.bootstrap, "t", 1, [1])
    offsets = Offsets(broker.bootstrap)
    try:
        tps = offsets.partitions(["t", "absent"])
        assert tps == [("t", 0), ("t", 1), ("t", 2)]
        _, high = offsets._probe.get_watermark_offsets(TopicPartition("t", 0), timeout=5)
        assert high < end0, "Tansu's watermark is right now: the probe may no longer be needed"
        ends, unknown = offsets.ends(tps)
        assert unknown == set()
        assert ends == {("t", 0): end0, ("t", 1): end1, ("t", 2): 0}
        assert (end0, end1) == (17, 1)
    finally:
        offsets.close()


def test_committed_offsets_count_from_zero_before_any_commit(broker: TansuBroker) -> None:
    settings = Settings(kafka_bootstrap=broker.bootstrap, topic_partitions=2)
    create_topics(settings, ["t"])
    produce_batches(broker.bootstrap, "t", 0, [5])
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g"})
    consumer.commit(offsets=[TopicPartition("t", 0, 3)], asynchronous=False)
    consumer.close()
    offsets = Offsets(broker.bootstrap)
    try:
        tps = [("t", 0), ("t", 1)]
        assert offsets.committed("g", tps) == {("t", 0): 3, ("t", 1): 0}
        assert offsets.committed("never-seen", tps) == {("t", 0): 0, ("t", 1): 0}
    finally:
        offsets.close()


def test_lag_sums_what_is_past_each_commit_and_never_goes_negative() -> None:
    ends = {("t", 0): 10, ("t", 1): 4, ("t", 2): 0}
    assert lag(ends, {("t", 0): 7, ("t", 1): 9}) == 3
    assert lag(ends, {}) == 14


def test_events_at_risk_are_raw_clean_and_rejected_not_links() -> None:
    left = Lag(raw=5, clean=3, rejected=2, identities=4)
    assert left.events == 10
    assert left.sink == 9
    assert left.fields()["events_left"] == 10


def commit(bootstrap: str, group: str, offsets: dict[tuple[str, int], int]) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        consumer.commit(offsets=tps, asynchronous=False)
    finally:
        consumer.close()


@pytest.fixture
def pipeline(broker: TansuBroker) -> tuple[Settings, dict[tuple[str, int], int]]:
    """The pipeline's topics (2 partitions) with records in raw and clean; returns the settings
    and the real ends (from the delivery reports) of the partitions written."""
    settings = Settings(kafka_bootstrap=broker.bootstrap, topic_partitions=2)
    ensure_topics(settings)
    names = TopicNames.from_settings(settings)
    ends = {
        (names.raw, 0): produce_batches(broker.bootstrap, names.raw, 0, [20, 5]),
        (names.raw, 1): produce_batches(broker.bootstrap, names.raw, 1, [3]),
        (names.clean, 0): produce_batches(broker.bootstrap, names.clean, 0, [12, 6]),
    }
    return settings, ends


def test_drain_is_done_once_both_groups_committed_the_real_ends(
    pipeline: tuple[Settings, dict[tuple[str, int], int]],
) -> None:
    settings, ends = pipeline
    raw = {tp: e for tp, e in ends.items() if tp[0] == "events.raw"}
    commit(settings.bootstrap, "worker", raw)
    commit(
        settings.bootstrap, settings.sink_group, {("events.clean", 0): ends[("events.clean", 0)]}
    )
    result = drain(settings, threading.Event(), worker_group="worker", timeout_s=30)
    assert result.outcome is Outcome.DRAINED
    assert result.lag == Lag(raw=0, clean=0, rejected=0, identities=0)


def test_drain_is_not_fooled_by_tansus_short_watermark(
    pipeline: tuple[Settings, dict[tuple[str, int], int]],
) -> None:
    settings, ends = pipeline
    consumer = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": "x"})
    watermarks = {
        tp: consumer.get_watermark_offsets(TopicPartition(*tp), timeout=5)[1] for tp in ends
    }
    consumer.close()
    assert all(watermarks[tp] < ends[tp] for tp in ends if ends[tp] > 1), watermarks
    # Both groups at the watermark: a drain that trusted it would be done.
    raw = {tp: w for tp, w in watermarks.items() if tp[0] == "events.raw"}
    commit(settings.bootstrap, "worker", raw)
    clean = {tp: w for tp, w in watermarks.items() if tp[0] == "events.clean"}
    commit(settings.bootstrap, settings.sink_group, clean)
    result = drain(settings, threading.Event(), worker_group="worker", timeout_s=1)
    assert result.outcome is Outcome.TIMED_OUT
    raw_short = sum(ends[tp] - w for tp, w in raw.items())
    clean_short = sum(ends[tp] - w for tp, w in clean.items())
    assert result.lag == Lag(raw=raw_short, clean=clean_short, rejected=0, identities=0)
    assert (raw_short, clean_short) == (4 + 2, 6 - 1)


def test_a_forced_drain_stops_at_once_with_what_is_left(
    pipeline: tuple[Settings, dict[tuple[str, int], int]],
) -> None:
    settings, ends = pipeline
    forced = threading.Event()
    forced.set()
    result = drain(settings, forced, worker_group="worker", timeout_s=60)
    assert result.outcome is Outcome.FORCED
    assert result.lag is not None
    assert result.lag.events == sum(ends.values())

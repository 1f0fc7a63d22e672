"""eventpipe.publisher: every item gets its own outcome, with one delivery callback per call."""

from __future__ import annotations

import asyncio

from eventpipe.kafka import producer_config
from eventpipe.publisher import KafkaPublisher, _match_failures
from eventpipe.settings import Settings


def test_failed_reports_are_matched_to_their_items() -> None:
    items = [(b"k1", b"a"), (b"k2", b"b"), (b"k1", b"a"), (b"k3", b"c"), (b"k3", b"c")]
    results: list[str | None] = [None, None, None, None, "not enqueued: queue full"]
    failed = [(b"k2", b"b", "timed out"), (b"k1", b"a", "timed out"), (b"k3", b"c", "fenced")]
    _match_failures(items, results, failed)
    assert results[1] == "timed out"
    assert sorted(map(str, results[0:3:2])) == ["None", "timed out"], "one of the two equal items"
    # the copy that was never enqueued keeps its outcome; the report is the other copy's
    assert results[3:] == ["fenced", "not enqueued: queue full"]


def test_every_item_sent_to_an_unreachable_broker_fails_with_its_reason() -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:1")  # nothing listens there
    publisher = KafkaPublisher(
        producer_config(settings, **{"message.timeout.ms": 300, "log_level": 0})
    )
    try:
        results = asyncio.run(publisher.publish("t", [(b"k", b"v1"), (b"k", b"v2")]))
        assert len(results) == 2 and all(r and "timed out" in r.lower() for r in results), results
        again = asyncio.run(publisher.publish("t", [(b"k", b"v3")], partitions=[0]))
        assert again[0] is not None, "a second loop gets its reports too (a new poll task)"
    finally:
        publisher.close(timeout_s=1)

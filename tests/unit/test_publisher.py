"""eventpipe.publisher: every item gets its own outcome, with one delivery callback per call."""

from __future__ import annotations

import asyncio

from confluent_kafka import KafkaError, Producer

from eventpipe.embedded import TansuBroker
from eventpipe.kafka import MESSAGE_MAX_BYTES, close_producer, producer_config
from eventpipe.publisher import Failure, KafkaPublisher, _match_failures
from eventpipe.settings import Settings

TIMED_OUT = KafkaError(KafkaError._MSG_TIMED_OUT)
FENCED = KafkaError(KafkaError.PRODUCER_FENCED)


def test_failed_reports_are_matched_to_their_items() -> None:
    items = [(b"k1", b"a"), (b"k2", b"b"), (b"k1", b"a"), (b"k3", b"c"), (b"k3", b"c")]
    queue_full = Failure.not_enqueued(BufferError("Local: Queue full"))
    results: list[Failure | None] = [None, None, None, None, queue_full]
    failed = [(b"k2", b"b", TIMED_OUT), (b"k1", b"a", TIMED_OUT), (b"k3", b"c", FENCED)]
    _match_failures(items, results, failed)
    timed_out = Failure.of(TIMED_OUT)
    assert results[1] == timed_out
    assert sorted(map(str, results[0:3:2])) == sorted(["None", str(timed_out)]), "one of two"
    # the copy that was never enqueued keeps its outcome; the report is the other copy's
    assert results[3:] == [Failure.of(FENCED), queue_full]


def test_a_failure_says_whether_a_retry_may_store_the_record() -> None:
    assert Failure.of(TIMED_OUT).retryable and not Failure.of(TIMED_OUT).too_large
    assert Failure.of(FENCED).retryable, "a new producer replaces the fenced one"
    assert Failure.not_enqueued(BufferError("Local: Queue full")).retryable
    too_large = Failure.of(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    assert not too_large.retryable and too_large.too_large
    assert too_large.reason.startswith("MSG_SIZE_TOO_LARGE: ")
    invalid = Failure.of(KafkaError(KafkaError.INVALID_RECORD))
    assert not invalid.retryable and not invalid.too_large


def test_a_record_over_message_max_bytes_fails_for_good_and_the_others_are_unharmed() -> None:
    """librdkafka refuses it in ``produce`` itself: no delivery report, no broker needed."""
    settings = Settings(kafka_bootstrap="127.0.0.1:1")  # nothing listens there
    publisher = KafkaPublisher(
        producer_config(settings, **{"message.timeout.ms": 300, "log_level": 0})
    )
    big = b"x" * (MESSAGE_MAX_BYTES + 1)
    try:
        results = asyncio.run(publisher.publish("t", [(b"k", big), (b"k", b"small")]))
    finally:
        publisher.close(timeout_s=1)
    refused, other = results
    assert refused is not None and not refused.retryable and refused.too_large, refused
    assert "not enqueued: MSG_SIZE_TOO_LARGE" in refused.reason
    assert other is not None and other.retryable, "the small one only timed out"


def test_every_item_sent_to_an_unreachable_broker_fails_with_its_reason() -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:1")  # nothing listens there
    publisher = KafkaPublisher(
        producer_config(settings, **{"message.timeout.ms": 300, "log_level": 0})
    )
    try:
        results = asyncio.run(publisher.publish("t", [(b"k", b"v1"), (b"k", b"v2")]))
        assert len(results) == 2, results
        assert all(r and r.retryable and "timed out" in r.reason.lower() for r in results), results
        again = asyncio.run(publisher.publish("t", [(b"k", b"v3")], partitions=[0]))
        assert again[0] is not None, "a second loop gets its reports too (a new poll task)"
    finally:
        publisher.close(timeout_s=1)


def test_a_closed_publisher_lets_the_embedded_broker_exit_on_sigterm() -> None:
    """Tansu does not exit on SIGTERM while a client is connected (it is killed after the grace),
    so ``close`` must close the producer's connections, not only flush it; twice is harmless."""
    broker = TansuBroker()
    broker.start()
    try:
        publisher = KafkaPublisher(producer_config(Settings(kafka_bootstrap=broker.bootstrap)))
        results = asyncio.run(publisher.publish("closing", [(b"k", b"v")]))
        assert results == [None]
        publisher.close(timeout_s=10)
        publisher.close(timeout_s=10)
        assert publisher.in_flight() == 0
        broker.stop(timeout_s=5)
    finally:
        broker.stop(timeout_s=0)
    assert broker.proc is not None and broker.proc.returncode == 0, "killed: a client stayed"


def test_a_producer_with_records_left_is_not_closed() -> None:
    """Closing would wait for them up to their delivery timeout: it stays open, says how many."""
    producer = Producer(
        producer_config(
            Settings(kafka_bootstrap="127.0.0.1:1"), **{"message.timeout.ms": 300, "log_level": 0}
        )
    )
    producer.produce("t", b"v", b"k")
    assert close_producer(producer, timeout_s=0) == 1
    assert producer.flush(5) == 0, "still open: its report came (the record timed out)"
    assert close_producer(producer, timeout_s=0) == 0
    assert close_producer(producer, timeout_s=0) == 0, "closing twice is harmless"

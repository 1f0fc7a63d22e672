"""The one retry policy: the retryable/permanent split and the backoff every stage waits by."""

from __future__ import annotations

import itertools

import pytest
from confluent_kafka import KafkaError

from eventpipe import retry


@pytest.mark.parametrize(
    "code", [KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD, KafkaError._INVALID_ARG]
)
def test_a_record_kafka_refuses_for_its_content_is_not_retried(code: int) -> None:
    assert not retry.kafka_retryable(KafkaError(code))


@pytest.mark.parametrize(
    "code", [KafkaError._MSG_TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN]
)
def test_an_unreachable_broker_is_retried(code: int) -> None:
    assert retry.kafka_retryable(KafkaError(code))


def test_delays_grow_with_jitter_up_to_the_cap() -> None:
    waits = list(itertools.islice(retry.delays(first_s=1.0, max_s=30.0), 10))
    assert 1.0 <= waits[0] <= 2.0, "the first wait: the first delay plus at most its jitter"
    assert all(later >= earlier for earlier, later in itertools.pairwise(waits[:5]))
    assert max(waits) == 30.0 and waits[-1] == 30.0

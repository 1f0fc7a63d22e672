"""sinks.commits: every partition's commit outcome is checked, none is ignored.

librdkafka's errors are built here (``KafkaError`` with its retriable flag, as the client sets
it); the consumer is a recording fake: what matters is which partitions get committed again.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry

from sinks.commits import commit_checked
from sinks.metrics import SinkMetrics

TIMED_OUT = KafkaError(KafkaError.REQUEST_TIMED_OUT, "timed out", retriable=True)
FENCED = KafkaError(KafkaError.ILLEGAL_GENERATION, "illegal generation")


class Committing:
    """Answers each commit with the next of ``answers``: an exception to raise, or a dict of
    (topic, partition) -> the error of that partition's result."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[list[tuple[str, int, int]]] = []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> list[Any]:
        assert asynchronous is False
        self.calls.append(sorted((o.topic, o.partition, o.offset) for o in offsets))
        answer = self.answers.pop(0) if self.answers else {}
        if isinstance(answer, BaseException):
            raise answer
        return [
            SimpleNamespace(
                topic=o.topic,
                partition=o.partition,
                offset=o.offset,
                error=answer.get((o.topic, o.partition)),
            )
            for o in offsets
        ]


def check(consumer: Committing, offsets: dict[tuple[str, int], int]) -> Any:
    metrics = SinkMetrics(CollectorRegistry())
    out = commit_checked(consumer, offsets, metrics)  # type: ignore[arg-type]
    return out, metrics


def test_each_partitions_error_is_sorted_retry_or_failed() -> None:
    consumer = Committing({("t", 1): TIMED_OUT, ("t", 2): FENCED})
    out, metrics = check(consumer, {("t", 0): 5, ("t", 1): 6, ("t", 2): 7})
    assert out.retry == {("t", 1): 6}
    assert out.failed == {("t", 2): 7}
    assert metrics.commit_failures.labels(retryable="true")._value.get() == 1
    assert metrics.commit_failures.labels(retryable="false")._value.get() == 1


def test_a_commit_failed_as_a_whole_but_retriable_is_retried_whole() -> None:
    consumer = Committing(KafkaException(TIMED_OUT))
    out, _ = check(consumer, {("t", 0): 5, ("t", 1): 6})
    assert out.retry == {("t", 0): 5, ("t", 1): 6} and out.failed == {}
    assert len(consumer.calls) == 1


def test_a_partitions_permanent_error_raised_for_the_whole_commit_drops_only_it() -> None:
    """librdkafka raises one partition's error for the whole commit: committing each alone
    finds which one, so the others' offsets still move."""
    consumer = Committing(KafkaException(FENCED), {}, KafkaException(FENCED))
    out, _ = check(consumer, {("t", 0): 5, ("t", 1): 6})
    assert consumer.calls == [[("t", 0, 5), ("t", 1, 6)], [("t", 0, 5)], [("t", 1, 6)]]
    assert out.retry == {} and out.failed == {("t", 1): 6}


def test_nothing_to_commit_commits_nothing() -> None:
    consumer = Committing()
    out, _ = check(consumer, {})
    assert consumer.calls == [] and out.retry == {} and out.failed == {}

"""Offset commits checked partition by partition.

A synchronous commit can fail as a whole (``KafkaException``: the coordinator moved, a
timeout) or for some partitions only (each returned ``TopicPartition`` has its ``.error``).
Either way every partition's outcome is one of:

- committed;
- *retry*: a retriable error (``KafkaError.retriable()``: coordinator loading or moved, a
  timeout, the broker unreachable): the same offset is committed again after a backoff;
- *failed*: any other error (the member is no longer in the group, the partition is unknown,
  authorization). Retrying cannot pass, so the partition's commit is dropped, logged with
  topic, partition and offset: whoever owns the partition next reads again from its last
  commit, and the re-inserted rows collapse in ``events`` (a ReplacingMergeTree).

librdkafka reports a commit that failed for one partition of several as a failure of the whole
commit, with that partition's error. When that error is not retriable, each partition is
committed alone once more to find out which one it was, so one bad partition does not drop
the others' commits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from sinks.metrics import SinkMetrics

log = structlog.get_logger(__name__)

Offsets = dict[tuple[str, int], int]
"""Next offset to commit for each (topic, partition)."""


@dataclass
class CommitOutcome:
    retry: Offsets = field(default_factory=dict)
    failed: Offsets = field(default_factory=dict)


def commit_checked(
    consumer: Consumer, offsets: Mapping[tuple[str, int], int], metrics: SinkMetrics
) -> CommitOutcome:
    """Commit ``offsets`` synchronously; sort each partition's outcome (module docstring)."""
    out = CommitOutcome()
    if not offsets:
        return out
    try:
        result = consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
            asynchronous=False,
        )
    except KafkaException as exc:
        err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        retriable = err is not None and err.retriable()
        if not retriable and len(offsets) > 1:
            for tp, offset in offsets.items():
                alone = commit_checked(consumer, {tp: offset}, metrics)
                out.retry.update(alone.retry)
                out.failed.update(alone.failed)
            return out
        for tp, offset in offsets.items():
            _failed(out, metrics, tp, offset, str(exc), retriable)
        return out
    for part in result or []:
        if part.error is not None:
            tp = (part.topic, part.partition)
            _failed(out, metrics, tp, offsets[tp], str(part.error), part.error.retriable())
    return out


def _failed(
    out: CommitOutcome,
    metrics: SinkMetrics,
    tp: tuple[str, int],
    offset: int,
    error: str,
    retriable: bool,
) -> None:
    (out.retry if retriable else out.failed)[tp] = offset
    metrics.commit_failures.labels(retryable=str(retriable).lower()).inc()
    log.error(
        "offset commit failed" + (", retrying" if retriable else ", dropped"),
        topic=tp[0],
        partition=tp[1],
        offset=offset,
        error=error,
    )

"""Which records of ``events.raw`` a replay reads: a time range or an offset range, per partition.

Time: ``--from``/``--to`` take ISO 8601 (no zone: UTC) or a time relative to now (``-2h``,
``-30m``, ``-7d``, ``now``); the range is [from, to). A record is in it by its Kafka timestamp
(the edge's clock when it produced the record, next to its ``received_at``).

Why the timestamp is checked on every record, and the end found by reading:

* a partition's timestamps are not ordered (edge replicas' clocks differ), so the start that
  offsets-for-times gives (the first offset stamped at or after ``from``) is a lower bound, and
  stopping at the first record past ``to`` would miss later records stamped before it;
* the embedded broker (Tansu) answers offsets-for-times with the earliest offset, whatever the
  time: there the start is the beginning of the partition, and the filter does the selecting;
* Tansu also reports a partition's end as the first offset of its last batch + 1, so the end is
  read, as the drain reads it (``eventpipe.drain.Offsets.ends``), never taken from the watermark.

The end of each partition is fixed when the replay starts: what the edge appends later is live
traffic, which the worker processes anyway.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from confluent_kafka import Consumer, TopicPartition

from eventpipe.drain import Offsets
from eventpipe.event import to_ms

_RELATIVE = re.compile(r"^-(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
END_TRIES = 3
REQUEST_TIMEOUT_S = 10.0


class SelectionError(ValueError):
    """A selection that cannot be read (names the option)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option


def parse_time(text: str, now: datetime, option: str = "--from") -> int:
    """Epoch milliseconds of an ISO 8601 time or a relative one (``-2h``)."""
    value = text.strip()
    if value == "now":
        return to_ms(now)
    m = _RELATIVE.match(value)
    if m:
        return to_ms(now - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))}))
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise SelectionError(
            option, f"{text!r} is neither ISO 8601 nor relative (-30m, -2h, -7d, now)"
        ) from None
    return to_ms(at if at.tzinfo else at.replace(tzinfo=UTC))


@dataclass(frozen=True)
class Selection:
    from_ms: int | None = None
    to_ms: int | None = None
    partition: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None
    """The last offset read (inclusive)."""
    product: str | None = None
    resume: dict[int, int] | None = None
    """Partition -> offset to resume at; partitions not in it are done (``--resume``)."""

    def __post_init__(self) -> None:
        offsets = self.from_offset is not None or self.to_offset is not None
        if offsets and self.partition is None:
            raise SelectionError("--partition", "an offset range needs its partition")
        if self.from_ms is not None and self.to_ms is not None and self.from_ms >= self.to_ms:
            raise SelectionError("--to", "must be later than --from")
        both = self.from_offset is not None and self.to_offset is not None
        if both and self.to_offset < self.from_offset:  # type: ignore[operator]
            raise SelectionError("--to-offset", "must not be below --from-offset")

    def wants(self, timestamp_ms: int, product: str) -> bool:
        """Whether a record read from a range is in the selection."""
        if self.from_ms is not None and timestamp_ms < self.from_ms:
            return False
        if self.to_ms is not None and timestamp_ms >= self.to_ms:
            return False
        return self.product is None or product == self.product


def parse_resume(text: str) -> dict[int, int]:
    """``0:120,3:98`` -> {0: 120, 3: 98}."""
    out: dict[int, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        p, sep, o = part.partition(":")
        if not sep or not p.isdigit() or not o.isdigit():
            raise SelectionError("--resume", f"{part!r} is not PARTITION:OFFSET")
        out[int(p)] = int(o)
    return out


@dataclass
class Range:
    """Offsets [start, end) of one partition; ``next`` is where reading resumes."""

    partition: int
    start: int
    end: int
    next: int = -1

    def __post_init__(self) -> None:
        if self.next < 0:
            self.next = self.start

    @property
    def done(self) -> bool:
        return self.next >= self.end

    @property
    def total(self) -> int:
        return max(0, self.end - self.start)


def ranges(consumer: Consumer, offsets: Offsets, topic: str, sel: Selection) -> list[Range]:
    """Each selected partition's offset range, its end read (module docstring)."""
    parts = [p for _, p in offsets.partitions([topic])]
    if not parts:
        raise SelectionError("topic", f"{topic} does not exist (is the pipeline running?)")
    if sel.partition is not None:
        if sel.partition not in parts:
            raise SelectionError("--partition", f"{topic} has partitions {parts}")
        parts = [sel.partition]
    if sel.resume is not None:
        parts = [p for p in parts if p in sel.resume]
    ends = _real_ends(offsets, topic, parts)
    starts = {p: 0 for p in parts}
    for p in parts:
        low, _ = consumer.get_watermark_offsets(
            TopicPartition(topic, p), timeout=REQUEST_TIMEOUT_S, cached=False
        )
        starts[p] = max(low, 0)
    if sel.from_ms is not None:
        asked = [TopicPartition(topic, p, sel.from_ms) for p in parts]
        for tp in consumer.offsets_for_times(asked, timeout=REQUEST_TIMEOUT_S):
            # -1: no record stamped at or after the time; on Tansu: the earliest (filtered).
            starts[tp.partition] = ends[tp.partition] if tp.offset < 0 else tp.offset
    out = []
    for p in parts:
        start, end = starts[p], ends[p]
        if sel.from_offset is not None:
            start = max(start, sel.from_offset)
        if sel.to_offset is not None:
            end = min(end, sel.to_offset + 1)
        if sel.resume is not None:
            start = max(start, sel.resume[p])
        out.append(Range(p, start, max(start, end)))
    return out


def _real_ends(offsets: Offsets, topic: str, parts: list[int]) -> dict[int, int]:
    pending = {(topic, p) for p in parts}
    ends: dict[int, int] = {}
    for _ in range(END_TRIES):
        found, unknown = offsets.ends(sorted(pending))
        for (_, p), end in found.items():
            if (topic, p) not in unknown:
                ends[p] = end
        pending = unknown
        if not pending:
            return ends
    raise SelectionError(
        "topic", f"could not read the end of {sorted(p for _, p in pending)} of {topic}"
    )

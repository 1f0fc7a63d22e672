"""``eventpipe tail TOPIC``: a topic's records as JSON lines, for people who do not read Avro.

One line per record: ``{"topic", "partition", "offset", "timestamp", "key", "record", "value"}``,
the value decoded by the pipeline's own codec (``eventpipe.codec``: either framing), timestamps as
ISO 8601, ``bytes`` fields as text when they are UTF-8 (a raw event's ``payload`` is the JSON the
client sent) and ``{"base64": ...}`` otherwise. A record that does not decode is a line with
``"error"`` instead of ``record`` and ``value``, whatever ``--product`` says: it belongs to no
product, and it is what one is usually looking for.

It reads with a consumer of its own: partitions assigned (never a group join), nothing committed,
so it disturbs no consumer of the topic. Where each partition starts:

* by default, at its last ``n`` records (10): the newest ``n`` of those, by record time, are
  printed. The end is the partition's real end (``eventpipe.drain.Offsets.ends``): the high
  watermark the embedded broker reports leaves out all but the first record of its last batch;
* ``--from`` an offset: there, on every partition;
* ``--from`` a time (ISO 8601, UTC unless it says otherwise) or a duration ago (``15m``): at the
  offset Kafka's offsets-for-times gives, and records older than the time are skipped. The
  embedded broker answers offsets-for-times with the earliest offset, so there that filter is
  what does the work; on Kafka it only catches records written out of time order.

With ``--product`` and no ``--from``, every partition is read from its earliest offset (the
last ``n`` of one product can be anywhere). Without ``--follow`` it stops at the end it measured
when it started; with it, it goes on printing what arrives until Ctrl-C.
"""

from __future__ import annotations

import base64
import heapq
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message
from confluent_kafka import TopicPartition as KafkaTP

from eventpipe.codec import AvroCodec, CodecError
from eventpipe.drain import TP, Offsets
from eventpipe.kafka import consumer_config
from eventpipe.settings import Settings

DEFAULT_LAST = 10
POLL_S = 0.2
_DURATION = re.compile(r"^(\d+)(s|m|h|d)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class TailError(ValueError):
    """Bad arguments or a topic that is not there: a message for the command line."""


@dataclass(frozen=True)
class Start:
    """Where reading starts: an offset on every partition, or the first record at or after a
    time (epoch ms). Neither: the last ``n`` records."""

    offset: int | None = None
    time_ms: int | None = None


def parse_from(text: str, now: datetime) -> Start:
    """``--from``: an offset (``0``: the beginning), a duration ago (``90s``, ``15m``, ``2h``,
    ``7d``) or an ISO 8601 time (without a zone: UTC)."""
    text = text.strip()
    if text.isdigit():
        return Start(offset=int(text))
    if text == "beginning":
        return Start(offset=0)
    match = _DURATION.match(text)
    if match:
        ago = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        return Start(time_ms=int((now - ago).timestamp() * 1000))
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise TailError(
            f"--from {text!r} is neither an offset, a duration (15m) nor an ISO 8601 time"
        ) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return Start(time_ms=int(at.timestamp() * 1000))


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode()}
    raise TypeError(f"{type(value).__name__} is not JSON")


def render(codec: AvroCodec, msg: Message) -> tuple[dict[str, Any], str | None]:
    """The JSON object of one record, and its product (None when it does not decode)."""
    _, ts_ms = msg.timestamp()
    key = msg.key()
    line: dict[str, Any] = {
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "timestamp": datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="milliseconds"),
        "key": key.decode("utf-8", "backslashreplace") if key is not None else None,
    }
    try:
        value = msg.value()
        if value is None:
            raise CodecError("no value (a tombstone)")
        record, decoded = codec.decode(value)
    except CodecError as exc:
        line["error"] = str(exc)
        return line, None
    line["record"] = record
    line["value"] = decoded
    return line, decoded.get("product")


def dumps(line: dict[str, Any]) -> str:
    return orjson.dumps(line, default=_json_default).decode()


class Tail:
    """One ``eventpipe tail``: :meth:`run` prints through ``emit`` until the end or ``stop``."""

    def __init__(
        self,
        settings: Settings,
        codec: AvroCodec,
        topic: str,
        *,
        start: Start | None = None,
        last: int | None = None,
        product: str | None = None,
        follow: bool = False,
    ) -> None:
        if last is not None and last < 0:
            raise TailError("-n must be 0 or more")
        self.settings = settings
        self.codec = codec
        self.topic = topic
        self.start = start or Start()
        self.last = last if last is not None or start is not None else DEFAULT_LAST
        self.product = product
        self.follow = follow

    def run(self, emit: Callable[[str], None], stop: threading.Event) -> int:
        """Print the records; returns how many were printed."""
        offsets = Offsets(self.settings.bootstrap)
        try:
            tps = offsets.partitions([self.topic])
            if not tps:
                raise TailError(f"topic {self.topic!r} does not exist")
            ends, _ = offsets.ends(tps)  # a partition not known yet: its watermark, then EOF
        finally:
            offsets.close()
        conf = consumer_config(
            self.settings, f"eventpipe-tail-{uuid.uuid4().hex}", **{"enable.partition.eof": True}
        )
        consumer = Consumer(conf)
        try:
            starts = self._starts(consumer, ends)
            consumer.assign([KafkaTP(t, p, offset) for (t, p), offset in starts.items()])
            return self._read(consumer, starts, ends, emit, stop)
        finally:
            consumer.close()

    def _starts(self, consumer: Consumer, ends: dict[TP, int]) -> dict[TP, int]:
        s = self.start
        if s.offset is not None:
            return dict.fromkeys(ends, s.offset)
        if s.time_ms is not None:
            wanted = [KafkaTP(t, p, s.time_ms) for t, p in ends]
            found = consumer.offsets_for_times(wanted, timeout=10)
            # -1: no record at or after that time, so nothing before the end to print
            out = {(tp.topic, tp.partition): tp.offset for tp in found}
            return {tp: offset if offset >= 0 else ends[tp] for tp, offset in out.items()}
        if self.product is not None or self.last is None:
            return dict.fromkeys(ends, OFFSET_BEGINNING)
        # an offset below the earliest one resets to it (auto.offset.reset: earliest)
        return {tp: max(0, end - self.last) for tp, end in ends.items()}

    def _read(
        self,
        consumer: Consumer,
        starts: dict[TP, int],
        ends: dict[TP, int],
        emit: Callable[[str], None],
        stop: threading.Event,
    ) -> int:
        """Every partition up to the end measured at the start (with ``-n``: the newest ``n`` of
        those records kept, then printed in time order); then, following, what arrives."""
        pending = {tp for tp, end in ends.items() if starts[tp] < end}
        newest: list[tuple[int, int, int, str]] = []  # a heap of (timestamp, partition, offset)
        later: list[str] = []  # arrived past the end while other partitions were still read
        printed = 0
        while not stop.is_set() and (pending or self.follow):
            for msg in consumer.consume(10_000, POLL_S):
                tp = (msg.topic() or "", msg.partition() or 0)
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(tp)  # the real end: see eventpipe.drain
                    elif err.fatal():
                        raise KafkaException(err)
                    continue
                offset = msg.offset() or 0
                before_end = tp in pending
                if before_end and offset + 1 >= ends[tp]:
                    pending.discard(tp)
                if not (before_end or self.follow):
                    continue
                line = self._line(msg)
                if line is None:
                    continue
                if before_end and self.last is not None:
                    entry = (msg.timestamp()[1], tp[1], offset, line)
                    if len(newest) < self.last:
                        heapq.heappush(newest, entry)
                    elif self.last:
                        heapq.heappushpop(newest, entry)
                elif pending and not before_end and self.last is not None:
                    later.append(line)  # printed after the newest n, not before them
                else:
                    emit(line)
                    printed += 1
            if not pending and (newest or later):
                for *_, line in sorted(newest):
                    emit(line)
                for line in later:
                    emit(line)
                printed += len(newest) + len(later)
                newest, later = [], []
        return printed

    def _line(self, msg: Message) -> str | None:
        line, product = render(self.codec, msg)
        if self.start.time_ms is not None and msg.timestamp()[1] < self.start.time_ms:
            return None
        if self.product is not None and product is not None and product != self.product:
            return None
        return dumps(line)


def topic_name(settings: Settings, name: str, known: Iterable[str]) -> str:
    """A pipeline topic by its name (``events.clean``: the configured prefix applied), or any
    topic by its full name."""
    prefixed = settings.topic(name)
    return prefixed if prefixed in set(known) else name

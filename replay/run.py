"""``eventpipe replay``: read a range of ``events.raw`` with a consumer of its own, run it through
today's rules (``replay.rules``), and write what changed through the topics the sink reads.

Why through the topics, not into ClickHouse: the sink is the one ClickHouse writer (one process
owns a chDB directory, and the sink's insert-then-commit order is the pipeline's promise), so a
replay is just one more producer of ``events.clean``, ``identities`` and ``events.rejected``. The
same command works against ``eventpipe dev`` and against a cluster; it needs a sink running.
Its outputs go through the worker's own outbox (``streams.outbox``): the same retry policy, and a
record Kafka refuses for good becomes a rejection of its raw event, as in the worker.

The consumer is assigned its partitions (never subscribed: it joins no group, the live worker's
least of all) and commits nothing. Order, per batch: read, plan (``Rules.plan``), publish and
wait for Kafka's acknowledgements, and only then move the partitions' resume positions, so
Ctrl-C (which stops after the batch in hand) reports a position whose records are all written.

After the last batch (not in a dry run): wait until the sink has committed past everything
written (the real end of each output partition, read as the drain reads it), then delete the
copies of changed events that the new rows superseded (``EventStore.delete_superseded``).

Idempotent: a record keeps its event id; what is identical to the stored row is not written;
written rows replace their copies (ReplacingMergeTree on the id, and the delete above for a moved
sorting key), so a replay twice, or beside the live worker, leaves one row per event id.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from rich.console import Console

from eventpipe.codec import CLEAN_EVENT, IDENTITY_LINK, RAW_EVENT, AvroCodec, CodecError
from eventpipe.drain import Offsets
from eventpipe.kafka import consumer_config
from eventpipe.publisher import publisher_for
from eventpipe.registry import codec_for
from eventpipe.settings import Settings
from eventpipe.topics import TopicNames
from replay.report import Display, resume_hint, summary_table
from replay.rules import Plan, Rules, Summary
from replay.select import Range, Selection, ranges
from sinks.store import Store
from streams.codec import Undecodable, mark_source, rejected, rejected_undecodable
from streams.outbox import Outbox

log = structlog.get_logger(__name__)

BATCH = 2000
IDLE_S = 30.0
"""A partition that yields nothing for this long before its end is reported, not waited on."""
SUPERSEDED_CHUNK = 1000


@dataclass(frozen=True)
class Options:
    selection: Selection
    dry_run: bool | None = None
    """True/False: as asked (``--dry-run``/``--execute``); None: a dry run above the limit."""
    wait_s: float = 120.0
    """How long to wait for the sink to store what was written."""
    batch: int = BATCH


@dataclass
class Result:
    summary: Summary
    dry_run: bool
    ranges: list[Range]
    stopped: str | None = None
    """Why it stopped before the end (Ctrl-C, a stalled partition), else None."""
    stored: bool | None = None
    """Whether the sink stored everything written (None: nothing was written)."""
    notes: list[str] = field(default_factory=list)


@contextmanager
def _interruptible(stop: threading.Event) -> Iterator[None]:
    """The first Ctrl-C asks for a clean stop after the batch in hand; a second one stops now."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def first(signum: int, frame: Any) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _decode(codec: AvroCodec, msg: Message) -> dict[str, Any] | Undecodable:
    value = msg.value() or b""
    try:
        name, record = codec.decode(value, millis=True)
    except CodecError as exc:
        return Undecodable(bytes(value), str(exc))
    if name != RAW_EVENT:
        return Undecodable(bytes(value), f"expected a {RAW_EVENT} record, got {name}")
    return record


class Writer:
    """The outbox, fed from a plan the way the worker's agent feeds it."""

    def __init__(self, settings: Settings, codec: AvroCodec) -> None:
        self.topics = TopicNames.from_settings(settings)
        self.publisher = publisher_for(settings)
        self.outbox = Outbox(self.publisher, codec, self.topics.rejected)
        self.loop = asyncio.new_event_loop()

    def write(self, plan: Plan, notices: Sequence[tuple[str, dict[str, Any]]] = ()) -> int:
        """Publish the plan (and ``notices``: (record name, record) for the rejected topic);
        return, once Kafka acknowledged it all (or refused it for good), the rows written."""
        box, t = self.outbox, self.topics
        for key, link, raw in plan.links:
            err = box.add(t.identities, IDENTITY_LINK, key, link, raw)
            if err is not None:
                box.reject(rejected(raw, "identity", err))
        written = 0
        for record, raw in plan.clean:
            err = box.add(t.clean, CLEAN_EVENT, record["event_id"].encode(), record, raw)
            if err is not None:
                box.reject(rejected(raw, "identity", err))
            else:
                written += 1
        for rejection in plan.rejections:
            box.reject(rejection)
        for name, notice in notices:
            box.notice(name, notice)
        self.loop.run_until_complete(box.flush())
        return written

    def close(self) -> None:
        self.publisher.close()
        self.loop.close()


def replay(
    settings: Settings,
    store: Store,
    options: Options,
    *,
    console: Console | None = None,
    stop: threading.Event | None = None,
) -> Result:
    """Run one replay to its end, to Ctrl-C or to ``stop``; print progress and the summary."""
    console = console or Console(stderr=True)
    run = _Replay(settings, store, options, console, stop or threading.Event())
    try:
        result = run.run()
    finally:
        run.close()
    _print(console, result, options)
    return result


class _Replay:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        options: Options,
        console: Console,
        stop: threading.Event,
    ) -> None:
        self.settings, self.store, self.options = settings, store, options
        self.console, self.stop = console, stop
        self.topics = TopicNames.from_settings(settings)
        self.codec = codec_for(settings)
        group = f"eventpipe-replay-{uuid.uuid4().hex[:12]}"  # librdkafka wants one; never joined
        self.consumer = Consumer(consumer_config(settings, group, **{"enable.partition.eof": True}))
        self.offsets = Offsets(settings.bootstrap)
        self.writer: Writer | None = None
        self.superseded: dict[str, list[str]] = {}

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.consumer.close()
        self.offsets.close()

    def run(self) -> Result:
        sel, limit = self.options.selection, self.settings.replay_confirm_above
        todo = ranges(self.consumer, self.offsets, self.topics.raw, sel)
        total = sum(r.total for r in todo)
        dry_run = self.options.dry_run
        if dry_run is None:
            dry_run = total > limit
            if dry_run:
                self.console.print(
                    f"{total:,} records selected, over {limit:,}: a dry run "
                    "(pass --execute to write them)"
                )
        result = Result(Summary(), dry_run, todo)
        rules = Rules(self.store, self.settings.dedupe_window_seconds * 1000, result.summary)
        if not dry_run:
            self.writer = Writer(self.settings, self.codec)
        since_ms = self.store.now_ms()  # before the first write: older copies are superseded
        with _interruptible(self.stop), Display(self.console, todo, self.topics.raw) as display:
            self._read(todo, rules, display)
        if self.stop.is_set():
            result.stopped = "interrupted"
        elif any(not r.done for r in todo):
            result.stopped = f"no record came for {IDLE_S:.0f} s before the end"
        s = result.summary
        if self.writer is not None and (s.written or s.rejections_new or s.links_new):
            result.stored = wait_for_sink(
                self.settings, self.offsets, self.options.wait_s, self.stop, self.console
            )
            if result.stored:
                s.superseded = self._delete_superseded(since_ms)
            elif self.superseded:
                result.notes.append(
                    "the sink has not stored every written row yet: older copies of changed "
                    "events were not deleted; replay the same range again to finish"
                )
        return result

    def _read(self, todo: list[Range], rules: Rules, display: Display) -> None:
        """Read every range to its end (or to a stop), one planned and written batch at a time."""
        topic, sel, s = self.topics.raw, self.options.selection, rules.summary
        by_partition = {r.partition: r for r in todo}
        self.consumer.assign(
            [TopicPartition(topic, r.partition, r.next) for r in todo if not r.done]
        )
        idle_since = time.monotonic()
        while not self.stop.is_set() and any(not r.done for r in todo):
            raws: list[dict[str, Any]] = []
            undecodable: list[dict[str, Any]] = []
            reached: dict[int, int] = {}
            for msg in self.consumer.consume(self.options.batch, 0.2):
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        if err.fatal():
                            raise KafkaException(err)
                        log.warning("replay consumer error", error=str(err))
                    continue
                partition, offset = msg.partition(), msg.offset()
                assert partition is not None and offset is not None
                r = by_partition[partition]
                if not r.next <= offset < r.end:
                    continue  # fetched past the end of the range
                reached[partition] = offset + 1
                s.read += 1
                _, ts_ms = msg.timestamp()
                value = _decode(self.codec, msg)
                if isinstance(value, Undecodable):
                    if sel.product is None and sel.wants(ts_ms, ""):
                        undecodable.append(
                            rejected_undecodable(value, topic, partition, offset, ts_ms)
                        )
                    else:
                        s.skipped += 1
                elif sel.wants(ts_ms, value["product"]):
                    mark_source(value, topic, partition, offset)  # for its rejections
                    raws.append(value)
                else:
                    s.skipped += 1
            if not reached:
                if time.monotonic() - idle_since > IDLE_S:
                    return
                continue
            idle_since = time.monotonic()
            plan = rules.plan(raws, undecodable)
            if self.writer is not None:
                s.written += self.writer.write(plan)
                for product, ids in plan.changed.items():
                    self.superseded.setdefault(product, []).extend(ids)
            for partition, next_offset in reached.items():  # written: resume past them
                r = by_partition[partition]
                r.next = next_offset
                display.advance(r)
                if r.done:
                    self.consumer.incremental_unassign([TopicPartition(topic, partition)])

    def _delete_superseded(self, since_ms: int) -> int:
        return delete_superseded(self.store, self.superseded, since_ms)


def wait_for_sink(
    settings: Settings, offsets: Offsets, wait_s: float, stop: threading.Event, console: Console
) -> bool:
    """Wait until the sink's group committed the real end (read, as the drain reads it) of
    every partition of the topics it reads; False after ``wait_s`` or a stop."""
    t = TopicNames.from_settings(settings)
    tps = offsets.partitions([t.clean, t.rejected, t.identities])
    ends, unknown = offsets.ends(tps)
    deadline = time.monotonic() + wait_s
    with console.status("waiting for the sink to store what was written"):
        while not stop.is_set() and time.monotonic() < deadline:
            if unknown:
                more, unknown = offsets.ends(sorted(unknown))
                ends.update(more)
            committed = offsets.committed(settings.sink_group, ends)
            if not unknown and all(committed.get(tp, 0) >= e for tp, e in ends.items()):
                return True
            stop.wait(0.25)
    return False


def delete_superseded(store: Store, changed: dict[str, list[str]], since_ms: int) -> int:
    """``Store.delete_superseded`` for the changed events, in chunks."""
    deleted = 0
    for product, ids in changed.items():
        unique = sorted(set(ids))
        for i in range(0, len(unique), SUPERSEDED_CHUNK):
            chunk = unique[i : i + SUPERSEDED_CHUNK]
            deleted += store.delete_superseded(product, chunk, since_ms)
    return deleted


def _print(console: Console, result: Result, options: Options) -> None:
    out = Console(width=max(console.width, 120)) if not console.is_terminal else console
    out.print(summary_table(result.summary, dry_run=result.dry_run))
    for note in result.notes:
        out.print(f"note: {note}")
    if result.stored is False:
        out.print("the sink has not stored everything written yet (is it running?)")
    if result.stopped is not None:
        hint = resume_hint(result.ranges)
        where = ", ".join(f"[{r.partition}] at {r.next} of {r.end}" for r in result.ranges)
        out.print(f"stopped ({result.stopped}): {where}")
        if hint is not None:
            out.print(f"resume: the same command with --resume {hint}")

"""Table recovery in bulk: a restarted worker reads its tables' changelogs at C speed.

Faust recovers a table by delivering every changelog record through its consumer, conductor and
recovery loop: about 100 us of CPU per record here (an ``asyncio.wait_for`` per record, a count
of the partitions still to recover per record, message and event objects), while the fetch
itself runs at ~400k records/s. A restart onto a window of dedupe keys waited for all of it: 100k
live keys took 16.4 s before the worker processed an event, 1M 126 s; and the identity table,
whose links are kept for good, only grows.

So :class:`BulkRecovery`, once Faust has worked out where each active changelog partition's
recovery starts and ends (its offsets and highwaters), first reads those ranges with a plain
confluent-kafka consumer (``streams.changelog.ChangelogReader``) and applies them with the
table's own rule (``apply_records`` in ``streams.dedupe_table`` and ``streams.links_table``),
advancing Faust's offsets as it goes. Faust's recovery then starts from there: nothing is left
when the bulk read got to the ends, else it reads the rest its own way. Everything else is
Faust's: the same ranges, the same rule and the checks after recovery. The worker keeps no
standby copies (``streams.app.faust_config``), so every partition is recovered this way.

Limits, each falling back to Faust's own reading from where the bulk read stopped: it reads for
at most a third of ``broker_request_timeout`` (Faust gives up the whole recovery step after
that), and stops at once when another rebalance starts or on a Kafka error. Only tables that
have ``apply_records`` are read in bulk (both of the worker's do).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from typing import Any, Protocol, cast

import structlog
from confluent_kafka import KafkaException, Message
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP, ConsumerT

from eventpipe import garbage_collection

log = structlog.get_logger(__name__)

FIXES_FAUST_VERSION = "0.15.3"
"""The faust-streaming release whose ``Recovery._build_offsets`` and ``TableManager.on_start``
(copied without its 1 s sleep) this was written against: a test fails when the installed one
differs, so both are re-checked on an upgrade."""

ReadChangelog = Callable[
    [str, Mapping[int, int], Mapping[int, int], float], AsyncGenerator[list[Message], None]
]
"""``(topic, first offsets, last offsets, budget in seconds)`` -> batches of records."""


TAIL_RECORDS = 1_000
"""Records read first from the end of each partition for a table that learns from them
(``observe_tail``): the dedupe table takes its partitions' horizons there."""


class BulkRecoverable(Protocol):
    changelog_topic_name: str

    def apply_records(self, records: list[Message]) -> None: ...


class BulkRecovery(Recovery):
    @property
    def read_changelog(self) -> ReadChangelog | None:
        """The manager's (``streams.app.create_app`` sets it there): None reads as Faust does."""
        return cast(BulkTableManager, self.tables).read_changelog

    async def _build_offsets(
        self, consumer: ConsumerT, tps: set[TP], destination: Any, title: str
    ) -> None:
        await super()._build_offsets(consumer, tps, destination, title)
        if destination is self.active_offsets and self.read_changelog is not None:
            budget_s = float(self.app.conf.broker_request_timeout) / 3
            for table in self.tables.values():
                if not hasattr(table, "apply_records"):
                    continue
                try:
                    await self._read_in_bulk(table, tps, destination, budget_s)
                except KafkaException as exc:  # what was applied is in the offsets already
                    log.warning(
                        "changelog bulk read failed: Faust reads the rest",
                        topic=table.changelog_topic_name,
                        error=str(exc),
                    )
            # What the tables dropped while reading (entries out of the window) was freed to
            # the allocator, which keeps it: hand it back (in a thread: the loop heartbeats).
            started = time.perf_counter()
            if await asyncio.to_thread(garbage_collection.release_freed_memory):
                log.info("freed memory released", seconds=round(time.perf_counter() - started, 3))

    async def _read_in_bulk(
        self, table: BulkRecoverable, tps: set[TP], offsets: Any, budget_s: float
    ) -> None:
        """Apply ``table``'s changelog from each active partition's offset to its highwater,
        moving the offset along (Faust's offset is the last record applied)."""
        assert self.read_changelog is not None
        topic = table.changelog_topic_name
        lasts = {
            tp.partition: self.active_highwaters.get(tp, -1) for tp in tps if tp.topic == topic
        }
        starts = {p: max(offsets[TP(topic, p)], -1) + 1 for p in lasts}
        todo = {p: last for p, last in lasts.items() if last >= starts[p]}
        if not todo:
            return
        if hasattr(table, "observe_tail"):
            tail = {p: max(starts[p], last - TAIL_RECORDS + 1) for p, last in todo.items()}
            async with aclosing(self.read_changelog(topic, tail, todo, budget_s)) as batches:
                async for batch in batches:
                    table.observe_tail(batch)
        read = 0
        async with aclosing(self.read_changelog(topic, starts, todo, budget_s)) as batches:
            async for batch in batches:
                table.apply_records(batch)
                for msg in batch:  # in offset order per partition: the last one wins
                    offsets[TP(topic, cast(int, msg.partition()))] = msg.offset()
                read += len(batch)
                if self.signal_recovery_start.is_set():  # another rebalance: Faust starts over
                    break
        left = sum(max(0, last - offsets[TP(topic, p)]) for p, last in todo.items())
        log.info("changelog read in bulk", topic=topic, records=read, left_to_faust=left)


class BulkTableManager(TableManager):
    """Faust's table manager, recovering with :class:`BulkRecovery`, and starting at once.

    Faust's manager sleeps a second before it takes its tables in, for tables an app defines
    late: the conductor subscribes to nothing until then, so every worker start and restart
    waited that second. The worker's tables are all added by ``streams.app.create_app``, before
    the app starts (a table added after this start is refused, as in Faust).
    """

    read_changelog: ReadChangelog | None = None

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:  # as Faust builds it, which also stops it through _recovery
            self._recovery = BulkRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery

"""A fix for Faust losing source records when table recovery completes.

The bug (faust-streaming 0.15.3, seen on every worker start with records waiting and a table
to recover): ``Recovery`` resumes the flow (``app.flow_control.resume()``, ``consumer.
resume_flow()``) to read the changelogs; when they are read, ``on_recovery_completed`` resumes
the source partitions, *awaits* ``consumer.perform_seek()``, and only then calls
``app.flow_control.resume()`` again. Flow is already active during that await, so the fetcher
hands source records to the agents' stream queues (their read offsets move past them); the
second ``resume()`` then clears every ``clear_on_resume`` queue (mode's ``FlowControlEvent``
clears on *every* resume), dropping the records still waiting there. They are never processed
and never acked, so the committed offset of their partitions stops for good (Faust only commits
up to the first unacked offset), and after a restart they are redelivered slowly. Measured: 1-2
records per partition dropped in ~2 of 5 starts, at the offsets buffered at that moment.

The fix: clear the queues only when ``resume()`` actually ends a suspension. What clearing is
for, records buffered for partitions that a rebalance then revoked, only exists after
``suspend()`` (which Faust calls on every revocation, together with an explicit ``clear()``);
a ``resume()`` while flow is already active has nothing stale to drop, only records fetched for
partitions this worker owns, in order, which the agents must see. Every suspended->active
transition behaves exactly as before. A record delivered twice (the seek can rewind to the
committed offset after some were fetched) is processed again, which at-least-once allows, and
acked once (Faust's ack keeps one entry per offset).

A second bug of the same moment: ``perform_seek`` awaits the committed offsets, and then sets every
partition's read offset back to its committed one. Records the fetcher handed over *during* that
await (flow is active) stay in the agents' buffers, but the read offset no longer says so: the next
record of the fetched batch then looks like a gap from the committed offset to itself, and Faust
records a gap over records it has delivered. When the gap is filled at a commit, every one of them
is in the acked list twice, and Faust's commit takes only the first run of consecutive offsets: it
advanced by one offset per partition per commit. Measured: a restart under load left the group
13,977 behind the ends of ``events.raw`` for minutes, the lag read wrong, and the next restart would
have read them all again. The fix, :class:`SeekKeepsDelivered`: a read offset that moved during
the await is kept, because what it read is buffered; the others are set back as before.

A third, in the same seek: Faust drops records it has drained from aiokafka while flow is
suspended or their partition paused, and counts on this seek to read them again, but aiokafka's
``seek_to_committed`` moves only partitions committed above 0. A partition without a commit yet
(a first start, expired group offsets) kept its position past them: a restarted worker sat idle
with a record waiting, in 1 of 8 to 1 of 25 starts. :meth:`SeekKeepsDelivered.seek_uncommitted`
seeks those to where the group starts (:func:`uncommitted_starts`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, cast

from faust.transport.consumer import ensure_TP
from faust.types import TP
from mode.utils.queues import FlowControlEvent

FIXES_FAUST_VERSION = "0.15.3"
"""The faust-streaming release this patch was written against and verified on: a test fails when
the installed one differs, so the patch is re-checked (dropped if fixed upstream) on upgrade."""


class ResumeKeepsBuffers(FlowControlEvent):
    """``FlowControlEvent`` whose ``resume()`` is a no-op (no clearing) when not suspended."""

    def resume(self) -> None:
        if self.is_active():
            return
        super().resume()


def read_offsets_after_seek(
    before: Mapping[TP, int | None], now: Mapping[TP, int | None], committed: Mapping[TP, int]
) -> dict[TP, int | None]:
    """Each sought partition's read offset: its committed offset, unless records were read past it
    while the seek awaited the broker (``now`` moved from ``before``); those are buffered."""
    after: dict[TP, int | None] = {}
    for tp, offset in committed.items():
        start = offset if offset is not None and offset >= 0 else None
        read = now.get(tp)
        if read is not None and read != before.get(tp) and (start is None or read >= start):
            after[tp] = read
        else:
            after[tp] = start
    return after


class SeekKeepsDelivered:
    """Consumer mixin: Faust's ``Consumer.perform_seek`` with :func:`read_offsets_after_seek`,
    and every source partition sought, with or without a commit (:func:`uncommitted_starts`)."""

    _read_offset: MutableMapping[TP, int | None]
    _committed_offset: MutableMapping[TP, int | None]

    if TYPE_CHECKING:  # Faust's consumer provides them
        app: Any

        async def seek_to_committed(self) -> Mapping[TP, int]: ...

        async def earliest_offsets(self, *partitions: TP) -> Mapping[TP, int]: ...

        async def seek_wait(self, partitions: Mapping[TP, int]) -> None: ...

    async def perform_seek(self) -> None:
        before = dict(self._read_offset)
        committed = await self.seek_to_committed()
        await self.seek_uncommitted(committed)
        self._read_offset.update(read_offsets_after_seek(before, self._read_offset, committed))
        sought = {ensure_TP(tp): offset for tp, offset in committed.items() if offset is not None}
        self._committed_offset.update({tp: offset or None for tp, offset in sought.items()})

    async def seek_uncommitted(self, committed: Mapping[TP, int | None]) -> None:
        """Seek the source partitions whose commit aiokafka's seek skipped to where the group
        starts reading them: the committed 0, or the earliest offset when there is none."""
        if self.app.conf.consumer_auto_offset_reset != "earliest":
            return  # where "latest" would have started is gone: leave them as aiokafka does
        changelogs = self.app.tables.changelog_topics
        starts = uncommitted_starts(committed, changelogs, {})
        unset = [tp for tp, offset in starts.items() if offset is None]
        earliest = await self.earliest_offsets(*unset) if unset else {}
        starts = uncommitted_starts(committed, changelogs, earliest)
        if starts:
            await self.seek_wait(cast(dict[TP, int], starts))


def uncommitted_starts(
    committed: Mapping[TP, int | None], changelogs: Collection[str], earliest: Mapping[TP, int]
) -> dict[TP, int | None]:
    """Where each source partition that aiokafka's ``seek_to_committed`` leaves alone starts:
    its commit when that is 0, else its ``earliest`` offset (None while unknown).

    Why: Faust drops records it has already drained from aiokafka when flow is suspended or a
    partition is paused (``Consumer.getmany``) and relies on this seek to read them again. aiokafka
    seeks only commits above 0, so on a partition without a commit, or committed at 0, they
    were never read again: the worker sat idle with a record waiting (seen in 1 of 8 to 1 of 25
    starts with records waiting and no commit yet, as on a first start or after the group's
    offsets expired), and a later record's commit could skip it.
    """
    return {
        ensure_TP(tp): offset if offset == 0 else earliest.get(ensure_TP(tp))
        for tp, offset in committed.items()
        if (offset is None or offset == 0) and tp.topic not in changelogs
    }

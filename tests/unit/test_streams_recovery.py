"""The Faust fixes (streams.recovery, streams.fetchwait) and the worker's ready file.

The seek's fix is checked end to end by ``tests/e2e/test_worker_faults.py`` (commits reach the
ends after a restart under load), which needs the race; here, its rule, the upstream mechanism it
avoids, and the seek itself on a real consumer against an embedded broker with the interleaving
forced (the only test here that needs a broker)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.types import TP
from mode.utils.queues import FlowControlEvent, FlowControlQueue

from eventpipe.kafka import producer_config
from eventpipe.publisher import KafkaPublisher
from eventpipe.settings import Settings
from streams.app import create_app
from streams.recovery import (
    ResumeKeepsBuffers,
    SeekKeepsDelivered,
    read_offsets_after_seek,
    uncommitted_starts,
)
from streams.worker import ready, remove_ready_file
from tests.worker_app import on_consumer, worker_app, write


def _queue(flow: FlowControlEvent) -> FlowControlQueue[int]:
    # Faust's stream and changelog queues are built like this (clear_on_resume=True).
    return FlowControlQueue(maxsize=10, flow_control=flow, clear_on_resume=True)


def test_upstream_flow_control_clears_buffered_records_on_a_resume_while_active() -> None:
    """The bug: Faust calls resume() again when recovery completes, with flow already on."""
    flow = FlowControlEvent()
    q = _queue(flow)
    flow.resume()
    q.put_nowait(1)
    flow.resume()
    assert q.qsize() == 0  # the record is gone, never processed nor acked


def test_resume_while_active_keeps_buffered_records() -> None:
    flow = ResumeKeepsBuffers()
    q = _queue(flow)
    flow.resume()
    q.put_nowait(1)
    flow.resume()
    assert flow.is_active()
    assert q.get_nowait() == 1


def test_resume_after_suspend_still_clears_and_reactivates() -> None:
    flow = ResumeKeepsBuffers()
    q = _queue(flow)
    flow.resume()
    q.put_nowait(1)
    flow.suspend()
    assert not flow.is_active()
    flow.resume()
    assert flow.is_active()
    assert q.qsize() == 0


def test_initially_suspended_like_upstream() -> None:
    flow = ResumeKeepsBuffers()
    assert not flow.is_active()


@pytest.fixture
def app() -> Iterator[faust.App]:
    """An app that is never started: its publisher points at a port nobody serves."""
    settings = Settings(kafka_bootstrap="127.0.0.1:9", topic_prefix="unit.")
    publisher = KafkaPublisher(producer_config(settings, log_level=0))  # no connect noise
    yield create_app(settings, publisher)
    publisher.close(timeout_s=0)


def test_app_uses_the_fixed_flow_control(app: faust.App) -> None:
    assert isinstance(app.flow_control, ResumeKeepsBuffers)


def test_no_standby_copies_as_a_promoted_copy_is_recovered_from_its_start(app: faust.App) -> None:
    """Standby copies stay off while they buy nothing: with the memory store a table keeps no
    offset, so Faust starts a promoted copy's recovery over (``None``: the changelog's start),
    however far the copy had read. If that changes (a store with offsets), this fails."""
    assert app.conf.table_standby_replicas == 0
    recovery = app.tables.recovery
    for table in app.tables.values():
        tp = TP(table.changelog_topic.get_topic_name(), 0)
        assert table.persisted_offset(tp) is None
        recovery.add_standby(table, tp)
        recovery.standby_offsets[tp] = 500  # as far as the copy read along
        recovery.add_active(table, tp)
        assert recovery.active_offsets[tp] is None


RAW = TP("unit.events.raw", 0)
OTHER = TP("unit.events.raw", 1)


def test_upstream_a_gap_over_delivered_offsets_commits_one_offset_per_commit(
    app: faust.App,
) -> None:
    """The bug: the seek set the read offset back to 281 after 281..1314 were delivered, so the
    next record, 1315, recorded them as a gap; filling it at a commit doubles each of them."""
    consumer = app.consumer
    consumer._committed_offset[RAW] = 281
    consumer._acked[RAW].extend(range(281, 1400))
    consumer._acked_index[RAW].update(range(281, 1400))
    asyncio.run(consumer._add_gap(RAW, 282, 1315))
    commits = []
    for _ in range(3):
        commits.append(consumer._new_offset(RAW))
        consumer._committed_offset[RAW] = commits[-1]
    assert commits == [283, 284, 285]  # 1,400 once the gap is not there


def test_the_app_consumer_seeks_with_the_fix(app: faust.App) -> None:
    assert isinstance(app.consumer, SeekKeepsDelivered)


def test_the_seek_keeps_what_was_read_while_it_awaited_the_broker() -> None:
    """The worker's consumer, assigned two partitions with commits at 281 and 7: partition 0 is
    read to 1314 while the seek awaits the committed offsets (as the fetcher does after table
    recovery), partition 1 was read to 50 before the seek and not during it."""
    with worker_app("unit.seek.", {0: 281, 1: 7}) as (app, _):
        read, moved = TP("unit.seek.raw", 0), TP("unit.seek.raw", 1)

        async def seek(consumer: Any) -> tuple[dict[TP, int | None], dict[TP, int | None]]:
            kafka = consumer._thread._ensure_consumer()

            # In the consumer's thread, as Faust's calls are: assigned from the test's loop,
            # aiokafka made its commit-refresh task there, and stopping the consumer in its own
            # thread then failed now and then on "a Future attached to a different loop".
            async def assign() -> None:
                kafka.assign({read, moved})

            await consumer._thread.call_thread(assign)
            consumer._read_offset[moved] = 50

            async def deliver() -> None:  # runs once the seek is waiting for the broker
                consumer._read_offset[read] = 1314

            await asyncio.gather(consumer.perform_seek(), deliver())
            return dict(consumer._read_offset), dict(consumer._committed_offset)

        kept, committed = on_consumer(app, seek)
    assert kept == {read: 1314, moved: 7}
    assert committed == {read: 281, moved: 7}


def test_the_seek_reads_again_what_was_drained_on_partitions_without_a_commit() -> None:
    """Partition 0 has no commit and partition 1 is committed at 0; both were drained past
    their records (as when Faust drops what it drained while flow was suspended). aiokafka's
    seek leaves both where they are; the worker's consumer seeks them to 0."""
    with worker_app("unit.uncommitted.", {1: 0}) as (app, settings):
        topic = "unit.uncommitted.raw"
        write(settings, topic, [(0, b"k", b"v"), (0, b"k", b"v"), (1, b"k", b"v")])
        none, zero = TP(topic, 0), TP(topic, 1)

        async def seek(consumer: Any) -> tuple[dict[TP, int | None], dict[TP, int | None]]:
            kafka = consumer._thread._ensure_consumer()

            async def assign() -> None:  # in the consumer's thread, as Faust's calls are
                kafka.assign({none, zero})

            await consumer._thread.call_thread(assign)
            await consumer.seek_wait({none: 2, zero: 1})  # drained, then dropped
            await consumer.perform_seek()
            positions = {tp: await consumer.position(tp) for tp in (none, zero)}
            return positions, dict(consumer._read_offset)

        positions, read = on_consumer(app, seek)
    assert positions == {none: 0, zero: 0}
    assert read == {none: None, zero: 0}


def test_uncommitted_starts_are_the_commit_at_zero_or_the_earliest_offset() -> None:
    raw0, raw1, raw2, log = TP("raw", 0), TP("raw", 1), TP("raw", 2), TP("changelog", 0)
    committed = {raw0: None, raw1: 0, raw2: 5, log: None}
    assert uncommitted_starts(committed, {"changelog"}, {}) == {raw0: None, raw1: 0}
    assert uncommitted_starts(committed, {"changelog"}, {raw0: 3}) == {raw0: 3, raw1: 0}


def test_a_seek_sets_back_the_read_offsets_nothing_moved() -> None:
    """Faust's rewind, kept: what was read before the seek is read again from the commit."""
    before = {RAW: 900, OTHER: None}
    assert read_offsets_after_seek(before, dict(before), {RAW: 281, OTHER: 7}) == {
        RAW: 281,
        OTHER: 7,
    }


def test_a_read_offset_moved_during_the_seek_is_kept() -> None:
    # RAW was revoked and assigned again (no read offset), then read to 1314 while awaiting.
    after = read_offsets_after_seek({OTHER: 50}, {RAW: 1314, OTHER: 60}, {RAW: 281, OTHER: 40})
    assert after == {RAW: 1314, OTHER: 60}


def test_a_read_offset_moved_below_the_commit_is_set_to_the_commit() -> None:
    assert read_offsets_after_seek({RAW: None}, {RAW: 100}, {RAW: 281}) == {RAW: 281}


def test_a_partition_without_a_commit_keeps_what_it_read_or_reads_from_the_start() -> None:
    assert read_offsets_after_seek({}, {RAW: 12}, {RAW: -1, OTHER: -1}) == {RAW: 12, OTHER: None}


def test_ready_needs_recovered_tables_and_no_rebalance(app: faust.App) -> None:
    assert not ready(app)
    app.tables.actives_ready = True
    app.rebalancing = True
    assert not ready(app)
    app.rebalancing = False
    assert ready(app)
    app.tables.on_rebalance_start()
    assert not ready(app)


def test_remove_ready_file(tmp_path: Path) -> None:
    path = tmp_path / "ready"
    path.write_text(json.dumps({"pid": 1}))
    remove_ready_file(path)
    remove_ready_file(path)  # missing is fine
    assert not path.exists()

"""streams.bulk_recovery: a worker's tables recovered from their changelogs in bulk.

The dedupe rule is tested in ``tests/unit/test_streams_dedupe_table.py``; here, that the bulk
path applies each table's rule to records as read, and that Faust's recovery, at the step where it
works out each active partition's starting offset, reads each range to its highwater and no
further, with the worker's real consumer against an embedded broker. That a restarted worker still
drops a retry is checked end to end by ``tests/e2e/test_worker_faults.py``."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import Message
from faust.types import TP

from eventpipe.kafka import create_topics
from streams.app import DEDUPE_TABLE, IDENTITY_TABLE, changelog_topics
from streams.bulk_recovery import BulkRecovery
from streams.dedupe import SENTINEL_KEY, SENTINEL_VALUE
from streams.dedupe_table import DedupeTable
from streams.links_table import LinksTable
from tests.fakes import FakeTable
from tests.worker_app import on_consumer, worker_app, write

WINDOW = 3_600_000


def record(partition: int, offset: int, key: bytes, value: bytes | None) -> Message:
    return Message(topic="c", partition=partition, offset=offset, key=key, value=value)


def test_records_read_in_bulk_follow_the_recovery_rule() -> None:
    table = FakeTable(window_ms=WINDOW)
    records = [
        record(0, 0, SENTINEL_KEY, SENTINEL_VALUE),
        record(0, 1, b"old", b"1000"),
        record(0, 2, b"tombstoned", b"1500"),
        record(0, 3, b"tombstoned", None),
        record(0, 4, b"not-json", b"\xff{"),  # never written by the outbox: skipped, logged
        record(0, 5, b"kept", b"%d" % (1_000 + WINDOW - 1)),
        record(0, 6, b"newest", b"%d" % (1_000 + WINDOW)),
        record(1, 0, b"other-partition", b"1000"),
    ]
    DedupeTable.apply_records(table, records)  # type: ignore[arg-type]
    assert table == {
        b"kept": 1_000 + WINDOW - 1,
        b"newest": 1_000 + WINDOW,
        b"other-partition": 1_000,
    }


def test_the_tail_sets_the_horizon_so_expired_entries_are_not_kept_until_the_end() -> None:
    """The changelog: old entries, then live ones (as a worker stopped for over a window leaves
    it). With the horizon taken from its tail, the old batch is dropped as it is applied;
    without, it stays until the live batch arrives. Either way the end is the same."""
    old = [record(0, i, b"old-%d" % i, b"1000") for i in range(3)]
    live = [record(0, 3, b"live", b"%d" % (1_000 + 2 * WINDOW)), record(0, 4, SENTINEL_KEY, b"0")]
    after_old = []
    for observe in (True, False):
        table = FakeTable(window_ms=WINDOW)
        if observe:
            DedupeTable.observe_tail(table, live)  # type: ignore[arg-type]
        DedupeTable.apply_records(table, old)  # type: ignore[arg-type]
        after_old.append(dict(table))
        DedupeTable.apply_records(table, live)  # type: ignore[arg-type]
        assert table == {b"live": 1_000 + 2 * WINDOW}
    assert after_old == [{}, {b"old-0": 1000, b"old-1": 1000, b"old-2": 1000}]


def test_links_follow_the_memory_store_rule_however_read() -> None:
    """A value sets, a tombstone deletes, each key's partition is kept for the store to drop the
    keys of lost partitions; the sentinel is no link. Records Faust delivers and records read in
    bulk end the same."""
    records = [
        record(0, 0, SENTINEL_KEY, SENTINEL_VALUE),
        record(0, 1, b"anon-1", b'"user-1"'),
        record(0, 2, b"anon-2", b'"user-2"'),
        record(0, 3, b"anon-2", None),
        record(3, 0, b"anon-3", b'"user-3"'),
    ]
    events = [  # as Faust's recovery delivers them: attributes, the value decoded
        SimpleNamespace(
            message=SimpleNamespace(partition=m.partition(), key=m.key(), value=m.value()),
            value=None if m.value() is None else json.loads(m.value()),
        )
        for m in records
    ]
    stores = []
    for apply, batch in (
        (LinksTable.apply_records, records),
        (LinksTable.apply_changelog_batch, events),
    ):
        store = SimpleNamespace(data={}, _key_partition={})
        apply(SimpleNamespace(data=store, value_serializer="json"), batch)  # type: ignore[arg-type]
        stores.append(store)
    for store in stores:
        assert store.data == {b"anon-1": "user-1", b"anon-3": "user-3"}
        assert store._key_partition == {b"anon-1": 0, b"anon-3": 3}


@pytest.mark.parametrize(
    ("name", "encode", "decode"),
    [
        (DEDUPE_TABLE, lambda n: b"%d" % n, lambda n: n),
        (IDENTITY_TABLE, lambda n: b'"user-%d"' % n, lambda n: f"user-{n}"),
    ],
)
def test_recovery_reads_each_active_changelog_partition_in_bulk_to_its_highwater(
    name: str, encode: Callable[[int], bytes], decode: Callable[[int], Any]
) -> None:
    """Partition 0 to its end; partition 1 only to its highwater (offset 1: the record at 2 is
    Faust's to read); partitions 2 and 3 are empty. A second recovery reads only what follows."""
    with worker_app(f"unit.bulk.{name}.") as (app, settings):
        table = app.tables[name]
        topic = table.changelog_topic_name
        create_topics(settings, [topic])
        write(
            settings,
            topic,
            [
                (0, SENTINEL_KEY, SENTINEL_VALUE),
                (0, b"a", encode(1000)),
                (0, b"b", encode(1001)),
                (0, b"b", None),
                (0, b"c", encode(1002)),
                (1, b"d", encode(2000)),
                (1, b"e", encode(2001)),
                (1, b"f", encode(2002)),
            ],
        )
        recovery = app.tables.recovery
        assert isinstance(recovery, BulkRecovery)
        tps = {TP(topic, p) for p in range(4)}

        async def recover_twice(
            consumer: Any,
        ) -> tuple[dict[int, int], dict[bytes, Any], dict[int, int]]:
            async def recover(highwaters: dict[int, int]) -> dict[int, int]:
                recovery.active_highwaters.update({TP(topic, p): h for p, h in highwaters.items()})
                for tp in tps:
                    recovery.active_offsets.setdefault(tp, None)  # as Faust's add_active does
                await recovery._build_offsets(consumer, tps, recovery.active_offsets, "active")
                return {tp.partition: recovery.active_offsets[tp] for tp in tps}

            first = await recover({0: 4, 1: 1, 2: -1, 3: -1})
            return first, dict(table.data), await recover({1: 2})

        first, after_first, second = on_consumer(app, recover_twice)
    assert first == {0: 4, 1: 1, 2: -1, 3: -1}
    expected = {b"a": 1000, b"c": 1002, b"d": 2000, b"e": 2001}
    assert after_first == {key: decode(n) for key, n in expected.items()}
    assert second == {0: 4, 1: 2, 2: -1, 3: -1}
    assert dict(table.data) == {key: decode(n) for key, n in {**expected, b"f": 2002}.items()}


def test_the_table_manager_takes_its_tables_in_without_a_fixed_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Faust's manager sleeps a second before it registers its tables, and the conductor
    subscribes to nothing until then: every worker start and restart waited it. The worker's
    tables all exist before the app starts, so its manager waits for nothing."""
    with worker_app("unit.bulk.start.") as (app, _settings):
        manager = app.tables
        waits: list[float] = []
        sleep = manager.sleep

        async def recorded_sleep(seconds: float) -> None:
            waits.append(seconds)
            await sleep(seconds)

        monkeypatch.setattr(manager, "sleep", recorded_sleep)

        async def start(_consumer: Any) -> list[str]:
            await manager.on_start()
            await manager.wait_until_tables_registered()
            await manager.recovery.stop()
            await app.producer.stop()  # it made the changelogs: Tansu stops once it is gone
            return sorted(manager._changelogs)

        changelogs = on_consumer(app, start)
    assert waits == []
    assert changelogs == sorted(changelog_topics(app))  # both tables', as Faust names them

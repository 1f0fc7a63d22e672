"""streams.dedupe_table: what a recovery keeps and what a sweep tombstones, on the table's own
methods over a fake store (no broker, no Faust app)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from eventpipe.codec import AvroCodec
from streams.dedupe import SENTINEL_KEY
from streams.dedupe_table import DedupeTable
from streams.outbox import Outbox
from tests.fakes import FakeTable, ScriptedPublisher

WINDOW = 3_600_000


def changelog(partition: int, key: bytes, value: int | None) -> Any:
    raw = None if value is None else b"%d" % value
    return SimpleNamespace(
        value=value, message=SimpleNamespace(partition=partition, key=key, value=raw)
    )


def recover(table: FakeTable, *events: Any) -> None:
    DedupeTable.apply_changelog_batch(table, events)  # type: ignore[arg-type]


def test_recovery_keeps_the_window_and_drops_the_rest() -> None:
    table = FakeTable(window_ms=WINDOW)
    recover(
        table,
        changelog(0, SENTINEL_KEY, 0),
        changelog(0, b"old", 1_000),
        changelog(0, b"tombstoned", 1_500),
        changelog(0, b"tombstoned", None),
        changelog(0, b"kept", 1_000 + WINDOW - 1),
        changelog(0, b"newest", 1_000 + WINDOW),
        changelog(1, b"other-partition", 1_000),  # its partition's horizon is still 1_000
    )
    assert table == {
        b"kept": 1_000 + WINDOW - 1,
        b"newest": 1_000 + WINDOW,
        b"other-partition": 1_000,
    }


def test_a_sweep_tombstones_expired_keys_to_their_partition_and_skips_re_stored_ones() -> None:
    publisher = ScriptedPublisher()
    table = FakeTable(window_ms=WINDOW)
    box = Outbox(publisher, AvroCodec(), "rejected")
    for key, first in ((b"a", 1_000), (b"b", 1_001), (b"c", 5_000)):
        table[key] = first
        table.expiry.track(2, key, first)
    table[b"b"] = 1_001 + WINDOW  # stored again since (a newer copy): its old entry is not due
    table.expiry.observe(2, 5_000 + WINDOW - 1)
    forgotten = asyncio.run(DedupeTable.sweep(table, box, [2]))  # type: ignore[arg-type]
    assert forgotten == 1
    assert publisher.sent == [("app-dedupe-changelog", b"a", None, 2)]
    assert table == {b"b": 1_001 + WINDOW, b"c": 5_000}

"""streams.outbox: a batch's outputs are acknowledged before flush() returns, and never lost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import streams.outbox as outbox_module
from eventpipe.codec import REJECTED_EVENT, AvroCodec
from streams.outbox import Outbox
from tests.fakes import FakeTable, ScriptedPublisher

CODEC = AvroCodec()


@pytest.fixture(autouse=True)
def fast_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_module, "RETRY_FIRST_S", 0.001)


def rejection(event_id: str, **over: Any) -> dict[str, Any]:
    rec = {
        "event_id": event_id,
        "product": "p",
        "source": "api",
        "dialect": "v2",
        "stage": "normalize",
        "field": None,
        "reason": "bad",
        "received_at": 1_767_323_045_000,
        "payload": b"{}",
    }
    return rec | over


def test_flush_retries_what_failed_and_returns_once_all_is_acknowledged() -> None:
    publisher = ScriptedPublisher(failures=2)
    box = Outbox(publisher, CODEC, "rejected")
    for i in range(3):
        box.reject(rejection(f"e{i}"))
    asyncio.run(box.flush())
    assert sorted(publisher.acked) == [
        ("rejected", b"e0"),
        ("rejected", b"e1"),
        ("rejected", b"e2"),
    ]
    assert publisher.failures == 0


def test_a_flush_cut_short_keeps_its_outputs_for_the_next() -> None:
    box = Outbox(ScriptedPublisher(hang=True), CODEC, "rejected")
    box.reject(rejection("e1"))

    async def cut() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(box.flush(), 0.05)

    asyncio.run(cut())
    box._publisher = publisher = ScriptedPublisher()
    asyncio.run(box.flush())
    assert publisher.acked == [("rejected", b"e1")]


def test_a_rejection_that_cannot_be_encoded_still_goes_out_without_its_payload() -> None:
    publisher = ScriptedPublisher()
    box = Outbox(publisher, CODEC, "rejected")
    box.reject(rejection("e1", field=123))  # not a string: the schema refuses it
    assert box.add("rejected", REJECTED_EVENT, b"x", rejection("x", received_at=2**63)) is not None
    asyncio.run(box.flush())
    assert publisher.acked == [("rejected", b"e1")]


def test_table_entries_follow_the_outputs_and_reach_the_table_only_once_acknowledged() -> None:
    publisher = ScriptedPublisher(failures=1)  # the first output fails once
    table = FakeTable()
    box = Outbox(publisher, CODEC, "rejected")
    box.reject(rejection("e1"))
    box.put(table, b"k1", 1_767_323_045_000, partition=3)
    box.put(table, b"k2", 7)  # by key: the partitioner's choice
    publisher.on_publish = lambda: assert_empty(table)  # nothing in the table while sending
    asyncio.run(box.flush())
    assert [(t, k) for t, k, _, _ in publisher.sent] == [
        ("rejected", b"e1"),
        ("app-dedupe-changelog", b"k1"),
        ("app-dedupe-changelog", b"k2"),
    ], "the changelog records go out after the batch's outputs were acknowledged"
    assert publisher.sent[1][2:] == (b"1767323045000", 3)  # Faust's json, the given partition
    assert publisher.sent[2][2:] == (b"7", -1)
    assert table == {b"k1": 1_767_323_045_000, b"k2": 7}


def test_a_flush_cut_short_keeps_its_table_entries_out_of_the_table() -> None:
    table = FakeTable()
    box = Outbox(ScriptedPublisher(hang=True), CODEC, "rejected")
    box.put(table, b"k1", 1)

    async def cut() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(box.flush(), 0.05)

    asyncio.run(cut())
    assert table == {}
    box._publisher = ScriptedPublisher()
    asyncio.run(box.flush())
    assert table == {b"k1": 1}


def assert_empty(table: FakeTable) -> None:
    assert not table


def test_get_sees_what_put_queued_before_the_table_does() -> None:
    table = FakeTable()
    table[b"old"] = 1
    box = Outbox(ScriptedPublisher(), CODEC, "rejected")
    box.put(table, b"k1", 2)
    assert (box.get(table, b"k1"), box.get(table, b"old"), box.get(table, b"none")) == (2, 1, None)
    assert b"k1" not in table
    asyncio.run(box.flush())
    assert table[b"k1"] == 2 and box.get(table, b"k1") == 2


def test_forget_sends_a_tombstone_and_drops_the_key_only_once_acknowledged() -> None:
    publisher = ScriptedPublisher(failures=1)  # the tombstone fails once
    table = FakeTable()
    table[b"gone"] = 1
    box = Outbox(publisher, CODEC, "rejected")
    box.forget(table, b"gone", partition=2)
    assert box.get(table, b"gone") is None  # forgotten for the batch already
    publisher.on_publish = lambda: assert_holds(table, b"gone")
    asyncio.run(box.flush())
    assert publisher.sent == [("app-dedupe-changelog", b"gone", None, 2)]  # no value at all
    assert table == {}


def test_a_key_put_again_after_forget_is_kept() -> None:
    publisher = ScriptedPublisher()
    table = FakeTable()
    table[b"k"] = 1
    box = Outbox(publisher, CODEC, "rejected")
    box.forget(table, b"k", partition=0)
    box.put(table, b"k", 5, partition=0)
    asyncio.run(box.flush())
    assert [value for _, _, value, _ in publisher.sent] == [None, b"5"]  # in that order
    assert table == {b"k": 5}


def assert_holds(table: FakeTable, key: bytes) -> None:
    assert key in table

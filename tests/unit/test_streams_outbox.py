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


def raw(event_id: str, payload: bytes = b'{"event":"a.b"}') -> dict[str, Any]:
    """A decoded raw record, the origin of the outputs the agent adds."""
    return {
        "event_id": event_id,
        "product": "p",
        "source": "api",
        "dialect": "v1",
        "external_id": None,
        "received_at": 1_767_323_045_000,
        "payload": payload,
    }


def clean(event_id: str, size: int = 10) -> dict[str, Any]:
    """Not a CleanEvent: any record the codec encodes will do, sized by its reason."""
    return rejection(event_id, reason="x" * size)


def sent_rejections(publisher: ScriptedPublisher) -> dict[str, dict[str, Any]]:
    return {
        key.decode(): CODEC.decode(value)[1]
        for topic, key, value, _ in publisher.sent
        if topic == "rejected"
    }


def test_an_output_kafka_refuses_for_good_becomes_a_rejection_and_the_batch_moves_on() -> None:
    publisher = ScriptedPublisher(failures=1, max_bytes=5_000)  # one timeout, then as scripted
    box = Outbox(publisher, CODEC, "rejected")
    big, small = raw("big"), raw("small")
    assert box.add("clean", REJECTED_EVENT, b"big", clean("big", 20_000), big) is None
    assert box.add("clean", REJECTED_EVENT, b"small", clean("small"), small) is None
    asyncio.run(box.flush())
    assert publisher.refused == [("clean", b"big")], "refused once: never retried"
    assert ("clean", b"small") in publisher.acked, "the timed-out one was retried"
    notice = sent_rejections(publisher)["big"]
    assert notice["stage"] == "publish" and notice["payload"] == big["payload"]
    assert notice["reason"].startswith("clean refused the record (")
    assert "for good: not enqueued: MSG_SIZE_TOO_LARGE" in notice["reason"]
    assert (notice["product"], notice["dialect"]) == ("p", "v1")


def test_a_rejection_too_large_to_store_goes_out_without_its_payload() -> None:
    publisher = ScriptedPublisher(max_bytes=5_000)
    box = Outbox(publisher, CODEC, "rejected")
    origin = raw("big", payload=b"y" * 4_950)  # fits as raw, not with a long reason beside it
    box.add("clean", REJECTED_EVENT, b"big", clean("big", 20_000), origin)
    box.reject(rejection("other", payload=b"z" * 6_000))
    asyncio.run(box.flush())
    assert publisher.refused == [("clean", b"big"), ("rejected", b"other"), ("rejected", b"big")]
    got = sent_rejections(publisher)
    assert got["other"]["payload"] == b"" and got["other"]["field"] is None
    assert got["other"]["reason"].startswith("bad; rejected refused the record (")
    assert got["big"]["payload"] == b"" and got["big"]["stage"] == "publish"
    assert "clean refused the record" in got["big"]["reason"]
    assert "rejected refused the record" in got["big"]["reason"]


def test_a_rejection_refused_even_without_its_payload_does_not_stop_the_flush() -> None:
    publisher = ScriptedPublisher(refuse_topics=frozenset({"rejected"}))
    box = Outbox(publisher, CODEC, "rejected")
    box.add("clean", REJECTED_EVENT, b"ok", clean("ok"), raw("ok"))
    box.reject(rejection("e1"))
    asyncio.run(box.flush())  # returns: logged and counted, not retried forever
    assert publisher.refused == [("rejected", b"e1"), ("rejected", b"e1")]
    assert publisher.acked == [("clean", b"ok")]


def test_the_table_entries_of_a_refused_output_are_not_written() -> None:
    """A client's retry of that event must not be taken for a duplicate of a stored one."""
    publisher = ScriptedPublisher(max_bytes=5_000)
    table = FakeTable()
    box = Outbox(publisher, CODEC, "rejected")
    big, small = raw("big"), raw("small")
    box.add("clean", REJECTED_EVENT, b"big", clean("big", 20_000), big)
    box.put(table, b"k-big", 1, partition=0, origin=big)
    box.add("clean", REJECTED_EVENT, b"small", clean("small"), small)
    box.put(table, b"k-small", 2, partition=0, origin=small)
    box.put(table, b"k-none", 3)
    assert box.get(table, b"k-big") == 1, "the batch sees it until the flush"
    asyncio.run(box.flush())
    assert table == {b"k-small": 2, b"k-none": 3}
    changelog = [k for t, k, _, _ in publisher.sent if t == "app-dedupe-changelog"]
    assert changelog == [b"k-small", b"k-none"]
    assert box.get(table, b"k-big") is None


def test_a_changelog_entry_refused_for_good_is_kept_in_memory_and_counted() -> None:
    refused = outbox_module.REFUSED.labels("app-dedupe-changelog")
    before = refused._value.get()
    publisher = ScriptedPublisher(refuse_topics=frozenset({"app-dedupe-changelog"}))
    table = FakeTable()
    box = Outbox(publisher, CODEC, "rejected")
    box.add("clean", REJECTED_EVENT, b"e1", clean("e1"), raw("e1"))
    box.put(table, b"k1", 1, origin=raw("e1"))
    asyncio.run(box.flush())
    assert publisher.acked == [("clean", b"e1")]
    assert publisher.refused == [("app-dedupe-changelog", b"k1")], "not retried"
    assert table == {b"k1": 1}, "its output was stored: the worker keeps the entry"
    assert refused._value.get() == before + 1


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
